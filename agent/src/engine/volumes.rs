//! Named volumes in a container: each volume disk's data directory becomes a bind mount of the
//! spec, and a new (empty) read-write volume is first filled with what the image holds at its
//! destination, as Docker does ("copy-up").

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder, Spec};
use thiserror::Error;

use super::rootfs::{target_in, RootfsError};

/// The directory of a volume's file system that holds the data the container sees (as Docker's
/// `volumes/NAME/_data`): keeps `lost+found` out of the container.
pub const DATA_DIR: &str = "_data";

/// A volume disk to mount in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRequest {
    pub serial: String,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Error)]
pub enum VolumeError {
    #[error("volume {serial:?}: {source}")]
    Destination { serial: String, source: RootfsError },
    #[error("volume {serial:?}: {what} {}: {source}", path.display())]
    Io {
        serial: String,
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("volume {serial:?}: build the bind mount to {}: {reason}", destination.display())]
    Spec {
        serial: String,
        destination: PathBuf,
        reason: String,
    },
}

/// The directory of the mounted volume `mounted` that the container gets: `_data`, created on a
/// writable volume that lacks it; the file system's root on a read-only one without it.
pub fn data_dir(
    serial: &str,
    mounted: &Path,
    read_only: bool,
) -> Result<(PathBuf, bool), VolumeError> {
    let data = mounted.join(DATA_DIR);
    if data.is_dir() {
        return Ok((data, false));
    }
    if read_only {
        return Ok((mounted.to_owned(), false));
    }
    fs::create_dir(&data).map_err(|source| VolumeError::Io {
        serial: serial.to_owned(),
        what: "create",
        path: data.clone(),
        source,
    })?;
    Ok((data, true))
}

