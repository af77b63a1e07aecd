//! Block devices by virtio serial (named as `rvm_protocol::serial` says), and the guest mounts made from them: erofs layers read-only,
//! the ext4 scratch disk read-write, each mounted once and shared by the containers using it.
//!
//! Layer disks may sit on disk slots the host fills while the guest runs (pods): a serial is
//! looked up live in sysfs each time, and counts as present only once its size is non-zero; a
//! layer's device buffers are dropped (BLKFLSBUF) before it is mounted, since a re-used slot may
//! still have the previous image's pages cached; and a layer is unmounted when the last
//! container using it is removed, so the host can detach its slot.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use rvm_protocol::serial::is_valid_serial;
use thiserror::Error;

/// How long to wait for a disk to appear: boot-time disks are probed before init runs, but a
/// slot the host fills at run time shows its serial and size only once the guest has handled
/// the configuration change.
const DISK_WAIT: Duration = Duration::from_secs(10);

/// How often sysfs is re-read while waiting.
const SCAN_INTERVAL: Duration = Duration::from_millis(50);

// BLKFLSBUF: drop the block device's buffer cache (`_IO(0x12, 97)`, linux/fs.h).
nix::ioctl_none!(blkflsbuf, 0x12, 97);

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("no virtio-blk disk with a non-zero size has serial {serial:?} (looked in {sys_block} for {waited:?})")]
    NotFound {
        serial: String,
        sys_block: PathBuf,
        waited: Duration,
    },
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
    #[error("drop the buffers of disk {device} (serial {serial:?}): {source}")]
    Flush {
        device: PathBuf,
        serial: String,
        source: io::Error,
    },
}

/// Finds and mounts disks by serial. Paths are configurable for tests.
#[derive(Debug)]
pub struct Disks {
    sys_block: PathBuf,
    dev: PathBuf,
    mount_root: PathBuf,
    wait: Duration,
    mounted: Mutex<HashMap<String, PathBuf>>,
    layer_users: Mutex<LayerUsers>,
}

/// Which containers use which layer serials, to know when a layer's last user is gone.
#[derive(Debug, Default)]
pub struct LayerUsers {
    users: HashMap<String, HashSet<String>>,
}

impl LayerUsers {
    /// Records that `container` uses layer `serial`.
    pub fn add(&mut self, serial: &str, container: &str) {
        self.users
            .entry(serial.to_owned())
            .or_default()
            .insert(container.to_owned());
    }

    /// Forgets `container`; returns the serials nobody uses any more (sorted).
    pub fn release(&mut self, container: &str) -> Vec<String> {
        let mut unused = Vec::new();
        self.users.retain(|serial, users| {
            users.remove(container);
            if users.is_empty() {
                unused.push(serial.clone());
                return false;
            }
            true
        });
        unused.sort_unstable();
        unused
    }
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
            wait: DISK_WAIT,
            mounted: Mutex::new(HashMap::new()),
            layer_users: Mutex::new(LayerUsers::default()),
        }
    }

    /// The same, waiting at most `wait` for a missing disk (tests).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The device node of the disk whose virtio serial is `serial` and whose size is non-zero,
    /// re-reading sysfs until it shows up or the wait is over.
    pub fn find(&self, serial: &str) -> Result<PathBuf, DiskError> {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(device) = self.scan(serial)? {
                return Ok(device);
            }
            if Instant::now() >= deadline {
                return Err(DiskError::NotFound {
                    serial: serial.to_owned(),
                    sys_block: self.sys_block.clone(),
                    waited: self.wait,
                });
            }
            std::thread::sleep(SCAN_INTERVAL);
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
            if read_serial(&entry.path()).as_deref() == Some(serial) && sectors(&entry.path()) > 0 {
                return Ok(Some(self.dev.join(name)));
            }
        }
        Ok(None)
    }

    /// Mounts layer disk `serial` for `container` (once per guest) and returns its mount
    /// point; the mount stays until the last container using it is released.
    pub fn mount_layer_for(&self, serial: &str, container: &str) -> Result<PathBuf, DiskError> {
        // Held across the mount, so a concurrent release cannot unmount it in between (the
        // lock order is users, then mounts, in both).
        let mut users = self.layer_users();
        let target = self.mount_layer(serial)?;
        users.add(serial, container);
        Ok(target)
    }

    /// Forgets `container`'s use of its layers and unmounts those no container uses any more,
    /// so the host may detach their slots. Failures are logged.
    pub fn release_layers(&self, container: &str) {
        let unused = self.layer_users().release(container);
        let mut mounted = self.mounted();
        for serial in unused {
            let Some(target) = mounted.remove(&serial) else {
                continue;
            };
            unmount_layer(&serial, &target);
        }
    }

    fn layer_users(&self) -> std::sync::MutexGuard<'_, LayerUsers> {
        self.layer_users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mounted(&self) -> std::sync::MutexGuard<'_, HashMap<String, PathBuf>> {
        self.mounted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        if kind == "layers" {
            flush_buffers(&device, serial)?;
        }
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

/// The virtio serial of the disk whose sysfs directory is `disk` (read live: the kernel asks
/// the device each time), without the padding.
fn read_serial(disk: &Path) -> Option<String> {
    let raw = fs::read_to_string(disk.join("serial")).ok()?;
    Some(raw.trim_end_matches(['\n', '\0']).to_owned())
}

