//! The task's root filesystem as erofs layer disks, from the snapshotter's mounts, and the
//! cache of those disks that prunes itself.
//!
//! containerd's overlayfs snapshotter hands an overlay mount whose `lowerdir`s are the image's
//! committed (immutable) layer snapshots, topmost first. Each lower directory becomes one
//! read-only erofs disk (`mkfs.erofs`), cached by the directory's path and inode, so every task
//! of the same image shares the disks. The overlay's `upperdir` is the active snapshot, empty for a
//! new container: the guest's own overlay puts the container's writes on the VM's scratch disk
//! instead, as `rvm run` does. A bind mount (an image without parent layers, or a native
//! snapshotter) becomes one disk built for this task only.
//!
//! # The cache and its pruning
//!
//! The cache holds `<key>.erofs` (the disk) and `<key>.source` (its record: the snapshot
//! directory's path, device and inode; see [`Record`]), both written under a temporary name
//! `.<key>.tmp-<pid>` / `.<key>.source.tmp-<pid>` and renamed, so each is complete or absent.
//! The record is written after the disk (and added for a cached disk that lacks one, as disks
//! built before records existed do), so a disk without a record is only ever a moment old or
//! from an older shim. [`prune`] removes a disk and its record when the recorded directory no
//! longer exists, or exists with another device or inode (the snapshot was removed, perhaps
//! re-created: a new directory has a new key). It leaves alone: disks without a record (nothing
//! says where they came from: remove them by hand), records that do not hash to their own key,
//! directories it cannot stat for any reason but "not found", and temporary files unless their
//! process is gone and they are older than [`STALE_TEMP`].
//!
//! Why removing is safe:
//! - The disk's source is gone, so no shim can be about to use it: a shim uses key K only after
//!   stat-ing the directory K names, and containerd never removes a committed snapshot that is a
//!   parent of a container's snapshot, which the task being created has. A shim that built or
//!   found the disk before the snapshot went has a VMM holding it open, and a removed file stays
//!   readable through an open descriptor.
//! - A concurrent shim building the same key works on its own temporary file (its pid in the
//!   name, kept while that pid lives) and renames it into place: the rename replaces whatever is
//!   there atomically, so pruning never sees or leaves a partial disk. Two shims pruning at once
//!   remove the same files; "not found" counts as done.
//! - The disk is removed before its record: a prune cut short leaves a record without a disk,
//!   which the next prune removes, never a disk nobody knows the source of.
//! - The one case this cannot tell apart is one the key cannot either: a snapshot removed and a
//!   new directory made at the same path with the same inode number. The overlayfs snapshotter
//!   names snapshot directories by a counter that does not go back, so it does not reuse paths.
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use thiserror::Error;

/// The tool that builds the disks (Debian's erofs-utils).
const MKFS_EROFS: &str = "mkfs.erofs";

#[derive(Debug, Error)]
pub enum LayerError {
    #[error("rootfs mount of type {0:?} is not supported (expected overlay or bind)")]
    UnsupportedMount(String),
    #[error("rootfs has {0} mounts; expected one overlay or bind mount")]
    MountCount(usize),
    #[error("overlay rootfs mount has no lowerdir option: {0:?}")]
    NoLowerdir(Vec<String>),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot run {MKFS_EROFS} for {} (install erofs-utils): {source}", dir.display())]
    MkfsMissing { dir: PathBuf, source: io::Error },
    #[error("{MKFS_EROFS} failed on {} ({status}): {stderr}", dir.display())]
    Mkfs {
        dir: PathBuf,
        status: String,
        stderr: String,
    },
}

/// One rootfs mount as containerd describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Where the layer directories come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Immutable snapshot directories, lowest first: cached disks.
    Layers(Vec<PathBuf>),
    /// One directory owned by this task: a disk of its own.
    Private(PathBuf),
}

/// The layer directories of `mounts`; `bundle_rootfs` when containerd passed no mounts (the
/// rootfs was then prepared in the bundle).
pub fn source_of(mounts: &[RootfsMount], bundle_rootfs: &Path) -> Result<Source, LayerError> {
    let mount = match mounts {
        [] => return Ok(Source::Private(bundle_rootfs.to_owned())),
        [one] => one,
        more => return Err(LayerError::MountCount(more.len())),
    };
    match mount.kind.as_str() {
        "overlay" => {
            let lower = mount
                .options
                .iter()
                .find_map(|option| option.strip_prefix("lowerdir="))
                .ok_or_else(|| LayerError::NoLowerdir(mount.options.clone()))?;
            // Topmost first in the option; the agent wants the lowest first.
            let mut dirs: Vec<PathBuf> = lower
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect();
            dirs.reverse();
            Ok(Source::Layers(dirs))
        }
        "bind" | "rbind" => Ok(Source::Private(PathBuf::from(&mount.source))),
        other => Err(LayerError::UnsupportedMount(other.to_owned())),
    }
}

