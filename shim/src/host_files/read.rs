//! Reading what the shim sends into a VM from the host, by descriptor. A bind's source is
//! resolved once: [`HostPath::open`] opens it `O_PATH` (no open side effects: a FIFO does not
//! block, a device is not opened), and its type, device, inode, mode and content all come from
//! that one descriptor, so a path swapped after the check (a symlink to `/etc/shadow` where
//! `/etc/hosts` was) cannot change what is read. The source's own path is resolved as mount(2)
//! resolves it for runc's bind (symlinks followed: a read-only hostPath of `/etc/localtime`
//! works); it is containerd's and kubelet's path, not the tenant's.
//!
//! Below a directory nothing is resolved by path: each entry is looked at with
//! `statat(dir, name, AT_SYMLINK_NOFOLLOW)` and opened with `openat(dir, name, O_NOFOLLOW)`
//! relative to its parent's descriptor. A symlink is sent as a symlink (its target read with
//! `readlinkat`, never followed on the host); a file or directory swapped for a symlink between
//! the two calls fails the `O_NOFOLLOW` open instead of being followed; anything but a regular
//! file, a directory or a symlink is refused by name before it is opened, and a regular file is
//! opened `O_NONBLOCK` and checked again by `fstat`, so one swapped for a FIFO cannot hang the
//! shim.
//!
//! Sizes are bounded while reading: a file is read through `Read::take` to one byte past its
//! limit (a file that grows after a `stat`, or lies about its size, still cannot make the shim
//! read more), a directory's names are counted as they are read, and a task's whole content
//! is taken from one [`Budget`].

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, StatFs};
use rvm_protocol::agent::{EntryKind, HostDirectoryEntry};
use rvm_protocol::limits::{MAX_DIRECTORY_ENTRIES, MAX_FILE_BYTES, MAX_HOST_CONTENT_BYTES};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("cannot read {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("{path} is a {kind}, not a {wanted}")]
    WrongKind {
        path: PathBuf,
        kind: &'static str,
        wanted: &'static str,
    },
    #[error("{path} holds more than the {limit} bytes a file sent by content may")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("{path} is neither a file, a directory nor a symlink (a {kind})")]
    Special { path: PathBuf, kind: &'static str },
    #[error(
        "{path}: the directory has more than {MAX_DIRECTORY_ENTRIES} entries to send by content"
    )]
    TooManyEntries { path: PathBuf },
    #[error("{path} is not a UTF-8 name")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: the task's host files and directories exceed the {MAX_HOST_CONTENT_BYTES} bytes sent by content")]
    OverBudget { path: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(rustix::io::Errno) -> ReadError + '_ {
    move |errno| ReadError::Io {
        path: path.to_owned(),
        cause: errno.into(),
    }
}

/// What is left of a task's content budget.
#[derive(Debug)]
pub struct Budget(usize);

impl Budget {
    /// A task's whole budget, [`MAX_HOST_CONTENT_BYTES`].
    pub fn of_task() -> Self {
        Self(MAX_HOST_CONTENT_BYTES)
    }

    pub fn take(&mut self, bytes: usize, path: &Path) -> Result<(), ReadError> {
        self.0 = self
            .0
            .checked_sub(bytes)
            .ok_or_else(|| ReadError::OverBudget {
                path: path.to_owned(),
            })?;
        Ok(())
    }
}

/// A host path opened once (`O_PATH`), and what `fstat` said of it.
#[derive(Debug)]
pub struct HostPath {
    path: PathBuf,
    fd: OwnedFd,
    stat: Stat,
}

