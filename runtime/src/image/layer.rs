//! Unpacking one layer tarball into a directory, safely: no entry may write outside the
//! directory, and OCI whiteouts become the overlayfs whiteouts our layer disks carry.
//!
//! Every path is walked one component at a time from a directory file descriptor with
//! `O_NOFOLLOW`, so a symlink planted by an earlier entry is never followed; every object is
//! created with the `*at` system calls relative to its parent's descriptor.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::fs::{AtFlags, Dev, FileType, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

/// GNU long names, long link names and PAX headers are read into memory: bound them.
pub const MAX_EXTENSION_SIZE: u64 = 1 << 20;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Why an entry of a layer tarball is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    AbsolutePath,
    ParentComponent,
    NoName,
    /// A component of the path is a symlink or not a directory.
    NotADirectory {
        component: String,
    },
    /// A hard link whose target is absolute, climbs with `..`, or is not in this layer.
    HardLinkOutside {
        target: String,
    },
    /// A device node that is not a 0:0 whiteout.
    Device {
        block: bool,
        major: u32,
        minor: u32,
    },
    ExtensionTooLarge {
        size: u64,
    },
    Truncated {
        expected: u64,
        written: u64,
    },
    PaxSizeMismatch,
    Sparse,
    UnsupportedType(u8),
    DirectoryNotEmpty,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AbsolutePath => write!(f, "absolute path"),
            Self::ParentComponent => write!(f, "path contains a '..' component"),
            Self::NoName => write!(f, "entry has no file name"),
            Self::NotADirectory { component } => {
                write!(
                    f,
                    "path component {component:?} is a symlink or not a directory"
                )
            }
            Self::HardLinkOutside { target } => {
                write!(f, "hard link target {target:?} is not a file of this layer")
            }
            Self::Device {
                block,
                major,
                minor,
            } => {
                let kind = if *block { "block" } else { "character" };
                write!(
                    f,
                    "{kind} device {major}:{minor} (only 0:0 whiteouts are allowed)"
                )
            }
            Self::ExtensionTooLarge { size } => write!(
                f,
                "extended header claims {size} bytes (limit {MAX_EXTENSION_SIZE})"
            ),
            Self::Truncated { expected, written } => {
                write!(
                    f,
                    "truncated: header says {expected} bytes, stream has {written}"
                )
            }
            Self::PaxSizeMismatch => write!(f, "PAX size differs from the header size"),
            Self::Sparse => write!(f, "sparse files are not supported"),
            Self::UnsupportedType(t) => write!(f, "unsupported entry type {:?}", char::from(*t)),
            Self::DirectoryNotEmpty => {
                write!(f, "replaces a non-empty directory of the same layer")
            }
        }
    }
}

/// A failure to unpack a layer, naming the entry (its path inside the tarball).
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {entry:?} rejected: {reason}")]
    Rejected { entry: String, reason: Rejection },
    #[error("layer entry {entry:?}: cannot {action}: {source}")]
    Io {
        entry: String,
        action: &'static str,
        source: io::Error,
    },
    #[error("layer tar stream unreadable after entry {after:?}: {source}")]
    Stream { after: String, source: io::Error },
    #[error("cannot open unpack directory {path}: {source}")]
    Target { path: String, source: io::Error },
}

type Result<T> = std::result::Result<T, LayerError>;

/// What an unpack did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
}

/// Unpacks the (uncompressed) tar stream `reader` into the existing directory `target`.
/// Owners and `trusted.*`-free xattrs are kept when running as root.
pub fn unpack(reader: impl Read, target: &Path) -> Result<UnpackStats> {
    let root = rustix::fs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|err| LayerError::Target {
        path: target.display().to_string(),
        source: err.into(),
    })?;
    let mut unpacker = Unpacker {
        root,
        as_root: rustix::process::geteuid().is_root(),
        stats: UnpackStats::default(),
    };
    walk(reader, |meta, data| {
        unpacker.apply(meta, data)?;
        unpacker.stats.entries += 1;
        Ok(())
    })?;
    Ok(unpacker.stats)
}

