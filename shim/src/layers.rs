//! The task's root filesystem as erofs layer disks, from the snapshotter's mounts.
//!
//! containerd's overlayfs snapshotter hands an overlay mount whose `lowerdir`s are the image's
//! committed (immutable) layer snapshots, topmost first. Each lower directory becomes one
//! read-only erofs disk (`mkfs.erofs`), cached by the directory's path and inode, so every task
//! of the same image shares the disks. The overlay's `upperdir` is the active snapshot, empty for a
//! new container: the guest's own overlay puts the container's writes on the VM's scratch disk
//! instead, as `rvm run` does. A bind mount (an image without parent layers, or a native
//! snapshotter) becomes one disk built for this task only.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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
fn cache_key(dir: &Path) -> Result<String, LayerError> {
    let meta = fs::metadata(dir).map_err(|source| LayerError::Io {
        action: "stat layer directory",
        path: dir.to_owned(),
        source,
    })?;
    let mut hasher = Sha256::new();
    hasher.update(dir.as_os_str().as_encoded_bytes());
    hasher.update(meta.dev().to_le_bytes());
    hasher.update(meta.ino().to_le_bytes());
    let digest = hasher.finalize();
    Ok(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
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
    let key = cache_key(dir)?;
    let path = cache_dir.join(format!("{key}.erofs"));
    if path.is_file() {
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
    tracing::info!(dir = %dir.display(), disk = %path.display(), "layer disk built");
    Ok(Disk { path, key })
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

    #[test]
    fn layer_disks_are_cached_per_directory() {
        if Command::new(MKFS_EROFS).arg("--help").output().is_err() {
            println!("SKIPPED: {MKFS_EROFS} is not installed");
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
}
