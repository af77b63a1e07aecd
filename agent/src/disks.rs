//! Block devices by virtio serial, and the guest mounts made from them: erofs layers read-only,
//! the ext4 scratch disk read-write, each mounted once and shared by the containers using it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use thiserror::Error;

/// How long to wait for a disk to appear (virtio-blk probes before init runs, so this is
/// only a safety margin).
const DISK_WAIT: Duration = Duration::from_secs(5);

/// virtio-blk serials hold at most 20 bytes (VIRTIO_BLK_ID_BYTES); longer ones are cut off.
pub const MAX_SERIAL_LEN: usize = 20;

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("no virtio-blk disk has serial {serial:?} (looked in {sys_block})")]
    NotFound { serial: String, sys_block: PathBuf },
    #[error(
        "disk serial {serial:?} is not a valid name (allowed: letters, digits, '-', '_', '.')"
    )]
    BadSerial { serial: String },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("mount {fstype} disk {device} (serial {serial:?}) on {target}: {source}")]
    Mount {
        fstype: &'static str,
        device: PathBuf,
        serial: String,
        target: PathBuf,
        source: nix::Error,
    },
}

/// Finds and mounts disks by serial. Paths are configurable for tests.
#[derive(Debug)]
pub struct Disks {
    sys_block: PathBuf,
    dev: PathBuf,
    mount_root: PathBuf,
    mounted: Mutex<HashMap<String, PathBuf>>,
}

impl Disks {
    /// Disks of the running guest: `/sys/block`, `/dev`, mounted below `mount_root`.
    pub fn new(mount_root: PathBuf) -> Self {
        Self::with_paths(
            PathBuf::from("/sys/block"),
            PathBuf::from("/dev"),
            mount_root,
        )
    }

    pub fn with_paths(sys_block: PathBuf, dev: PathBuf, mount_root: PathBuf) -> Self {
        Self {
            sys_block,
            dev,
            mount_root,
            mounted: Mutex::new(HashMap::new()),
        }
    }

