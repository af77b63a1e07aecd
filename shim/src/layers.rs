//! The task's root filesystem as erofs layer disks, from the snapshotter's mounts.
//!
//! containerd's overlayfs snapshotter hands an overlay mount whose `lowerdir`s are the image's
//! committed (immutable) layer snapshots, topmost first. Each lower directory becomes one
//! read-only erofs disk in the runtime's layer cache ([`rvm_runtime::layer_cache`], keyed by
//! [`SnapshotDir`]: the directory's path, device and inode), so every task of the same image
//! shares the disks. The overlay's `upperdir` is the active snapshot, empty for a new container:
//! the guest's own overlay puts the container's writes on the VM's scratch disk instead, as
//! `rvm run` does. A bind mount (an image without parent layers, or a native snapshotter)
//! becomes one disk built for this task only, outside the cache.
//!
//! This module owns reading the mounts and choosing cached or private disks. Building, records
//! and pruning are the cache's, with its one policy: a disk goes when its snapshot directory is
//! gone ([`SnapshotDir::liveness`]); why that is safe while other shims build and use disks is
//! argued in the cache's module doc.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rvm_runtime::layer_cache::{
    mkfs_erofs, LayerCache, LayerCacheError, MkfsError, Pruned, SnapshotDir,
};
use rvm_runtime::vm::LayerImage;
use thiserror::Error;

/// The shim's cache of disks made from snapshot directories.
pub type SnapshotCache = LayerCache<SnapshotDir>;

/// The key the agent logs a task's private disk by (it has no cache key).
const PRIVATE_KEY: &str = "rootfs";

#[derive(Debug, Error)]
pub enum LayerError {
    #[error("rootfs mount of type {0:?} is not supported (expected overlay or bind)")]
    UnsupportedMount(String),
    #[error("rootfs has {0} mounts; expected one overlay or bind mount")]
    MountCount(usize),
    #[error("overlay rootfs mount has no lowerdir option: {0:?}")]
    NoLowerdir(Vec<String>),
    #[error("cannot stat layer directory {}: {source}", dir.display())]
    Stat { dir: PathBuf, source: io::Error },
    #[error(transparent)]
    Cache(#[from] LayerCacheError),
    #[error(transparent)]
    Mkfs(#[from] MkfsError),
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

/// The disks of `source`, lowest first: cached ones in `cache`, a private one at
/// `private_path` (rebuilt for every task: its directory is the task's and may have changed).
pub fn ensure_disks(
    source: &Source,
    cache: &SnapshotCache,
    private_path: &Path,
) -> Result<Vec<LayerImage>, LayerError> {
    match source {
        Source::Layers(dirs) => dirs.iter().map(|dir| cached_disk(dir, cache)).collect(),
        Source::Private(dir) => {
            let _ = fs::remove_file(private_path);
            mkfs_erofs(dir, private_path)?;
            Ok(vec![LayerImage {
                path: private_path.to_owned(),
                key: PRIVATE_KEY.to_owned(),
            }])
        }
    }
}

fn cached_disk(dir: &Path, cache: &SnapshotCache) -> Result<LayerImage, LayerError> {
    let snapshot = SnapshotDir::of(dir).map_err(|source| LayerError::Stat {
        dir: dir.to_owned(),
        source,
    })?;
    let disk = cache.ensure(&snapshot, dir)?;
    Ok(LayerImage {
        path: disk.path,
        key: disk.key,
    })
}

/// Removes the cached disks whose snapshot directory is gone (see the module doc).
pub fn prune(cache: &SnapshotCache) -> Result<Pruned, LayerCacheError> {
    cache.prune(SnapshotDir::liveness)
}

// The tests' shared answer to a missing prerequisite (here: mkfs.erofs): fail under CI, skip
// elsewhere.
#[cfg(test)]
#[path = "../../tests/fixtures/prerequisite.rs"]
mod prerequisite;

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_runtime::layer_cache::{Source as _, MKFS_EROFS};
    use std::os::unix::fs::MetadataExt;

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
        let two = [overlay(&["lowerdir=/a"]), overlay(&["lowerdir=/b"])];
        assert!(source_of(&two, Path::new("/r"))
            .unwrap_err()
            .to_string()
            .contains("2 mounts"));
    }

    /// Whether the disk-building tests can run (see `prerequisite`).
    fn have_mkfs() -> bool {
        prerequisite::prerequisite(prerequisite::missing_tool(MKFS_EROFS, "erofs-utils"))
    }

    /// A directory `name` under `parent` holding one file.
    fn layer_dir(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("f"), name).unwrap();
        dir
    }