impl HostPath {
    /// Opens `path`, following symlinks in it as a bind mount would.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        Self::open_with(path, OFlags::empty())
    }

    /// Opens `path` without following a symlink at its end (the path's own file or nothing).
    pub fn open_no_follow(path: &Path) -> Result<Self, ReadError> {
        Self::open_with(path, OFlags::NOFOLLOW)
    }

    fn open_with(path: &Path, extra: OFlags) -> Result<Self, ReadError> {
        let flags = OFlags::PATH | OFlags::CLOEXEC | extra;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(io_error(path))?;
        let stat = rustix::fs::fstat(&fd).map_err(io_error(path))?;
        Ok(Self {
            path: path.to_owned(),
            fd,
            stat,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.stat.st_mode)
    }

    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    pub fn dev(&self) -> u64 {
        self.stat.st_dev
    }

    pub fn ino(&self) -> u64 {
        self.stat.st_ino
    }

    /// The permission bits (with setuid, setgid and sticky).
    pub fn mode(&self) -> u32 {
        self.stat.st_mode & 0o7777
    }

    pub fn statfs(&self) -> Result<StatFs, ReadError> {
        rustix::fs::fstatfs(&self.fd).map_err(io_error(&self.path))
    }

    /// The regular file's content, at most `limit` bytes.
    pub fn read(&self, limit: usize) -> Result<Vec<u8>, ReadError> {
        self.expect(FileType::RegularFile)?;
        let file = self.reopen(OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
        read_bounded(file, limit, &self.path)
    }

    /// The regular file opened for writing: never created, never truncated by the open.
    pub fn open_for_writing(&self) -> Result<File, ReadError> {
        self.expect(FileType::RegularFile)?;
        self.reopen(OFlags::WRONLY | OFlags::NONBLOCK | OFlags::NOCTTY)
    }

    /// The directory's target of its symlink `name` (kubelet's `..data`), not followed.
    pub fn read_link_at(&self, name: &str) -> Result<PathBuf, ReadError> {
        let path = self.path.join(name);
        let target = rustix::fs::readlinkat(&self.fd, name, Vec::new()).map_err(io_error(&path))?;
        Ok(PathBuf::from(OsStr::from_bytes(target.to_bytes())))
    }

    /// The directory's tree as entries, parents first, in name order (see the module).
    pub fn tree(&self, budget: &mut Budget) -> Result<Vec<HostDirectoryEntry>, ReadError> {
        self.expect(FileType::Directory)?;
        let dir = rustix::fs::openat(&self.fd, c".", dir_flags(), Mode::empty())
            .map_err(io_error(&self.path))?;
        let mut entries = Vec::new();
        walk(dir.as_fd(), &self.path, "", &mut entries, budget)?;
        Ok(entries)
    }

    /// The path below this directory of the directory with device `dev` and inode `ino`,
    /// looked for without following symlinks over at most [`MAX_DIRECTORY_ENTRIES`] entries;
    /// `None` if not found (or this directory itself).
    pub fn find_directory(&self, dev: u64, ino: u64) -> Result<Option<String>, ReadError> {
        self.expect(FileType::Directory)?;
        let dir = rustix::fs::openat(&self.fd, c".", dir_flags(), Mode::empty())
            .map_err(io_error(&self.path))?;
        let mut seen = 0;
        find(dir.as_fd(), &self.path, "", (dev, ino), &mut seen)
    }

    fn expect(&self, wanted: FileType) -> Result<(), ReadError> {
        let kind = self.file_type();
        if kind == wanted {
            return Ok(());
        }
        if matches!(
            kind,
            FileType::RegularFile | FileType::Directory | FileType::Symlink
        ) {
            return Err(ReadError::WrongKind {
                path: self.path.clone(),
                kind: kind_name(kind),
                wanted: kind_name(wanted),
            });
        }
        Err(ReadError::Special {
            path: self.path.clone(),
            kind: kind_name(kind),
        })
    }

    /// A new open file description of the very file of the `O_PATH` descriptor, through its
    /// `/proc/self/fd` link (which names the file, not a path to look up again).
    fn reopen(&self, flags: OFlags) -> Result<File, ReadError> {
        let link = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let fd = rustix::fs::open(link.as_str(), flags | OFlags::CLOEXEC, Mode::empty())
            .map_err(io_error(&self.path))?;
        Ok(File::from(fd))
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Reads `reader` to its end, refusing it once it gives more than `limit` bytes.
pub fn read_bounded(reader: impl Read, limit: usize, path: &Path) -> Result<Vec<u8>, ReadError> {
    let mut content = Vec::new();
    let most = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(most)
        .read_to_end(&mut content)
        .map_err(|cause| ReadError::Io {
            path: path.to_owned(),
            cause,
        })?;
    if content.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(content)
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

/// The names in `dir` but `.` and `..`, sorted; refused once there are more than `room`.
fn names_of(dir: BorrowedFd<'_>, shown: &Path, room: usize) -> Result<Vec<CString>, ReadError> {
    let dup = rustix::fs::openat(dir, c".", dir_flags(), Mode::empty()).map_err(io_error(shown))?;
    let mut stream = Dir::new(dup).map_err(io_error(shown))?;
    let mut names = Vec::new();
    while let Some(entry) = stream.read() {
        let entry = entry.map_err(io_error(shown))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        if names.len() >= room {
            return Err(ReadError::TooManyEntries {
                path: shown.to_owned(),
            });
        }
        names.push(name.to_owned());
    }
    names.sort();
    Ok(names)
}

/// One entry of a tree, looked at and opened relative to its parent `dir`.
enum Found {
    File(Stat, Vec<u8>),
    Directory(Stat, OwnedFd),
    Symlink(Stat, Vec<u8>),
}

fn look_at(dir: BorrowedFd<'_>, name: &CStr, shown: &Path) -> Result<Found, ReadError> {
    let stat = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_error(shown))?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(io_error(shown))?;
            Ok(Found::Symlink(stat, target.into_bytes()))
        }
        FileType::Directory => {
            let fd = rustix::fs::openat(dir, name, dir_flags(), Mode::empty())
                .map_err(io_error(shown))?;
            let stat = rustix::fs::fstat(&fd).map_err(io_error(shown))?;
            Ok(Found::Directory(stat, fd))
        }
        FileType::RegularFile => {
            let (stat, file) = open_file_at(dir, name, shown)?;
            let content = read_bounded(file, MAX_FILE_BYTES, shown)?;
            Ok(Found::File(stat, content))
        }
        other => Err(ReadError::Special {
            path: shown.to_owned(),
            kind: kind_name(other),
        }),
    }
}

/// `name` below `relative`, as the agent takes it: a UTF-8 path with `/` between names.
fn relative_path(relative: &str, name: &CStr, shown: &Path) -> Result<String, ReadError> {
    let text = name.to_str().map_err(|_| ReadError::NotUtf8 {
        path: shown.to_owned(),
    })?;
    Ok(if relative.is_empty() {
        text.to_owned()
    } else {
        format!("{relative}/{text}")
    })
}

/// The regular file `name` of `dir`, which `statat` said was one: opened without following a
/// symlink swapped in since (`ELOOP`) and without blocking on a FIFO, then checked again.
fn open_file_at(dir: BorrowedFd<'_>, name: &CStr, shown: &Path) -> Result<(Stat, File), ReadError> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(io_error(shown))?;
    let stat = rustix::fs::fstat(&fd).map_err(io_error(shown))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(ReadError::Special {
            path: shown.to_owned(),
            kind: kind_name(kind),
        });
    }
    Ok((stat, File::from(fd)))
}