    /// The device node of the disk whose virtio serial is `serial`, waiting briefly for it.
    pub fn find(&self, serial: &str) -> Result<PathBuf, DiskError> {
        let deadline = Instant::now() + DISK_WAIT;
        loop {
            if let Some(device) = self.scan(serial)? {
                return Ok(device);
            }
            if Instant::now() >= deadline {
                return Err(DiskError::NotFound {
                    serial: serial.to_owned(),
                    sys_block: self.sys_block.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn scan(&self, serial: &str) -> Result<Option<PathBuf>, DiskError> {
        let entries = match fs::read_dir(&self.sys_block) {
            Ok(entries) => entries,
            Err(source) => {
                return Err(DiskError::Read {
                    path: self.sys_block.clone(),
                    source,
                })
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with("vd") {
                continue;
            }
            let serial_path = entry.path().join("serial");
            if let Ok(found) = fs::read_to_string(&serial_path) {
                if found.trim_end_matches(['\n', '\0']) == serial {
                    return Ok(Some(self.dev.join(name)));
                }
            }
        }
        Ok(None)
    }

    /// Mounts the erofs layer disk `serial` read-only (once) and returns its mount point.
    pub fn mount_layer(&self, serial: &str) -> Result<PathBuf, DiskError> {
        self.mount_once(
            serial,
            "erofs",
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
            "layers",
        )
    }

    /// Mounts the ext4 scratch disk `serial` read-write (once) and returns its mount point.
    pub fn mount_scratch(&self, serial: &str) -> Result<PathBuf, DiskError> {
        self.mount_once(serial, "ext4", MsFlags::MS_NODEV, "scratch")
    }

    /// Mounts the ext4 volume disk `serial` (once), read-only if asked. A read-only disk whose
    /// journal needs recovery (its last VM ended without unmounting it) cannot replay it, so it
    /// is then mounted without the journal (`noload`).
    pub fn mount_volume(&self, serial: &str, read_only: bool) -> Result<PathBuf, DiskError> {
        if !read_only {
            return self.mount_once(serial, "ext4", MsFlags::MS_NODEV, "volumes");
        }
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV;
        self.mount_once(serial, "ext4", flags, "volumes")
            .or_else(|error| {
                tracing::warn!(%error, "retrying the read-only volume without its journal");
                self.mount_once_with(serial, "ext4", flags, Some("noload"), "volumes")
            })
    }

    /// Unmounts every volume disk, so its file system is clean for the next VM; failures are
    /// logged (the VM is ending).
    pub fn unmount_volumes(&self) {
        let volumes = self.mount_root.join("volumes");
        let mut mounted = self
            .mounted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        mounted.retain(|serial, target| {
            if !target.starts_with(&volumes) {
                return true;
            }
            match umount2(target.as_path(), MntFlags::empty()) {
                Ok(()) => tracing::info!(serial, "volume unmounted"),
                Err(error) => tracing::warn!(serial, %error, "volume not unmounted"),
            }
            false
        });
    }

    fn mount_once(
        &self,
        serial: &str,
        fstype: &'static str,
        flags: MsFlags,
        kind: &str,
    ) -> Result<PathBuf, DiskError> {
        self.mount_once_with(serial, fstype, flags, None, kind)
    }

    fn mount_once_with(
        &self,
        serial: &str,
        fstype: &'static str,
        flags: MsFlags,
        data: Option<&str>,
        kind: &str,
    ) -> Result<PathBuf, DiskError> {
        check_serial(serial)?;
        let mut mounted = self
            .mounted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(target) = mounted.get(serial) {
            return Ok(target.clone());
        }
        let device = self.find(serial)?;
        let target = self.mount_root.join(kind).join(serial);
        fs::create_dir_all(&target).map_err(|source| DiskError::Create {
            path: target.clone(),
            source,
        })?;
        mount(Some(&device), &target, Some(fstype), flags, data).map_err(|source| {
            DiskError::Mount {
                fstype,
                device: device.clone(),
                serial: serial.to_owned(),
                target: target.clone(),
                source,
            }
        })?;
        tracing::info!(serial, device = %device.display(), target = %target.display(), fstype, "disk mounted");
        mounted.insert(serial.to_owned(), target.clone());
        Ok(target)
    }
}

/// Serials become directory names: refuse anything that could escape or be empty.
fn check_serial(serial: &str) -> Result<(), DiskError> {
    let valid = !serial.is_empty()
        && serial.len() <= MAX_SERIAL_LEN
        && serial != "."
        && serial != ".."
        && serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(DiskError::BadSerial {
            serial: serial.to_owned(),
        })
    }
}

/// The overlay lowerdir option for `layers` given lowest first: overlayfs wants the top-most
/// first, separated by ':'.
pub fn lowerdir_option(layers_lowest_first: &[PathBuf]) -> String {
    layers_lowest_first
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Mounts an overlay of `layers` (lowest first) with `upper` and `work` at `target`.
pub fn mount_overlay(
    layers_lowest_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), DiskError> {
    for dir in [upper, work, target] {
        fs::create_dir_all(dir).map_err(|source| DiskError::Create {
            path: dir.to_owned(),
            source,
        })?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir_option(layers_lowest_first),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|source| DiskError::Mount {
        fstype: "overlay",
        device: PathBuf::from("overlay"),
        serial: String::new(),
        target: target.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_lists_top_layer_first() {
        let layers = [
            PathBuf::from("/l/base"),
            PathBuf::from("/l/mid"),
            PathBuf::from("/l/top"),
        ];
        assert_eq!(lowerdir_option(&layers), "/l/top:/l/mid:/l/base");
    }

    #[test]
    fn finds_disk_by_serial_in_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        for (disk, serial) in [("vda", "layer0\n"), ("vdb", "scratch")] {
            fs::create_dir_all(sys.path().join(disk)).unwrap();
            fs::write(sys.path().join(disk).join("serial"), serial).unwrap();
        }
        let disks = Disks::with_paths(
            sys.path().to_owned(),
            PathBuf::from("/dev"),
            PathBuf::from("/x"),
        );
        assert_eq!(disks.find("layer0").unwrap(), PathBuf::from("/dev/vda"));
        assert_eq!(disks.find("scratch").unwrap(), PathBuf::from("/dev/vdb"));
    }

    #[test]
    fn bad_serials_are_refused() {
        for serial in ["", "..", "a/b", "x y", "sha256-0123456789abcdef"] {
            assert!(
                matches!(check_serial(serial), Err(DiskError::BadSerial { .. })),
                "{serial:?}"
            );
        }
        assert!(check_serial("layer-0_a.b").is_ok());
    }
}
