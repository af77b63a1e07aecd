//! The layer-disk cache: read-only erofs disks, one per source, shared by every VM that uses the
//! source. Two caches use it: the CLI's image layers (`<root>/layers`, keyed by diff_id, see
//! [`ImageLayer`]) and the shim's containerd snapshot directories (`<root>/containerd/layers`,
//! keyed by path, device and inode, see [`SnapshotDir`]). It owns the cache directory, the file
//! names, building a disk atomically with the one `mkfs.erofs` call ([`mkfs`]), the records of
//! each disk's source, and the one pruning policy.
//!
//! # Files
//!
//! For a source with key `K` the cache directory holds `K.erofs` (the disk) and `K.source` (its
//! record: what the disk was made from, in the kind's format). Each is written under a temporary
//! name, `.K.tmp-<pid>-<n>` or `.K.source.tmp-<pid>-<n>` (`n` tells a process's threads apart;
//! older shims wrote `.K.tmp-<pid>`, which is recognised too), fsynced and renamed into place, so
//! under its final name a file is complete or absent. Any other name is not the cache's and is
//! left alone.
//!
//! The record is written before the disk, so a disk without a record is left only by a version
//! that wrote none (shims before records existed, every CLI before this cache) or by hand.
//! [`LayerCache::lookup`] adds the missing record when such a disk is used again.
//!
//! # Pruning
//!
//! [`LayerCache::prune`] walks the directory once. For each key it reads the record (with none,
//! it asks the kind whether the key alone names the source: [`Source::from_key`]) and asks the
//! caller whether that source is still there ([`Liveness`]). Only a source judged gone loses its
//! disk and record, the disk first. It keeps, and logs: a disk whose record is missing while its
//! key names nothing (nothing says where it came from: remove it by hand), a record that does not
//! parse or does not hash to its own key, a record it cannot read, and a source the caller cannot
//! judge. Temporary files go when their process is gone and they are older than [`STALE_TEMP`].
//!
//! ## Why removing is safe, for any kind
//! - A concurrent builder of the same key works on its own temporary file (its pid and a counter
//!   in the name, kept while that pid lives) and renames it into place: the rename replaces
//!   whatever is there atomically, so pruning never sees or leaves a partial disk. Two prunes at
//!   once remove the same files; "not found" counts as done.
//! - The disk is removed before its record: a prune cut short leaves a record without a disk,
//!   which the next prune removes, never a disk nobody knows the source of.
//! - A VMM that opened a disk before it was removed keeps reading it: a removed file stays
//!   readable through an open descriptor.
//! - A temporary file goes only when its process is gone *and* it is old: a pid of another pid
//!   namespace looks gone, and a pid may be reused.
//!
//! ## Snapshot directories (the shim)
//! Gone means the recorded directory no longer exists, or exists with another device or inode
//! (the snapshot was removed, perhaps re-created: a new directory has a new key). No shim can be
//! about to use such a disk: a shim uses key K only after stat-ing the directory K names, and
//! containerd never removes a committed snapshot that is a parent of a container's snapshot,
//! which the task being created has. The one case this cannot tell apart is one the key cannot
//! either: a snapshot removed and a new directory made at the same path with the same inode
//! number. The overlayfs snapshotter names snapshot directories by a counter that does not go
//! back, so it does not reuse paths. No lock is needed: shims prune without one.
//!
//! ## Image layers (the CLI)
//! Gone means no image name in the store references the layer's diff_id (for `rmi`: no remaining
//! name, among the layers of the images removed). The judgement is made under the store's
//! exclusive lock, and a pull or load holds the shared lock from moving its blobs in, through
//! building the disks, to naming the image, so a disk of an image not yet named is never judged;
//! `rvm create` builds the disks of an image that has a name. A disk without a record is judged
//! by its key, which is the diff_id: a record would say nothing more, so this is as safe as with
//! one, and disks built before records existed are freed as they always were. As before, a
//! container whose image is removed keeps running on its open disks but loses them for its next
//! start.

mod image_layer;
pub mod mkfs;
mod snapshot;
mod source;

pub use image_layer::ImageLayer;
pub use mkfs::{mkfs_erofs, MkfsError, MKFS_EROFS};
pub use snapshot::SnapshotDir;
pub use source::{Liveness, RecordError, Source};

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::host::private;

/// A temporary file of a process that no longer exists is removed once it has not been written
/// for this long.
pub const STALE_TEMP: Duration = Duration::from_secs(10 * 60);