fn walk(
    dir: BorrowedFd<'_>,
    root: &Path,
    relative: &str,
    entries: &mut Vec<HostDirectoryEntry>,
    budget: &mut Budget,
) -> Result<(), ReadError> {
    let shown_dir = root.join(relative);
    let room = MAX_DIRECTORY_ENTRIES - entries.len();
    for name in names_of(dir, &shown_dir, room)? {
        let shown = shown_dir.join(OsStr::from_bytes(name.to_bytes()));
        if entries.len() >= MAX_DIRECTORY_ENTRIES {
            return Err(ReadError::TooManyEntries { path: shown_dir });
        }
        let path = relative_path(relative, &name, &shown)?;
        let found = look_at(dir, &name, &shown)?;
        let (kind, stat, content, child) = match found {
            Found::File(stat, content) => (EntryKind::ENTRY_FILE, stat, content, None),
            Found::Symlink(stat, target) => (EntryKind::ENTRY_SYMLINK, stat, target, None),
            Found::Directory(stat, fd) => (EntryKind::ENTRY_DIRECTORY, stat, Vec::new(), Some(fd)),
        };
        budget.take(content.len() + path.len(), &shown)?;
        entries.push(HostDirectoryEntry {
            path: path.clone(),
            kind: kind.into(),
            mode: stat.st_mode & 0o7777,
            content,
            ..Default::default()
        });
        if let Some(child) = child {
            walk(child.as_fd(), root, &path, entries, budget)?;
        }
    }
    Ok(())
}