/// Calls `visit` with each entry of a tar stream and a reader of its data, after folding GNU
/// long names and PAX records into the entry (each bounded by [`MAX_EXTENSION_SIZE`]).
pub(crate) fn walk(
    reader: impl Read,
    mut visit: impl FnMut(&Meta, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|source| LayerError::Stream {
        after: String::new(),
        source,
    })?;
    let mut pending = Pending::default();
    let mut last = String::new();
    // Raw mode: the tar crate would buffer extension records of any size.
    for entry in entries.raw(true) {
        let mut entry = entry.map_err(|source| LayerError::Stream {
            after: last.clone(),
            source,
        })?;
        let kind = entry.header().entry_type();
        let slot = match kind {
            EntryType::GNULongName => Some(&mut pending.long_name),
            EntryType::GNULongLink => Some(&mut pending.long_link),
            EntryType::XHeader => Some(&mut pending.pax),
            _ => None,
        };
        if let Some(slot) = slot {
            *slot = Some(read_extension(&mut entry)?);
            continue;
        }
        if kind == EntryType::XGlobalHeader {
            read_extension(&mut entry)?;
            continue;
        }
        let meta = meta(&entry, std::mem::take(&mut pending))?;
        last = meta.name();
        visit(&meta, &mut entry)?;
    }
    if !pending.is_empty() {
        return Err(LayerError::Stream {
            after: last,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "extension header without the entry it describes",
            ),
        });
    }
    Ok(())
}

#[derive(Debug)]
struct Unpacker {
    root: OwnedFd,
    as_root: bool,
    stats: UnpackStats,
}

/// GNU and PAX extension records waiting for the entry they describe.
#[derive(Debug, Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_none()
    }
}