/// Tells apart the temporary files of one process's threads.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A failure of the cache, naming the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum LayerCacheError {
    #[error(transparent)]
    Mkfs(#[from] MkfsError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, LayerCacheError>;

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LayerCacheError + 'a {
    move |source| LayerCacheError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A disk in the cache and whether this call built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDisk {
    pub path: PathBuf,
    pub key: String,
    pub created: bool,
}

/// What one [`LayerCache::prune`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Keys whose disk was removed (with its record).
    pub removed: Vec<String>,
    /// Bytes of the removed disks.
    pub freed_bytes: u64,
    /// Disks kept: their source is there, or cannot be judged.
    pub kept: usize,
    /// Records without a disk removed (left by a prune cut short).
    pub lone_records: usize,
    /// Stale temporary files removed.
    pub temps: usize,
    /// Bytes of those.
    pub temp_bytes: u64,
}

/// The cache of disks made from sources of kind `S` in one directory.
#[derive(Debug, Clone)]
pub struct LayerCache<S> {
    dir: PathBuf,
    kind: PhantomData<fn() -> S>,
}

impl<S: Source> LayerCache<S> {
    /// The cache in `dir`; nothing is created until a disk is built.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            kind: PhantomData,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the disk of `source` lives (whether it is built or not).
    pub fn disk_path(&self, source: &S) -> PathBuf {
        self.disk_path_of(&source.key())
    }

    fn disk_path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.erofs"))
    }

    fn record_path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.source"))
    }

    /// A temporary name no other writer uses: `.<stem>.tmp-<pid>-<n>`.
    fn temp_path(&self, stem: &str) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!(".{stem}.tmp-{}-{n}", std::process::id()))
    }

    /// The disk of `source` when it is built; a disk without a record gets one now, so that
    /// pruning can judge it.
    pub fn lookup(&self, source: &S) -> Option<CachedDisk> {
        let key = source.key();
        let path = self.disk_path_of(&key);
        if !path.is_file() {
            return None;
        }
        if !self.record_path_of(&key).exists() {
            self.record_or_warn(source, &key);
        }
        Some(CachedDisk {
            path,
            key,
            created: false,
        })
    }

    /// The disk of `source`, building it from directory `dir` when it is not built yet.
    pub fn ensure(&self, source: &S, dir: &Path) -> Result<CachedDisk> {
        match self.lookup(source) {
            Some(disk) => Ok(disk),
            None => self.build(source, dir),
        }
    }

    /// Builds the disk of `source` from directory `dir`, replacing one that is there: record
    /// first, then the disk, each through a temporary file, fsync and rename.
    pub fn build(&self, source: &S, dir: &Path) -> Result<CachedDisk> {
        let key = source.key();
        private::create_dir_all(&self.dir).map_err(io_err("create layer cache", &self.dir))?;
        self.record_or_warn(source, &key);
        let path = self.disk_path_of(&key);
        let temp = self.temp_path(&key);
        let built = mkfs_erofs(dir, &temp)
            .map_err(LayerCacheError::from)
            .and_then(|()| sync_file(&temp))
            .and_then(|()| fs::rename(&temp, &path).map_err(io_err("rename layer disk to", &path)))
            .and_then(|()| sync_file(&self.dir));
        if let Err(e) = built {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        tracing::info!(dir = %dir.display(), disk = %path.display(), "layer disk built");
        Ok(CachedDisk {
            path,
            key,
            created: true,
        })
    }

    /// Removes the disk of `source` and its record (undoing a build); absent files are fine.
    pub fn remove(&self, source: &S) -> Result<()> {
        let key = source.key();
        for path in [self.disk_path_of(&key), self.record_path_of(&key)] {
            remove_if_present(&path)?;
        }
        Ok(())
    }

    /// Writes the record. Without one the disk works, but a kind whose key names nothing cannot
    /// prune it: worth a warning, no reason to fail the build.
    fn record_or_warn(&self, source: &S, key: &str) {
        if let Err(e) = self.write_record(source, key) {
            tracing::warn!(key, error = %e, "layer disk has no record");
        }
    }

    fn write_record(&self, source: &S, key: &str) -> Result<()> {
        let temp = self.temp_path(&format!("{key}.source"));
        let path = self.record_path_of(key);
        let written = write_synced(&temp, &source.to_record())
            .and_then(|()| {
                fs::rename(&temp, &path).map_err(io_err("rename layer record to", &path))
            })
            .and_then(|()| sync_file(&self.dir));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Removes the disks whose source `judge` says is gone, and stale temporary files (see the
    /// module doc). An entry it cannot judge is kept and logged. A missing cache directory is an
    /// empty cache; an unreadable one is an error, and so is a file it decided to remove but
    /// could not: the walk goes on, and the first such error is returned at its end.
    pub fn prune(&self, mut judge: impl FnMut(&S) -> Liveness) -> Result<Pruned> {
        let mut pruned = Pruned::default();
        let mut keys = BTreeSet::new();
        let mut temps = Vec::new();
        for name in self.names()? {
            let key = name
                .strip_suffix(".erofs")
                .or_else(|| name.strip_suffix(".source"));
            match key {
                Some(key) if S::is_key(key) => {
                    keys.insert(key.to_owned());
                }
                _ => {
                    if let Some(pid) = temp_pid::<S>(&name) {
                        temps.push((name, pid));
                    }
                }
            }
        }
        let mut first_error = None;
        for key in &keys {
            if let Err(e) = self.prune_key(key, &mut judge, &mut pruned) {
                tracing::warn!(key, error = %e, "cannot remove stale layer file");
                first_error.get_or_insert(e);
            }
        }
        for (name, pid) in temps {
            if let Some(bytes) = prune_temp(&self.dir.join(name), pid) {
                pruned.temps += 1;
                pruned.temp_bytes += bytes;
            }
        }
        first_error.map_or(Ok(pruned), Err)
    }

    /// The file names in the cache directory (none when it does not exist).
    fn names(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read layer cache", &self.dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read layer cache", &self.dir))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Judges the disk (or lone record) of `key` and removes both when its source is gone.
    fn prune_key(
        &self,
        key: &str,
        judge: &mut impl FnMut(&S) -> Liveness,
        pruned: &mut Pruned,
    ) -> Result<()> {
        let disk = self.disk_path_of(key);
        let has_disk = disk.is_file();
        let Some(source) = self.source_of(key, has_disk) else {
            pruned.kept += usize::from(has_disk);
            return Ok(());
        };
        let reason = match judge(&source) {
            Liveness::Gone(reason) => reason,
            Liveness::Live => {
                pruned.kept += usize::from(has_disk);
                return Ok(());
            }
            Liveness::Unknown(why) => {
                tracing::warn!(
                    key,
                    why,
                    "cannot tell whether the layer source is gone; disk kept"
                );
                pruned.kept += usize::from(has_disk);
                return Ok(());
            }
        };
        let size = fs::metadata(&disk).map_or(0, |m| m.len());
        // The disk first: a prune cut short leaves a record, which the next prune removes.
        let removed_disk = remove_if_present(&disk).inspect_err(|_| pruned.kept += 1)?;
        remove_if_present(&self.record_path_of(key))?;
        if removed_disk {
            tracing::info!(key, source = ?source, reason, bytes = size, "layer disk pruned");
            pruned.removed.push(key.to_owned());
            pruned.freed_bytes += size;
        } else {
            tracing::debug!(key, reason, "lone layer record pruned");
            pruned.lone_records += 1;
        }
        Ok(())
    }

    /// What the disk of `key` was made from, by its record or, without one, its key; `None` when
    /// that cannot be told (logged) or there is nothing left to judge.
    fn source_of(&self, key: &str, has_disk: bool) -> Option<S> {
        let record_path = self.record_path_of(key);
        let bytes = match fs::read(&record_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !has_disk {
                    // Both removed by a concurrent prune.
                    return None;
                }
                let source = S::from_key(key);
                if source.is_none() {
                    tracing::debug!(key, "layer disk without a record kept");
                }
                return source;
            }
            Err(e) => {
                tracing::warn!(key, record = %record_path.display(), error = %e, "layer record unreadable; disk kept");
                return None;
            }
        };
        match S::parse_record(&bytes) {
            Ok(source) if source.key() == key => Some(source),
            Ok(source) => {
                tracing::warn!(key, source = ?source, "layer record is not of its key; disk kept");
                None
            }
            Err(e) => {
                tracing::warn!(key, record = %record_path.display(), error = %e, "layer record unparsable; disk kept");
                None
            }
        }
    }
}