    /// erofs superblock magic 0xE0F5E1E2 at offset 1024.
    fn assert_erofs(path: &Path) {
        let bytes = fs::read(path).unwrap();
        assert_eq!(
            &bytes[1024..1028],
            &[0xe2, 0xe1, 0xf5, 0xe0],
            "{}",
            path.display()
        );
    }

    #[test]
    fn snapshot_layers_share_the_cached_disks_of_their_directories() {
        if !have_mkfs() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (
            layer_dir(tmp.path(), "lower"),
            layer_dir(tmp.path(), "upper"),
        );
        let cache = SnapshotCache::new(tmp.path().join("cache"));
        let private = tmp.path().join("private.erofs");
        let source = Source::Layers(vec![lower.clone(), upper.clone()]);
        let disks = ensure_disks(&source, &cache, &private).unwrap();
        // In the order given (lowest first), each the cache's disk of its snapshot directory.
        let expected: Vec<LayerImage> = [&lower, &upper]
            .iter()
            .map(|dir| {
                let snapshot = SnapshotDir::of(dir).unwrap();
                LayerImage {
                    path: cache.disk_path(&snapshot),
                    key: snapshot.key(),
                }
            })
            .collect();
        assert_eq!(disks, expected);
        disks.iter().for_each(|disk| assert_erofs(&disk.path));
        assert!(!private.exists());
        // Another task of the image reuses them.
        let mtime = fs::metadata(&disks[0].path).unwrap().mtime_nsec();
        assert_eq!(ensure_disks(&source, &cache, &private).unwrap(), disks);
        assert_eq!(fs::metadata(&disks[0].path).unwrap().mtime_nsec(), mtime);
    }

    #[test]
    fn a_private_rootfs_gets_a_disk_of_its_own_outside_the_cache() {
        if !have_mkfs() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = layer_dir(tmp.path(), "rootfs");
        let cache = SnapshotCache::new(tmp.path().join("cache"));
        let private = tmp.path().join("private.erofs");
        // Left by an earlier task of the same id: replaced, not reused.
        fs::write(&private, b"stale").unwrap();
        let disks = ensure_disks(&Source::Private(rootfs), &cache, &private).unwrap();
        assert_eq!(
            disks,
            [LayerImage {
                path: private.clone(),
                key: PRIVATE_KEY.to_owned(),
            }]
        );
        assert_erofs(&private);
        assert!(!cache.dir().exists());
    }

    #[test]
    fn a_missing_layer_directory_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("snapshots/7/fs");
        let cache = SnapshotCache::new(tmp.path().join("cache"));
        let error = ensure_disks(
            &Source::Layers(vec![missing.clone()]),
            &cache,
            &tmp.path().join("p"),
        )
        .unwrap_err();
        assert!(
            matches!(&error, LayerError::Stat { dir, .. } if *dir == missing),
            "{error}"
        );
        assert!(error.to_string().contains("snapshots/7/fs"), "{error}");
        assert!(!cache.dir().exists());
    }

    #[test]
    fn prune_drops_only_the_disks_of_removed_snapshots() {
        if !have_mkfs() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (removed, kept) = (layer_dir(tmp.path(), "1"), layer_dir(tmp.path(), "2"));
        let cache = SnapshotCache::new(tmp.path().join("cache"));
        let source = Source::Layers(vec![removed.clone(), kept]);
        let disks = ensure_disks(&source, &cache, &tmp.path().join("p")).unwrap();
        assert_eq!(prune(&cache).unwrap().kept, 2);
        fs::remove_dir_all(&removed).unwrap();
        let pruned = prune(&cache).unwrap();
        assert_eq!(
            (pruned.removed, pruned.kept),
            (vec![disks[0].key.clone()], 1)
        );
        assert!(!disks[0].path.exists());
        assert!(disks[1].path.is_file());
    }
}
