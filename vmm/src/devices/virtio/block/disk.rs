//! The backing file of a virtio-blk device: opened once at start-up (read-only disks with
//! O_RDONLY), locked (shared for read-only disks, exclusive for read-write ones, so two VMs
//! never write one image or read one another is writing), sized in 512-byte sectors, shared
//! with the device's worker thread.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::request::{SECTOR_SHIFT, SECTOR_SIZE};
use crate::config::DiskSpec;

/// Why a `--disk` cannot be used; every message names the flag and the path.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file cannot be opened with the access the disk needs.
    #[error("--disk {path}: cannot open {mode}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// "read-only" or "read-write".
        mode: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The file's size cannot be found.
    #[error("--disk {path}: cannot find its size: {source}")]
    Size {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds a conflicting lock on the image.
    #[error("--disk {path}: in use by another process (cannot lock it {mode}): {source}")]
    Locked {
        /// The path given.
        path: PathBuf,
        /// "read-only" or "read-write".
        mode: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Directories and other files without a size cannot back a disk.
    #[error("--disk {0}: not a regular file or block device")]
    NotAFile(PathBuf),
}

/// An opened disk image.
#[derive(Clone, Debug)]
pub struct DiskImage {
    /// The path given, for messages.
    pub path: PathBuf,
    /// The open file.
    pub file: Arc<File>,
    /// Capacity in 512-byte sectors (the file's size rounded down).
    pub sectors: u64,
    /// Writes are refused.
    pub read_only: bool,
    /// The ID the guest reads with GET_ID, if any.
    pub serial: Option<String>,
}

impl DiskImage {
    /// Opens the file of `spec` and finds its capacity.
    pub fn open(spec: &DiskSpec) -> Result<DiskImage, DiskError> {
        let path = spec.path.clone();
        let mode = if spec.read_only {
            "read-only"
        } else {
            "read-write"
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!spec.read_only)
            .open(&path)
            .map_err(|source| DiskError::Open {
                path: path.clone(),
                mode,
                source,
            })?;
        let size_error = |source| DiskError::Size {
            path: path.clone(),
            source,
        };
        let kind = file.metadata().map_err(size_error)?.file_type();
        {
            use std::os::unix::fs::FileTypeExt;
            if !kind.is_file() && !kind.is_block_device() {
                return Err(DiskError::NotAFile(path));
            }
        }
        lock(&file, spec.read_only).map_err(|source| DiskError::Locked {
            path: path.clone(),
            mode,
            source,
        })?;
        // Seeking to the end sizes block devices too, whose metadata says 0.
        let bytes = file.seek(SeekFrom::End(0)).map_err(size_error)?;
        if bytes % SECTOR_SIZE != 0 {
            tracing::warn!(
                "--disk {}: {bytes} bytes is not a multiple of {SECTOR_SIZE}; the last {} bytes are not visible to the guest",
                path.display(),
                bytes % SECTOR_SIZE
            );
        }
        Ok(DiskImage {
            path,
            file: Arc::new(file),
            sectors: bytes >> SECTOR_SHIFT,
            read_only: spec.read_only,
            serial: spec.serial.clone(),
        })
    }
}

/// Takes a shared (read-only) or exclusive lock on the whole file, without waiting. The lock
/// lives as long as the open file.
fn lock(file: &File, read_only: bool) -> std::io::Result<()> {
    let operation = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock only acts on our own open descriptor; no memory is passed.
    let result = unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &std::path::Path, read_only: bool) -> DiskSpec {
        DiskSpec {
            path: path.to_path_buf(),
            read_only,
            serial: Some("s1".into()),
        }
    }

    #[test]
    fn sizes_in_sectors_rounding_down() {
        let dir = std::env::temp_dir().join(format!("rvm-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("odd.img");
        std::fs::write(&path, vec![0u8; 3 * 512 + 100]).unwrap();
        let disk = DiskImage::open(&spec(&path, true)).unwrap();
        assert_eq!((disk.sectors, disk.read_only), (3, true));
        assert_eq!(disk.serial.as_deref(), Some("s1"));
        let missing = DiskImage::open(&spec(&dir.join("missing"), false))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("--disk ") && missing.contains("missing"),
            "{missing}"
        );
        let not_file = DiskImage::open(&spec(&dir, true)).unwrap_err().to_string();
        assert!(not_file.contains("not a regular file"), "{not_file}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_write_images_are_locked() {
        let dir = std::env::temp_dir().join(format!("rvm-disk-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let reader = DiskImage::open(&spec(&path, true)).unwrap();
        let second_reader = DiskImage::open(&spec(&path, true)).unwrap();
        let writer = DiskImage::open(&spec(&path, false))
            .unwrap_err()
            .to_string();
        assert!(writer.contains("in use by another process"), "{writer}");
        drop((reader, second_reader));
        let writer = DiskImage::open(&spec(&path, false)).unwrap();
        let reader = DiskImage::open(&spec(&path, true)).unwrap_err().to_string();
        assert!(reader.contains("in use"), "{reader}");
        drop(writer);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