/// Removes `path`; false when it was not there.
fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Makes a file's content, or a directory's entries, durable.
fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(io_err("sync", path))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(io_err("write layer record", path))
}

/// The pid in a temporary file's name: `.<key>.tmp-<pid>-<n>` or `.<key>.source.tmp-<pid>-<n>`,
/// or without `-<n>` as older shims wrote them.
fn temp_pid<S: Source>(name: &str) -> Option<i32> {
    let (stem, owner) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let key = stem.strip_suffix(".source").unwrap_or(stem);
    if !S::is_key(key) {
        return None;
    }
    let pid = match owner.split_once('-') {
        Some((pid, n)) => n.parse::<u64>().ok().map(|_| pid)?,
        None => owner,
    };
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Removes temporary file `path` of process `pid` when that process is gone and the file has not
/// been written for [`STALE_TEMP`]; returns the bytes it held when removed.
fn prune_temp(path: &Path, pid: i32) -> Option<u64> {
    let alive = rustix::process::Pid::from_raw(pid).is_none_or(|pid| {
        !matches!(
            rustix::process::test_kill_process(pid),
            Err(rustix::io::Errno::SRCH)
        )
    });
    if alive {
        return None;
    }
    let meta = fs::metadata(path).ok()?;
    let age = meta
        .modified()
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())?;
    if age < STALE_TEMP {
        return None;
    }
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(temp = %path.display(), pid, "stale layer temporary file removed");
            Some(meta.len())
        }
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(temp = %path.display(), error = %e, "cannot remove stale layer temporary file");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests;