/// Everything about one entry except its data.
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) path: Vec<u8>,
    pub(crate) kind: EntryType,
    pub(crate) link: Option<Vec<u8>>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    pub(crate) size: u64,
    device: (u32, u32),
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    pub(crate) fn name(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

impl Unpacker {
    fn apply(&mut self, meta: &Meta, data: &mut dyn Read) -> Result<()> {
        let reject = |reason| LayerError::Rejected {
            entry: meta.name(),
            reason,
        };
        let components = components(&meta.path).map_err(reject)?;
        let Some((name, parents)) = components.split_last() else {
            return self.apply_root(meta);
        };
        let dir = self.open_dir(meta, parents, true)?;
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(meta, &dir, name, OsStr::from_bytes(hidden));
        }
        match meta.kind {
            EntryType::Directory => self.make_dir(meta, &dir, name),
            EntryType::Regular | EntryType::Continuous => self.make_file(meta, &dir, name, data),
            EntryType::Symlink => self.make_symlink(meta, &dir, name),
            EntryType::Link => self.make_hard_link(meta, &dir, name),
            EntryType::Char if meta.device == (0, 0) => self.make_whiteout(meta, &dir, name),
            EntryType::Char | EntryType::Block => Err(reject(Rejection::Device {
                block: meta.kind == EntryType::Block,
                major: meta.device.0,
                minor: meta.device.1,
            })),
            EntryType::Fifo => self.make_fifo(meta, &dir, name),
            EntryType::GNUSparse => Err(reject(Rejection::Sparse)),
            other => Err(reject(Rejection::UnsupportedType(other.as_byte()))),
        }
    }

    /// `./` itself: only a directory makes sense, and it sets the layer root's attributes.
    fn apply_root(&mut self, meta: &Meta) -> Result<()> {
        if meta.kind != EntryType::Directory {
            return Err(LayerError::Rejected {
                entry: meta.name(),
                reason: Rejection::NoName,
            });
        }
        let root = self
            .root
            .try_clone()
            .map_err(io_error(meta, "reopen root"))?;
        self.set_attributes(meta, &root)
    }

    /// Walks `parents` from the root without following symlinks, creating missing directories
    /// when `create` (tar streams need not list parents before children).
    fn open_dir(&self, meta: &Meta, parents: &[&OsStr], create: bool) -> Result<OwnedFd> {
        let mut dir = self
            .root
            .try_clone()
            .map_err(io_error(meta, "reopen root"))?;
        for (depth, component) in parents.iter().enumerate() {
            let not_a_dir = || LayerError::Rejected {
                entry: meta.name(),
                reason: Rejection::NotADirectory {
                    component: join(&parents[..=depth]),
                },
            };
            dir = match open_child_dir(&dir, component) {
                Ok(child) => child,
                Err(Errno::NOENT) if create => {
                    rustix::fs::mkdirat(&dir, *component, Mode::from_bits_truncate(0o755))
                        .map_err(|err| io_error(meta, "create parent directory")(err.into()))?;
                    let child = open_child_dir(&dir, component)
                        .map_err(|err| io_error(meta, "open parent directory")(err.into()))?;
                    // 0755 whatever the umask (rvm's is 077): the guest sees this directory.
                    rustix::fs::fchmod(&child, Mode::from_bits_truncate(0o755))
                        .map_err(|err| io_error(meta, "set parent directory mode")(err.into()))?;
                    child
                }
                Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => return Err(not_a_dir()),
                Err(err) => return Err(io_error(meta, "open parent directory")(err.into())),
            };
        }
        Ok(dir)
    }

    fn whiteout(&mut self, meta: &Meta, dir: &OwnedFd, name: &OsStr, hidden: &OsStr) -> Result<()> {
        if name == OPAQUE_MARKER {
            rustix::fs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|err| io_error(meta, "mark directory opaque")(err.into()))?;
            self.stats.opaque_dirs += 1;
            return Ok(());
        }
        if hidden.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other `.wh..wh.` names are aufs bookkeeping (e.g. `.wh..wh.plnk`): not content.
            tracing::debug!(entry = %meta.name(), "skipping aufs metadata");
            return Ok(());
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(LayerError::Rejected {
                entry: meta.name(),
                reason: Rejection::NoName,
            });
        }
        self.make_whiteout(meta, dir, hidden)
    }

    fn make_whiteout(&mut self, meta: &Meta, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        remove_existing(meta, dir, name)?;
        rustix::fs::mknodat(
            dir,
            name,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|err| io_error(meta, "create whiteout")(err.into()))?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn make_dir(&self, meta: &Meta, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        let existing = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW);
        let is_dir = existing
            .as_ref()
            .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Directory);
        if !is_dir {
            if existing.is_ok() {
                remove_existing(meta, dir, name)?;
            }
            rustix::fs::mkdirat(dir, name, Mode::from_bits_truncate(0o700))
                .map_err(|err| io_error(meta, "create directory")(err.into()))?;
        }
        let fd = open_child_dir(dir, name)
            .map_err(|err| io_error(meta, "open directory")(err.into()))?;
        self.set_attributes(meta, &fd)
    }

    fn make_file(
        &self,
        meta: &Meta,
        dir: &OwnedFd,
        name: &OsStr,
        data: &mut dyn Read,
    ) -> Result<()> {
        remove_existing(meta, dir, name)?;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|err| io_error(meta, "create file")(err.into()))?;
        let mut file = File::from(fd);
        // The tar reader streams at most `size` bytes: memory stays bounded whatever the header.
        let written =
            io::copy(&mut data.take(meta.size), &mut file).map_err(io_error(meta, "write file"))?;
        if written != meta.size {
            return Err(LayerError::Rejected {
                entry: meta.name(),
                reason: Rejection::Truncated {
                    expected: meta.size,
                    written,
                },
            });
        }
        self.set_attributes(meta, &file)
    }

    /// Gives the entry `name` in `dir` the layer's owner (without following a symlink), when
    /// unpacking as root; otherwise the entry keeps the unpacker's owner.
    fn set_owner(
        &self,
        meta: &Meta,
        dir: &OwnedFd,
        name: &OsStr,
        what: &'static str,
    ) -> Result<()> {
        if !self.as_root {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| io_error(meta, what)(err.into()))
    }

    fn make_symlink(&self, meta: &Meta, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        let target = meta.link.as_deref().unwrap_or_default();
        remove_existing(meta, dir, name)?;
        // The link itself may point anywhere: we never follow it, and in the guest it resolves
        // inside the container's root.
        rustix::fs::symlinkat(OsStr::from_bytes(target), dir, name)
            .map_err(|err| io_error(meta, "create symlink")(err.into()))?;
        self.set_owner(meta, dir, name, "set symlink owner")?;
        rustix::fs::utimensat(
            dir,
            name,
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| io_error(meta, "set symlink time")(err.into()))
    }

    fn make_hard_link(&self, meta: &Meta, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        let target = meta.link.as_deref().unwrap_or_default();
        let outside = || LayerError::Rejected {
            entry: meta.name(),
            reason: Rejection::HardLinkOutside {
                target: String::from_utf8_lossy(target).into_owned(),
            },
        };
        let components = components(target).map_err(|_| outside())?;
        let Some((target_name, target_parents)) = components.split_last() else {
            return Err(outside());
        };
        let target_dir = self
            .open_dir(meta, target_parents, false)
            .map_err(|_| outside())?;
        let stat = rustix::fs::statat(&target_dir, *target_name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|_| outside())?;
        if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
            return Err(outside());
        }
        let same = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| s.st_ino == stat.st_ino && s.st_dev == stat.st_dev);
        if same {
            return Ok(());
        }
        remove_existing(meta, dir, name)?;
        rustix::fs::linkat(&target_dir, *target_name, dir, name, AtFlags::empty())
            .map_err(|err| io_error(meta, "create hard link")(err.into()))
    }

    /// A FIFO, made with a private mode, then given its owner, mode and times through a
    /// descriptor opened without following symlinks (a FIFO opens at once read-only with
    /// O_NONBLOCK): nothing is ever changed through a path that a symlink could redirect.
    fn make_fifo(&self, meta: &Meta, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        remove_existing(meta, dir, name)?;
        rustix::fs::mknodat(
            dir,
            name,
            FileType::Fifo,
            Mode::from_bits_truncate(0o600),
            Dev::default(),
        )
        .map_err(|err| io_error(meta, "create fifo")(err.into()))?;
        let fifo = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|err| io_error(meta, "open fifo")(err.into()))?;
        let stat =
            rustix::fs::fstat(&fifo).map_err(|err| io_error(meta, "stat fifo")(err.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Fifo {
            return Err(io_error(meta, "open fifo")(io::Error::other(
                "not the fifo just made",
            )));
        }
        self.set_attributes(meta, &fifo)
    }

    /// Owner, mode, xattrs and mtime of a file or directory, through its descriptor. The owner
    /// goes first: `chown` clears set-id bits.
    fn set_attributes(&self, meta: &Meta, fd: &impl AsFd) -> Result<()> {
        if self.as_root {
            rustix::fs::fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|err| io_error(meta, "set owner")(err.into()))?;
        }
        rustix::fs::fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777))
            .map_err(|err| io_error(meta, "set mode")(err.into()))?;
        for (name, value) in &meta.xattrs {
            self.set_xattr(meta, fd, name, value)?;
        }
        if meta.kind != EntryType::Directory {
            rustix::fs::futimens(fd, &timestamps(meta.mtime))
                .map_err(|err| io_error(meta, "set time")(err.into()))?;
        }
        Ok(())
    }

    fn set_xattr(&self, meta: &Meta, fd: &impl AsFd, name: &OsStr, value: &[u8]) -> Result<()> {
        // `trusted.*` steers overlayfs (opaque, redirect, metacopy): only we may set it.
        if name.as_bytes().starts_with(b"trusted.") {
            tracing::warn!(entry = %meta.name(), xattr = ?name, "dropping trusted xattr from layer");
            return Ok(());
        }
        match rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::NOTSUP) => {
                tracing::warn!(entry = %meta.name(), xattr = ?name, "xattr not supported here");
                Ok(())
            }
            Err(Errno::PERM) if !self.as_root => Ok(()),
            Err(err) => Err(io_error(meta, "set xattr")(err.into())),
        }
    }
}