/// A built layer disk and the name the agent logs it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub key: String,
}

/// The cache key of a snapshot directory: its path, device and inode (a snapshot removed and
/// re-created under the same path gets a new inode).
fn key_of(dir: &Path, dev: u64, ino: u64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(dir.as_os_str().as_encoded_bytes());
    hasher.update(dev.to_le_bytes());
    hasher.update(ino.to_le_bytes());
    let digest = hasher.finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` can be a cache key (32 lowercase hex digits).
fn is_key(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What a cached disk was made from: the snapshot directory, with the device and inode it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub dir: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// A `<key>.source` file that is not a record.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("line {line} is not `{field} <number>`")]
    Field { line: usize, field: &'static str },
    #[error("the last line is not `dir <path>`")]
    Dir,
}

impl Record {
    /// The record of directory `dir` as it is now.
    fn of(dir: &Path) -> Result<Self, LayerError> {
        let meta = fs::metadata(dir).map_err(|source| LayerError::Io {
            action: "stat layer directory",
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn key(&self) -> String {
        key_of(&self.dir, self.dev, self.ino)
    }

    /// The file's contents: `dev N`, `ino N` and `dir PATH` lines (the path is everything after
    /// `dir ` up to the final newline, so any path fits).
    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = format!("dev {}\nino {}\ndir ", self.dev, self.ino).into_bytes();
        bytes.extend_from_slice(self.dir.as_os_str().as_bytes());
        bytes.push(b'\n');
        bytes
    }

    fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        fn number<'a>(
            rest: &'a [u8],
            line: usize,
            field: &'static str,
        ) -> Result<(u64, &'a [u8]), RecordError> {
            let bad = RecordError::Field { line, field };
            let end = rest.iter().position(|&b| b == b'\n').ok_or(bad.clone())?;
            let value = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|text| text.strip_prefix(field)?.strip_prefix(' ')?.parse().ok())
                .ok_or(bad)?;
            Ok((value, &rest[end + 1..]))
        }
        let (dev, rest) = number(bytes, 1, "dev")?;
        let (ino, rest) = number(rest, 2, "ino")?;
        let dir = rest
            .strip_prefix(b"dir ")
            .and_then(|path| path.strip_suffix(b"\n"))
            .filter(|path| !path.is_empty())
            .ok_or(RecordError::Dir)?;
        Ok(Self {
            dir: PathBuf::from(OsStr::from_bytes(dir)),
            dev,
            ino,
        })
    }
}

/// The disks of `source`: cached ones in `cache_dir`, a private one at `private_path`.
pub fn ensure_disks(
    source: &Source,
    cache_dir: &Path,
    private_path: &Path,
) -> Result<Vec<Disk>, LayerError> {
    match source {
        Source::Layers(dirs) => dirs.iter().map(|dir| cached_disk(dir, cache_dir)).collect(),
        Source::Private(dir) => {
            let _ = fs::remove_file(private_path);
            mkfs_erofs(dir, private_path)?;
            Ok(vec![Disk {
                path: private_path.to_owned(),
                key: "rootfs".to_owned(),
            }])
        }
    }
}

fn cached_disk(dir: &Path, cache_dir: &Path) -> Result<Disk, LayerError> {
    let record = Record::of(dir)?;
    let key = record.key();
    let path = cache_dir.join(format!("{key}.erofs"));
    let record_path = cache_dir.join(format!("{key}.source"));
    if path.is_file() {
        // A disk from before records existed gets one now, so that pruning can judge it.
        if !record_path.exists() {
            record_or_warn(&record, cache_dir, &key);
        }
        return Ok(Disk { path, key });
    }
    fs::create_dir_all(cache_dir).map_err(|source| LayerError::Io {
        action: "create layer cache",
        path: cache_dir.to_owned(),
        source,
    })?;
    // Built under a temporary name and renamed: a cached disk is complete or absent, also with
    // several shims building the same layer at once.
    let temp = cache_dir.join(format!(".{key}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    mkfs_erofs(dir, &temp)?;
    fs::rename(&temp, &path).map_err(|source| LayerError::Io {
        action: "rename layer disk to",
        path: path.clone(),
        source,
    })?;
    record_or_warn(&record, cache_dir, &key);
    tracing::info!(dir = %dir.display(), disk = %path.display(), "layer disk built");
    Ok(Disk { path, key })
}

/// Writes the disk's record; without one the disk works but is never pruned, which is no reason to
/// fail the task.
fn record_or_warn(record: &Record, cache_dir: &Path, key: &str) {
    if let Err(e) = write_record(record, cache_dir, key) {
        tracing::warn!(key, error = %e, "layer disk has no record and will not be pruned");
    }
}

/// Writes `<key>.source` as the disk is written: a temporary file renamed into place.
fn write_record(record: &Record, cache_dir: &Path, key: &str) -> Result<(), LayerError> {
    let temp = cache_dir.join(format!(".{key}.source.tmp-{}", std::process::id()));
    let path = cache_dir.join(format!("{key}.source"));
    fs::write(&temp, record.to_bytes()).map_err(|source| LayerError::Io {
        action: "write layer record",
        path: temp.clone(),
        source,
    })?;
    fs::rename(&temp, &path).map_err(|source| {
        let _ = fs::remove_file(&temp);
        LayerError::Io {
            action: "rename layer record to",
            path,
            source,
        }
    })
}

/// A temporary file of a process that no longer exists is removed once it is this old. Both
/// conditions: a pid of another pid namespace looks gone, and a pid may be reused.
pub const STALE_TEMP: Duration = Duration::from_secs(10 * 60);

/// What one [`prune`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Keys whose disk (or lone record) was removed.
    pub removed: Vec<String>,
    /// Bytes of the removed disks.
    pub freed_bytes: u64,
    /// Disks kept: their directory is still there, or they have no record.
    pub kept: usize,
    /// Stale temporary files removed.
    pub temps: usize,
}

/// Removes the disks in `cache_dir` whose snapshot directory is gone (see the module doc). An
/// entry it cannot judge is kept and logged; only an unreadable cache directory is an error (a
/// missing one is an empty cache).
pub fn prune(cache_dir: &Path) -> Result<Pruned, LayerError> {
    let entries = match fs::read_dir(cache_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Pruned::default()),
        Err(source) => {
            return Err(LayerError::Io {
                action: "read layer cache",
                path: cache_dir.to_owned(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LayerError::Io {
            action: "read layer cache",
            path: cache_dir.to_owned(),
            source,
        })?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    let mut pruned = Pruned::default();
    // Records first, so that a disk removed with its record is not then counted as kept.
    for key in names.iter().filter_map(|n| n.strip_suffix(".source")) {
        if is_key(key) {
            prune_entry(cache_dir, key, &mut pruned);
        }
    }
    for name in &names {
        if let Some(key) = name.strip_suffix(".erofs").filter(|k| is_key(k)) {
            let disk = cache_dir.join(name);
            if disk.exists() && !cache_dir.join(format!("{key}.source")).exists() {
                tracing::debug!(key, "layer disk without a record kept");
                pruned.kept += 1;
            }
        } else if let Some(pid) = temp_pid(name) {
            if prune_temp(&cache_dir.join(name), pid) {
                pruned.temps += 1;
            }
        }
    }
    Ok(pruned)
}

/// Judges the disk of `key` by its record, and removes both when the source is gone.
fn prune_entry(cache_dir: &Path, key: &str, pruned: &mut Pruned) {
    let record_path = cache_dir.join(format!("{key}.source"));
    let disk = cache_dir.join(format!("{key}.erofs"));
    let record = match fs::read(&record_path) {
        Ok(bytes) => Record::parse(&bytes),
        // Removed by a concurrent prune.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(key, record = %record_path.display(), error = %e, "layer record unreadable; disk kept");
            pruned.kept += 1;
            return;
        }
    };
    let record = match record {
        Ok(record) if record.key() == key => record,
        Ok(record) => {
            tracing::warn!(key, dir = %record.dir.display(), "layer record is not of its key; disk kept");
            pruned.kept += 1;
            return;
        }
        Err(e) => {
            tracing::warn!(key, record = %record_path.display(), error = %e, "layer record unparsable; disk kept");
            pruned.kept += 1;
            return;
        }
    };
    let reason = match fs::metadata(&record.dir) {
        Ok(meta) if meta.dev() == record.dev && meta.ino() == record.ino => {
            pruned.kept += 1;
            return;
        }
        Ok(_) => "replaced by another directory",
        Err(e) if e.kind() == io::ErrorKind::NotFound => "removed",
        Err(e) => {
            tracing::warn!(key, dir = %record.dir.display(), error = %e, "cannot stat layer source; disk kept");
            pruned.kept += 1;
            return;
        }
    };
    let size = fs::metadata(&disk).map_or(0, |m| m.len());
    // The disk first: a prune cut short leaves a record, which the next prune removes.
    for path in [&disk, &record_path] {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(key, path = %path.display(), error = %e, "cannot remove stale layer file");
                return;
            }
        }
    }
    tracing::info!(key, source = %record.dir.display(), dev = record.dev, ino = record.ino, reason, bytes = size, "layer disk pruned");
    pruned.removed.push(key.to_owned());
    pruned.freed_bytes += size;
}

/// The pid in a temporary file's name, `.<key>.tmp-<pid>` or `.<key>.source.tmp-<pid>`.
fn temp_pid(name: &str) -> Option<i32> {
    let (stem, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let key = stem.strip_suffix(".source").unwrap_or(stem);
    is_key(key).then_some(())?;
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Removes temporary file `path` of process `pid` when that process is gone and the file has not
/// been written for [`STALE_TEMP`]; true when removed.
fn prune_temp(path: &Path, pid: i32) -> bool {
    let alive = rustix::process::Pid::from_raw(pid).is_none_or(|pid| {
        !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
    });
    if alive {
        return false;
    }
    let old = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age >= STALE_TEMP);
    if !old {
        return false;
    }
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(temp = %path.display(), pid, "stale layer temporary file removed");
            true
        }
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(temp = %path.display(), error = %e, "cannot remove stale layer temporary file");
            }
            false
        }
    }
}

fn mkfs_erofs(dir: &Path, image: &Path) -> Result<(), LayerError> {
    let output = Command::new(MKFS_EROFS)
        .arg("--quiet")
        .arg(image)
        .arg(dir)
        .output()
        .map_err(|source| LayerError::MkfsMissing {
            dir: dir.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let _ = fs::remove_file(image);
    Err(LayerError::Mkfs {
        dir: dir.to_owned(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(options: &[&str]) -> RootfsMount {
        RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn overlay_lowerdirs_become_layers_lowest_first() {
        let mount = overlay(&[
            "index=off",
            "workdir=/s/3/work",
            "upperdir=/s/3/fs",
            "lowerdir=/s/2/fs:/s/1/fs",
        ]);
        assert_eq!(
            source_of(&[mount], Path::new("/b/rootfs")).unwrap(),
            Source::Layers(vec!["/s/1/fs".into(), "/s/2/fs".into()])
        );
    }

    #[test]
    fn bind_and_no_mount_are_private() {
        let bind = RootfsMount {
            kind: "bind".into(),
            source: "/s/1/fs".into(),
            options: vec!["rbind".into(), "rw".into()],
        };
        assert_eq!(
            source_of(&[bind], Path::new("/b/rootfs")).unwrap(),
            Source::Private("/s/1/fs".into())
        );
        assert_eq!(
            source_of(&[], Path::new("/b/rootfs")).unwrap(),
            Source::Private("/b/rootfs".into())
        );
    }

    #[test]
    fn bad_mounts_are_named() {
        let error = source_of(&[overlay(&["upperdir=/u"])], Path::new("/r")).unwrap_err();
        assert!(error.to_string().contains("upperdir=/u"), "{error}");
        let tmpfs = RootfsMount {
            kind: "tmpfs".into(),
            source: "t".into(),
            options: vec![],
        };
        assert!(source_of(&[tmpfs], Path::new("/r"))
            .unwrap_err()
            .to_string()
            .contains("tmpfs"));
    }

    fn have_mkfs() -> bool {
        let have = Command::new(MKFS_EROFS).arg("--help").output().is_ok();
        if !have {
            println!("SKIPPED: {MKFS_EROFS} is not installed");
        }
        have
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn layer_disks_are_cached_per_directory() {
        if !have_mkfs() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        fs::create_dir(&layer).unwrap();
        fs::write(layer.join("hello"), b"hi").unwrap();
        let cache = tmp.path().join("cache");
        let source = Source::Layers(vec![layer.clone()]);
        let first = ensure_disks(&source, &cache, &tmp.path().join("p")).unwrap();
        let mtime = fs::metadata(&first[0].path).unwrap().mtime_nsec();
        let again = ensure_disks(&source, &cache, &tmp.path().join("p")).unwrap();
        assert_eq!(first, again);
        assert_eq!(fs::metadata(&again[0].path).unwrap().mtime_nsec(), mtime);
        // erofs superblock magic 0xE0F5E1E2 at offset 1024.
        let bytes = fs::read(&first[0].path).unwrap();
        assert_eq!(&bytes[1024..1028], &[0xe2, 0xe1, 0xf5, 0xe0]);
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_named() {
        let record = Record {
            dir: PathBuf::from("/var/lib/containerd/snapshots/12/fs with space"),
            dev: 2049,
            ino: 1_234_567,
        };
        let bytes = record.to_bytes();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "dev 2049\nino 1234567\ndir /var/lib/containerd/snapshots/12/fs with space\n"
        );
        assert_eq!(Record::parse(&bytes).unwrap(), record);
        // Any byte but the last newline belongs to the path.
        let odd = Record {
            dir: PathBuf::from(OsStr::from_bytes(b"/s/a\nb\xff")),
            ..record.clone()
        };
        assert_eq!(Record::parse(&odd.to_bytes()).unwrap(), odd);
        assert_eq!(
            Record::parse(b"ino 1\ndev 2\ndir /x\n"),
            Err(RecordError::Field {
                line: 1,
                field: "dev"
            })
        );
        assert_eq!(
            Record::parse(b"dev 1\nino x\ndir /x\n"),
            Err(RecordError::Field {
                line: 2,
                field: "ino"
            })
        );
        assert_eq!(
            Record::parse(b"dev 1\nino 2\ndir /x"),
            Err(RecordError::Dir)
        );
        assert_eq!(Record::parse(b"dev 1\nino 2\n"), Err(RecordError::Dir));
    }

    #[test]
    fn prune_removes_the_disks_of_removed_and_replaced_directories() {
        if !have_mkfs() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let private = tmp.path().join("p");
        let layer = tmp.path().join("layer");
        let other = tmp.path().join("other");
        for dir in [&layer, &other] {
            fs::create_dir(dir).unwrap();
            fs::write(dir.join("f"), dir.as_os_str().as_bytes()).unwrap();
        }
        let source = Source::Layers(vec![layer.clone(), other.clone()]);
        let disks = ensure_disks(&source, &cache, &private).unwrap();
        let (first, kept) = (disks[0].key.clone(), disks[1].key.clone());
        let record = Record::parse(&fs::read(cache.join(format!("{first}.source"))).unwrap());
        assert_eq!(record.unwrap(), Record::of(&layer).unwrap());
        let mut expected = [
            format!("{first}.erofs"),
            format!("{first}.source"),
            format!("{kept}.erofs"),
            format!("{kept}.source"),
        ];
        expected.sort();
        assert_eq!(names(&cache), expected);

        // Both directories are there: nothing goes.
        let pruned = prune(&cache).unwrap();
        assert_eq!((pruned.removed.len(), pruned.kept), (0, 2));
        assert_eq!(names(&cache).len(), 4);

        // A new directory at the same path (made before the old one goes, so its inode differs).
        let new = tmp.path().join("layer.new");
        fs::create_dir(&new).unwrap();
        fs::write(new.join("g"), b"new").unwrap();
        fs::remove_dir_all(&layer).unwrap();
        fs::rename(&new, &layer).unwrap();
        let disks = ensure_disks(&source, &cache, &private).unwrap();
        let second = disks[0].key.clone();
        assert_ne!(second, first);
        assert_eq!(disks[1].key, kept);
        let pruned = prune(&cache).unwrap();
        assert_eq!(pruned.removed, std::slice::from_ref(&first));
        assert!(pruned.freed_bytes > 0, "{pruned:?}");
        assert_eq!(pruned.kept, 2);
        assert!(!cache.join(format!("{first}.erofs")).exists());
        assert!(!cache.join(format!("{first}.source")).exists());
        assert!(cache.join(format!("{second}.erofs")).is_file());

        // The directory removed: its disk and record go, the other layer's stay.
        fs::remove_dir_all(&layer).unwrap();
        let pruned = prune(&cache).unwrap();
        assert_eq!((pruned.removed, pruned.kept), (vec![second], 1));
        assert_eq!(
            names(&cache),
            [format!("{kept}.erofs"), format!("{kept}.source")]
        );
        // Nothing more to do, and a cache that does not exist is empty.
        assert_eq!(prune(&cache).unwrap().removed.len(), 0);
        assert_eq!(prune(&tmp.path().join("none")).unwrap(), Pruned::default());
    }

    #[test]
    fn a_cached_disk_without_a_record_gets_one_when_used() {
        if !have_mkfs() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let layer = tmp.path().join("layer");
        fs::create_dir(&layer).unwrap();
        let source = Source::Layers(vec![layer.clone()]);
        let key = ensure_disks(&source, &cache, &tmp.path().join("p")).unwrap()[0]
            .key
            .clone();
        let record = cache.join(format!("{key}.source"));
        fs::remove_file(&record).unwrap();
        // Without a record, a disk is kept even though its directory is gone...
        let moved = tmp.path().join("moved");
        fs::rename(&layer, &moved).unwrap();
        assert_eq!(prune(&cache).unwrap().kept, 1);
        assert!(cache.join(format!("{key}.erofs")).is_file());
        // ...and a use writes the missing record, after which pruning can judge it.
        fs::rename(&moved, &layer).unwrap();
        ensure_disks(&source, &cache, &tmp.path().join("p")).unwrap();
        assert_eq!(
            Record::parse(&fs::read(&record).unwrap()).unwrap(),
            Record::of(&layer).unwrap()
        );
        fs::remove_dir(&layer).unwrap();
        assert_eq!(prune(&cache).unwrap().removed, [key]);
    }

    #[test]
    fn entries_prune_cannot_judge_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path();
        let gone = cache.join("gone");
        let record = Record {
            dir: gone.clone(),
            dev: 1,
            ino: 2,
        };
        // A disk without a record; files that are not the cache's.
        let lone = "0123456789abcdef0123456789abcdef";
        fs::write(cache.join(format!("{lone}.erofs")), b"disk").unwrap();
        fs::write(cache.join("notes.txt"), b"mine").unwrap();
        fs::write(cache.join("short.erofs"), b"x").unwrap();
        // A record under another key than its own, and one that does not parse.
        let wrong = "fedcba9876543210fedcba9876543210";
        assert_ne!(record.key(), wrong);
        fs::write(cache.join(format!("{wrong}.erofs")), b"disk").unwrap();
        fs::write(cache.join(format!("{wrong}.source")), record.to_bytes()).unwrap();
        let garbled = "00000000000000000000000000000000";
        fs::write(cache.join(format!("{garbled}.erofs")), b"disk").unwrap();
        fs::write(cache.join(format!("{garbled}.source")), b"dev one\n").unwrap();
        // A directory that cannot be stat-ed for another reason than "not found".
        let file = cache.join("file");
        fs::write(&file, b"").unwrap();
        let under_file = Record {
            dir: file.join("fs"),
            dev: 1,
            ino: 2,
        };
        let key = under_file.key();
        fs::write(cache.join(format!("{key}.erofs")), b"disk").unwrap();
        fs::write(cache.join(format!("{key}.source")), under_file.to_bytes()).unwrap();
        let before = names(cache);

        let pruned = prune(cache).unwrap();
        assert_eq!(pruned.removed.len(), 0, "{pruned:?}");
        assert_eq!(pruned.kept, 4);
        assert_eq!(names(cache), before);

        // A lone record whose directory is gone goes (a prune cut short between its two
        // removals leaves one).
        let key = record.key();
        fs::write(cache.join(format!("{key}.source")), record.to_bytes()).unwrap();
        assert_eq!(prune(cache).unwrap().removed, [key]);
        assert_eq!(names(cache), before);
    }

    #[test]
    fn temporary_files_go_only_when_their_process_is_gone_and_they_are_old() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path();
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let key = "0123456789abcdef0123456789abcdef";
        let old = SystemTime::now() - STALE_TEMP - Duration::from_secs(60);
        let temp = |name: String, modified: Option<SystemTime>| {
            let path = cache.join(name);
            let file = fs::File::create(&path).unwrap();
            if let Some(modified) = modified {
                file.set_modified(modified).unwrap();
            }
            path
        };
        let stale_disk = temp(format!(".{key}.tmp-{dead}"), Some(old));
        let stale_record = temp(format!(".{key}.source.tmp-{dead}"), Some(old));
        let fresh = temp(format!(".{key}.tmp-{dead}0"), None);
        let live = temp(format!(".{key}.tmp-{}", std::process::id()), Some(old));
        let foreign = temp(format!(".other.tmp-{dead}"), Some(old));

        let pruned = prune(cache).unwrap();
        assert_eq!(pruned.temps, 2, "{pruned:?}");
        assert!(!stale_disk.exists() && !stale_record.exists());
        assert!(fresh.exists() && live.exists() && foreign.exists());
    }
}