/// Whether `dir` has no entries.
fn is_empty(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

/// Fills the empty data directory `data` of a writable volume with what `rootfs` holds at
/// `destination` (files, directories, symlinks, owners and modes), as Docker does for a new
/// volume. Returns whether anything was copied. Leaves a non-empty volume alone.
pub fn copy_up(
    serial: &str,
    rootfs: &Path,
    destination: &Path,
    data: &Path,
) -> Result<bool, VolumeError> {
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| VolumeError::Io {
            serial: serial.to_owned(),
            what,
            path,
            source,
        }
    };
    if !is_empty(data).map_err(io_err("read", data))? {
        return Ok(false);
    }
    let source = target_in(rootfs, destination).map_err(|source| VolumeError::Destination {
        serial: serial.to_owned(),
        source,
    })?;
    // Only a real directory of the image is copied; a symlink there is not followed.
    match fs::symlink_metadata(&source) {
        Ok(metadata) if metadata.is_dir() => {
            copy_tree(&source, data).map_err(io_err("copy the image's content into", data))?;
            copy_owner_and_mode(&metadata, data).map_err(io_err("set owner and mode of", data))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn copy_owner_and_mode(metadata: &fs::Metadata, target: &Path) -> io::Result<()> {
    lchown(target, Some(metadata.uid()), Some(metadata.gid()))?;
    if !metadata.file_type().is_symlink() {
        fs::set_permissions(
            target,
            fs::Permissions::from_mode(metadata.permissions().mode()),
        )?;
    }
    Ok(())
}

/// Copies the content of directory `from` into the existing directory `to`. Device nodes,
/// sockets and FIFOs are skipped.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let metadata = fs::symlink_metadata(&source)?;
        let kind = metadata.file_type();
        if kind.is_dir() {
            fs::create_dir(&target)?;
            copy_tree(&source, &target)?;
        } else if kind.is_file() {
            fs::copy(&source, &target)?;
        } else if kind.is_symlink() {
            symlink(fs::read_link(&source)?, &target)?;
        } else {
            tracing::warn!(path = %source.display(), "copy-up skips a special file");
            continue;
        }
        copy_owner_and_mode(&metadata, &target)?;
    }
    Ok(())
}

/// The spec mount that binds `data` at the volume's destination (read-only if asked).
pub fn bind_mount(volume: &VolumeRequest, data: &Path) -> Result<Mount, VolumeError> {
    let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
    if volume.read_only {
        options.push("ro".to_owned());
    }
    MountBuilder::default()
        .destination(volume.destination.clone())
        .typ("bind")
        .source(data.to_owned())
        .options(options)
        .build()
        .map_err(|e| VolumeError::Spec {
            serial: volume.serial.clone(),
            destination: volume.destination.clone(),
            reason: e.to_string(),
        })
}

/// Adds `volumes` to the spec's mounts and orders all mounts by the depth of their destination,
/// so that a mount inside another one comes after it (as Docker sorts them); mounts of equal
/// depth keep their order.
pub fn add_mounts(spec: &mut Spec, volumes: Vec<Mount>) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.extend(volumes);
    mounts.sort_by_key(|m| m.destination().components().count());
    spec.set_mounts(Some(mounts));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_ordered_parents_first() {
        let mut spec = Spec::default();
        let volume = VolumeRequest {
            serial: "rvm-vol-0".into(),
            destination: "/data".into(),
            read_only: true,
        };
        let nested = VolumeRequest {
            serial: "rvm-vol-1".into(),
            destination: "/data/inner".into(),
            read_only: false,
        };
        let mounts = vec![
            bind_mount(&nested, Path::new("/v1")).unwrap(),
            bind_mount(&volume, Path::new("/v0")).unwrap(),
        ];
        add_mounts(&mut spec, mounts);
        let destinations: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        let data = destinations.iter().position(|d| d == "/data").unwrap();
        let inner = destinations
            .iter()
            .position(|d| d == "/data/inner")
            .unwrap();
        let dev = destinations.iter().position(|d| d == "/dev").unwrap();
        let pts = destinations.iter().position(|d| d == "/dev/pts").unwrap();
        assert!(data < inner && dev < pts, "{destinations:?}");
        let ro = spec.mounts().as_ref().unwrap()[data].options().clone();
        assert!(ro.unwrap().contains(&"ro".to_owned()));
    }

    #[test]
    fn copy_up_fills_only_an_empty_volume() {
        let rootfs = tempfile::tempdir().unwrap();
        let image_dir = rootfs.path().join("srv/www");
        fs::create_dir_all(image_dir.join("sub")).unwrap();
        fs::write(image_dir.join("index.html"), b"hi").unwrap();
        fs::set_permissions(
            image_dir.join("index.html"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        symlink("index.html", image_dir.join("link")).unwrap();
        fs::set_permissions(&image_dir, fs::Permissions::from_mode(0o750)).unwrap();

        let volume = tempfile::tempdir().unwrap();
        let (data, created) = data_dir("v", volume.path(), false).unwrap();
        assert!(created);
        assert!(copy_up("v", rootfs.path(), Path::new("/srv/www"), &data).unwrap());
        assert_eq!(fs::read(data.join("index.html")).unwrap(), b"hi");
        let mode = fs::metadata(data.join("index.html"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            fs::read_link(data.join("link")).unwrap(),
            Path::new("index.html")
        );
        assert!(data.join("sub").is_dir());
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o750
        );

        // Not empty any more: a second use leaves it as the container left it.
        fs::remove_file(data.join("index.html")).unwrap();
        assert!(!copy_up("v", rootfs.path(), Path::new("/srv/www"), &data).unwrap());
        assert!(!data.join("index.html").exists());
        // Nothing in the image there: nothing to copy.
        let other = tempfile::tempdir().unwrap();
        assert!(!copy_up("v", rootfs.path(), Path::new("/nothing"), other.path()).unwrap());
    }

    #[test]
    fn read_only_volume_without_data_dir_uses_its_root() {
        let volume = tempfile::tempdir().unwrap();
        let (data, created) = data_dir("v", volume.path(), true).unwrap();
        assert_eq!(data, volume.path());
        assert!(!created);
    }
}