fn io_error(meta: &Meta, action: &'static str) -> impl FnOnce(io::Error) -> LayerError {
    let entry = meta.name();
    move |source| LayerError::Io {
        entry,
        action,
        source,
    }
}

fn open_child_dir(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Clears the way for a new entry: a later entry of the same path replaces an earlier one.
fn remove_existing(meta: &Meta, dir: &OwnedFd, name: &OsStr) -> Result<()> {
    let Ok(stat) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return Ok(());
    };
    let flags = if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    match rustix::fs::unlinkat(dir, name, flags) {
        Ok(()) => Ok(()),
        Err(Errno::NOTEMPTY | Errno::EXIST) => Err(LayerError::Rejected {
            entry: meta.name(),
            reason: Rejection::DirectoryNotEmpty,
        }),
        Err(err) => Err(io_error(meta, "replace existing entry")(err.into())),
    }
}

/// The components of a relative tar path, refusing absolute paths and `..`.
pub(crate) fn components(path: &[u8]) -> std::result::Result<Vec<&OsStr>, Rejection> {
    if path.starts_with(b"/") {
        return Err(Rejection::AbsolutePath);
    }
    let mut components = Vec::new();
    for component in path.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(Rejection::ParentComponent),
            _ => components.push(OsStr::from_bytes(component)),
        }
    }
    Ok(components)
}

