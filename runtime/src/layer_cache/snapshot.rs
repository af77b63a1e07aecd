//! The snapshot-directory source kind: an immutable directory (a containerd layer snapshot)
//! identified by its path, device and inode. It is gone when nothing is at the path any more, or
//! another directory is (another device or inode): a snapshot removed and perhaps re-created
//! gets a new key, so it never finds the old disk.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::source::{self, Liveness, RecordError, Source};

/// A snapshot directory with the device and inode it had when its disk was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDir {
    pub dir: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

impl SnapshotDir {
    /// The directory `dir` as it is now.
    pub fn of(dir: &Path) -> io::Result<Self> {
        let meta = fs::metadata(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether the directory is still the one the disk was built from. Only "not found" says
    /// gone: any other failure to stat it cannot tell.
    pub fn liveness(&self) -> Liveness {
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => Liveness::Live,
            Ok(_) => Liveness::Gone("replaced by another directory"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Liveness::Gone("removed"),
            Err(e) => Liveness::Unknown(format!("cannot stat {}: {e}", self.dir.display())),
        }
    }
}

impl Source for SnapshotDir {
    /// The first 16 bytes of SHA-256 over the path, device and inode, in hex.
    fn key(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.dir.as_os_str().as_bytes());
        hasher.update(self.dev.to_le_bytes());
        hasher.update(self.ino.to_le_bytes());
        let digest = hasher.finalize();
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn is_key(name: &str) -> bool {
        source::is_hex(name, 32)
    }

    /// `dev N`, `ino N` and `dir PATH` lines; the path is everything after `dir ` up to the
    /// final newline, so any path fits.
    fn to_record(&self) -> Vec<u8> {
        let mut bytes = format!("dev {}\nino {}\ndir ", self.dev, self.ino).into_bytes();
        bytes.extend_from_slice(self.dir.as_os_str().as_bytes());
        bytes.push(b'\n');
        bytes
    }

    fn parse_record(bytes: &[u8]) -> Result<Self, RecordError> {
        let number = |value: &[u8], line, expected| {
            std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or(RecordError { line, expected })
        };
        let (dev, rest) = source::field(bytes, 1, "dev", "dev <number>")?;
        let dev = number(dev, 1, "dev <number>")?;
        let (ino, rest) = source::field(rest, 2, "ino", "ino <number>")?;
        let ino = number(ino, 2, "ino <number>")?;
        let dir = rest
            .strip_prefix(b"dir ")
            .and_then(|path| path.strip_suffix(b"\n"))
            .filter(|path| !path.is_empty())
            .ok_or(RecordError {
                line: 3,
                expected: "dir <path>",
            })?;
        Ok(Self {
            dir: PathBuf::from(OsStr::from_bytes(dir)),
            dev,
            ino,
        })
    }

    /// A hash names nothing.
    fn from_key(_key: &str) -> Option<Self> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_named() {
        let record = SnapshotDir {
            dir: PathBuf::from("/var/lib/containerd/snapshots/12/fs with space"),
            dev: 2049,
            ino: 1_234_567,
        };
        let bytes = record.to_record();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "dev 2049\nino 1234567\ndir /var/lib/containerd/snapshots/12/fs with space\n"
        );
        assert_eq!(SnapshotDir::parse_record(&bytes).unwrap(), record);
        // Any byte but the last newline belongs to the path.
        let odd = SnapshotDir {
            dir: PathBuf::from(OsStr::from_bytes(b"/s/a\nb\xff")),
            ..record.clone()
        };
        assert_eq!(SnapshotDir::parse_record(&odd.to_record()).unwrap(), odd);
        let bad = |line, expected| Err(RecordError { line, expected });
        assert_eq!(
            SnapshotDir::parse_record(b"ino 1\ndev 2\ndir /x\n"),
            bad(1, "dev <number>")
        );
        assert_eq!(
            SnapshotDir::parse_record(b"dev 1\nino x\ndir /x\n"),
            bad(2, "ino <number>")
        );
        assert_eq!(
            SnapshotDir::parse_record(b"dev 1\nino 2\ndir /x"),
            bad(3, "dir <path>")
        );
        assert_eq!(
            SnapshotDir::parse_record(b"dev 1\nino 2\n"),
            bad(3, "dir <path>")
        );
        assert_eq!(
            RecordError {
                line: 2,
                expected: "ino <number>"
            }
            .to_string(),
            "line 2 is not `ino <number>`"
        );
    }

    #[test]
    fn keys_follow_path_device_and_inode() {
        let record = SnapshotDir {
            dir: PathBuf::from("/s/1/fs"),
            dev: 1,
            ino: 2,
        };
        let key = record.key();
        assert!(SnapshotDir::is_key(&key), "{key}");
        let moved = SnapshotDir {
            dir: PathBuf::from("/s/2/fs"),
            ..record.clone()
        };
        let reused = SnapshotDir {
            ino: 3,
            ..record.clone()
        };
        assert_ne!(moved.key(), key);
        assert_ne!(reused.key(), key);
        assert_eq!(record.key(), key);
        assert_eq!(SnapshotDir::from_key(&key), None);
    }

    #[test]
    fn liveness_follows_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fs");
        fs::create_dir(&dir).unwrap();
        let record = SnapshotDir::of(&dir).unwrap();
        assert_eq!(record.liveness(), Liveness::Live);
        // Made before the old one goes, so that its inode differs.
        let new = tmp.path().join("fs.new");
        fs::create_dir(&new).unwrap();
        fs::remove_dir(&dir).unwrap();
        fs::rename(&new, &dir).unwrap();
        assert_eq!(
            record.liveness(),
            Liveness::Gone("replaced by another directory")
        );
        fs::remove_dir(&dir).unwrap();
        assert_eq!(record.liveness(), Liveness::Gone("removed"));
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let under_file = SnapshotDir {
            dir: file.join("fs"),
            ..record
        };
        assert!(
            matches!(under_file.liveness(), Liveness::Unknown(ref why) if why.contains("file/fs")),
            "{:?}",
            under_file.liveness()
        );
    }
}