fn find(
    dir: BorrowedFd<'_>,
    root: &Path,
    relative: &str,
    wanted: (u64, u64),
    seen: &mut usize,
) -> Result<Option<String>, ReadError> {
    let shown_dir = root.join(relative);
    let room = MAX_DIRECTORY_ENTRIES.saturating_sub(*seen);
    for name in names_of(dir, &shown_dir, room)? {
        *seen += 1;
        let shown = shown_dir.join(OsStr::from_bytes(name.to_bytes()));
        let stat =
            rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(io_error(&shown))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
            continue;
        }
        let path = relative_path(relative, &name, &shown)?;
        if (stat.st_dev, stat.st_ino) == wanted {
            return Ok(Some(path));
        }
        let child =
            rustix::fs::openat(dir, &name, dir_flags(), Mode::empty()).map_err(io_error(&shown))?;
        if let Some(found) = find(child.as_fd(), root, &path, wanted, seen)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    fn fifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    fn dir_fd(path: &Path) -> OwnedFd {
        rustix::fs::open(path, dir_flags(), Mode::empty()).unwrap()
    }

    #[test]
    fn reading_stops_one_byte_past_the_limit() {
        // An endless reader: only a bounded read returns at all.
        let err = read_bounded(io::repeat(b'x'), 10, Path::new("/endless")).unwrap_err();
        assert!(
            matches!(&err, ReadError::TooLarge { limit: 10, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/endless") && err.to_string().contains("10 bytes"));
        assert_eq!(
            read_bounded(&b"0123456789"[..], 10, Path::new("/x")).unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn a_source_swapped_after_it_was_opened_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "SECRET").unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("key"), "SECRET").unwrap();

        let hosts = dir.path().join("hosts");
        fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let opened = HostPath::open(&hosts).unwrap();
        fs::remove_file(&hosts).unwrap();
        symlink(&secret, &hosts).unwrap();
        assert_eq!(opened.read(100).unwrap(), b"127.0.0.1 localhost\n");

        let volume = dir.path().join("volume");
        fs::create_dir(&volume).unwrap();
        fs::write(volume.join("token"), "mine").unwrap();
        let opened = HostPath::open(&volume).unwrap();
        fs::rename(&volume, dir.path().join("moved")).unwrap();
        symlink(&outside, &volume).unwrap();
        let entries = opened.tree(&mut Budget::of_task()).unwrap();
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["token"]);
        assert_eq!(entries[0].content, b"mine");
    }

    #[test]
    fn an_entry_swapped_for_a_symlink_after_its_stat_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let shadow = dir.path().join("shadow");
        fs::write(&shadow, "root:SECRET").unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        // statat saw a regular file or a directory; by the open it is a symlink.
        symlink(&shadow, tree.join("file")).unwrap();
        symlink(dir.path(), tree.join("dir")).unwrap();
        let fd = dir_fd(&tree);
        let err = open_file_at(fd.as_fd(), c"file", &tree.join("file")).unwrap_err();
        assert!(
            matches!(&err, ReadError::Io { cause, .. } if cause.raw_os_error() == Some(eloop())),
            "{err}"
        );
        let opened = rustix::fs::openat(fd.as_fd(), c"dir", dir_flags(), Mode::empty());
        assert!(opened.is_err(), "a directory's symlink is not opened");
    }

    fn eloop() -> i32 {
        rustix::io::Errno::LOOP.raw_os_error()
    }

    #[test]
    fn a_fifo_swapped_in_after_the_stat_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        fifo(&dir.path().join("pipe"));
        let fd = dir_fd(dir.path());
        // No writer: a blocking open would wait forever.
        let err = open_file_at(fd.as_fd(), c"pipe", &dir.path().join("pipe")).unwrap_err();
        assert!(
            matches!(&err, ReadError::Special { kind: "FIFO", .. }),
            "{err}"
        );
    }

    #[test]
    fn a_fifo_source_is_refused_unopened() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("pipe");
        fifo(&pipe);
        let host = HostPath::open(&pipe).unwrap();
        assert!(!host.is_file() && !host.is_dir());
        let err = host.read(10).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(host.open_for_writing().is_err());
    }

    #[test]
    fn the_search_for_a_directory_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        symlink(&elsewhere, root.join("link")).unwrap();
        let stat = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            (
                std::os::unix::fs::MetadataExt::dev(&m),
                std::os::unix::fs::MetadataExt::ino(&m),
            )
        };
        let host = HostPath::open(&root).unwrap();
        let (dev, ino) = stat(&root.join("a/b"));
        assert_eq!(
            host.find_directory(dev, ino).unwrap().as_deref(),
            Some("a/b")
        );
        let (dev, ino) = stat(&elsewhere);
        assert_eq!(host.find_directory(dev, ino).unwrap(), None);
    }
}