fn join(components: &[&OsStr]) -> String {
    let parts: Vec<_> = components.iter().map(|c| c.to_string_lossy()).collect();
    parts.join("/")
}

fn timestamps(mtime: i64) -> Timestamps {
    let time = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

/// Reads a GNU long name or PAX header, refusing to buffer more than [`MAX_EXTENSION_SIZE`].
fn read_extension(entry: &mut tar::Entry<'_, impl Read>) -> Result<Vec<u8>> {
    let name = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
    let size = entry
        .header()
        .entry_size()
        .map_err(|source| LayerError::Stream {
            after: name.clone(),
            source,
        })?;
    if size > MAX_EXTENSION_SIZE {
        return Err(LayerError::Rejected {
            entry: name,
            reason: Rejection::ExtensionTooLarge { size },
        });
    }
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .take(size)
        .read_to_end(&mut data)
        .map_err(|source| LayerError::Stream {
            after: name.clone(),
            source,
        })?;
    if data.len() as u64 != size {
        return Err(LayerError::Rejected {
            entry: name,
            reason: Rejection::Truncated {
                expected: size,
                written: data.len() as u64,
            },
        });
    }
    Ok(data)
}

/// Combines the header with the pending GNU and PAX records (PAX wins, then GNU, then ustar).
fn meta(entry: &tar::Entry<'_, impl Read>, pending: Pending) -> Result<Meta> {
    let header = entry.header();
    let mut path = pending
        .long_name
        .map(trim_nul)
        .unwrap_or_else(|| header.path_bytes().into_owned());
    let mut link = pending
        .long_link
        .map(trim_nul)
        .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
    let stream_err = |source| LayerError::Stream {
        after: String::from_utf8_lossy(&header.path_bytes()).into_owned(),
        source,
    };
    let size = header.entry_size().map_err(stream_err)?;
    let mut meta = Meta {
        path: Vec::new(),
        kind: header.entry_type(),
        link: None,
        mode: header.mode().map_err(stream_err)?,
        uid: id(header.uid().map_err(stream_err)?),
        gid: id(header.gid().map_err(stream_err)?),
        mtime: i64::try_from(header.mtime().map_err(stream_err)?).unwrap_or(0),
        size,
        device: (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        ),
        xattrs: Vec::new(),
    };
    if let Some(pax) = &pending.pax {
        for record in tar::PaxExtensions::new(pax) {
            let record = record.map_err(stream_err)?;
            let (key, value) = (record.key_bytes(), record.value_bytes());
            match key {
                b"path" => path = value.to_vec(),
                b"linkpath" => link = Some(value.to_vec()),
                b"uid" => meta.uid = parse_number(value).map_or(meta.uid, id),
                b"gid" => meta.gid = parse_number(value).map_or(meta.gid, id),
                b"mtime" => meta.mtime = parse_number(value).map_or(meta.mtime, |t| t as i64),
                b"size" if parse_number(value) != Some(size) => {
                    return Err(LayerError::Rejected {
                        entry: String::from_utf8_lossy(&path).into_owned(),
                        reason: Rejection::PaxSizeMismatch,
                    })
                }
                _ => {
                    if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX.as_bytes()) {
                        meta.xattrs
                            .push((OsString::from_vec(name.to_vec()), value.to_vec()));
                    }
                }
            }
        }
    }
    meta.path = path;
    meta.link = link;
    Ok(meta)
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// The integer part of a PAX number (`mtime` may carry a fraction).
fn parse_number(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    text.split('.').next()?.parse().ok()
}

/// Owner IDs beyond 32 bits cannot exist on Linux: map them to nobody.
fn id(raw: u64) -> u32 {
    u32::try_from(raw).unwrap_or(65534)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(components(b"/etc/passwd"), Err(Rejection::AbsolutePath));
        assert_eq!(components(b"a/../../x"), Err(Rejection::ParentComponent));
        let ok = components(b"./a//b/./c/").unwrap();
        assert_eq!(ok, [OsStr::new("a"), OsStr::new("b"), OsStr::new("c")]);
        assert!(components(b"./").unwrap().is_empty());
    }

    #[test]
    fn pax_numbers_drop_fractions() {
        assert_eq!(parse_number(b"1700000000.123456"), Some(1_700_000_000));
        assert_eq!(parse_number(b"x"), None);
    }
}