/// The disk's size in 512-byte sectors; 0 when unknown (an empty slot also reads 0).
fn sectors(disk: &Path) -> u64 {
    fs::read_to_string(disk.join("size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Drops the block device's cached pages, which may belong to the image a re-used slot held
/// before.
fn flush_buffers(device: &Path, serial: &str) -> Result<(), DiskError> {
    let error = |source| DiskError::Flush {
        device: device.to_owned(),
        serial: serial.to_owned(),
        source,
    };
    let file = File::open(device).map_err(error)?;
    // SAFETY: BLKFLSBUF takes no argument and only acts on the open block device `file`.
    unsafe { blkflsbuf(file.as_raw_fd()) }.map_err(|e| error(e.into()))?;
    Ok(())
}

/// Unmounts a layer no container uses; a busy one is detached lazily (and logged, since its
/// slot must not be emptied while the guest still reads it).
fn unmount_layer(serial: &str, target: &Path) {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => tracing::info!(serial, "layer unmounted"),
        Err(error) => {
            tracing::warn!(serial, %error, "layer busy; detaching it lazily");
            let _ = umount2(target, MntFlags::MNT_DETACH);
        }
    }
    let _ = fs::remove_dir(target);
}

/// Serials become directory names: refuse anything that could escape or be empty.
fn check_serial(serial: &str) -> Result<(), DiskError> {
    if is_valid_serial(serial) {
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

/// Mounts an overlay of `layers` (lowest first) with `upper` and `work` at `target`; with `nodev`,
/// device nodes in it cannot be opened.
pub fn mount_overlay(
    layers_lowest_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    nodev: bool,
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
        if nodev {
            MsFlags::MS_NODEV
        } else {
            MsFlags::empty()
        },
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

    /// Writes a fake `/sys/block/<disk>` with `serial` and `size` (sectors).
    fn fake_disk(sys: &Path, disk: &str, serial: &str, size: &str) {
        fs::create_dir_all(sys.join(disk)).unwrap();
        fs::write(sys.join(disk).join("serial"), serial).unwrap();
        fs::write(sys.join(disk).join("size"), size).unwrap();
    }

    fn fake_disks(sys: &Path, wait: Duration) -> Disks {
        Disks::with_paths(sys.to_owned(), PathBuf::from("/dev"), PathBuf::from("/x"))
            .with_wait(wait)
    }

    #[test]
    fn finds_disk_by_serial_in_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        fake_disk(sys.path(), "vda", "layer0\n", "8\n");
        fake_disk(sys.path(), "vdb", "scratch\0\0", "2048");
        fake_disk(sys.path(), "loop0", "layer1", "8");
        let disks = fake_disks(sys.path(), Duration::ZERO);
        assert_eq!(disks.find("layer0").unwrap(), PathBuf::from("/dev/vda"));
        assert_eq!(disks.find("scratch").unwrap(), PathBuf::from("/dev/vdb"));
        assert!(disks.find("layer1").is_err(), "only vd* disks count");
    }

    #[test]
    fn empty_slot_or_zero_size_is_not_found_and_error_names_serial() {
        let sys = tempfile::tempdir().unwrap();
        fake_disk(sys.path(), "vda", "", "0");
        fake_disk(sys.path(), "vdb", "rvm-l-abc", "0\n");
        let disks = fake_disks(sys.path(), Duration::from_millis(120));
        let started = Instant::now();
        let error = disks.find("rvm-l-abc").unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(120));
        let message = error.to_string();
        assert!(message.contains("\"rvm-l-abc\""), "{message}");
        assert!(message.contains("non-zero size"), "{message}");
    }

    #[test]
    fn slot_filled_while_waiting_is_found() {
        let sys = tempfile::tempdir().unwrap();
        fake_disk(sys.path(), "vdc", "", "0");
        let disks = fake_disks(sys.path(), Duration::from_secs(5));
        let dir = sys.path().to_owned();
        let filler = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            fs::write(dir.join("vdc/serial"), "rvm-l-new").unwrap();
            std::thread::sleep(Duration::from_millis(150));
            fs::write(dir.join("vdc/size"), "64\n").unwrap();
        });
        let started = Instant::now();
        assert_eq!(disks.find("rvm-l-new").unwrap(), PathBuf::from("/dev/vdc"));
        assert!(started.elapsed() >= Duration::from_millis(300));
        filler.join().unwrap();
    }

    #[test]
    fn missing_sys_block_is_a_read_error() {
        let disks = fake_disks(Path::new("/nonexistent/sys/block"), Duration::ZERO);
        assert!(matches!(disks.find("x"), Err(DiskError::Read { .. })));
    }

    #[test]
    fn layer_is_unused_only_after_its_last_container() {
        let mut users = LayerUsers::default();
        users.add("base", "a");
        users.add("top-a", "a");
        users.add("base", "b");
        assert_eq!(users.release("a"), vec!["top-a".to_owned()]);
        assert_eq!(users.release("a"), Vec::<String>::new());
        assert_eq!(users.release("b"), vec!["base".to_owned()]);
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
