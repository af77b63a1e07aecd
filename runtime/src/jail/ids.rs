//! One unprivileged user and group ID per running VM, from a configurable range: a VM leases
//! its ID by holding an exclusive `flock` on `<dir>/<id>`, and the lock lives as long as any
//! descriptor of it, the VMM's own included. Two running VMs never share an ID, whichever front
//! end (CLI or shim) started them, and an ID comes free by itself when the VMM is gone.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

/// Where the leases live: machine-wide, whatever state root a front end uses.
pub const LEASE_DIR: &str = "/run/rvm-vmm-ids";
/// The first ID of the default range.
pub const DEFAULT_FIRST: u32 = 200_000;
/// The size of the default range.
pub const DEFAULT_COUNT: u32 = 65_536;
/// `FIRST-LAST` (inclusive) overrides the default range.
pub const RANGE_VAR: &str = "RVM_VMM_IDS";

/// A range of IDs for VMMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u32,
    pub count: u32,
}

/// Why no ID could be leased.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("{RANGE_VAR}={0:?}: expected FIRST-LAST with 0 < FIRST <= LAST < 4294967295")]
    Range(String),
    #[error("cannot lease a VMM user ID under {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("every VMM user ID of {first}-{last} is in use")]
    Exhausted { first: u32, last: u32 },
}

impl Default for IdRange {
    fn default() -> Self {
        Self {
            first: DEFAULT_FIRST,
            count: DEFAULT_COUNT,
        }
    }
}

impl IdRange {
    /// The range `RVM_VMM_IDS` gives, else the default.
    pub fn from_env() -> Result<Self, IdError> {
        match std::env::var(RANGE_VAR) {
            Ok(text) => text.parse(),
            Err(_) => Ok(Self::default()),
        }
    }

    fn last(&self) -> u32 {
        self.first + (self.count - 1)
    }
}

impl std::str::FromStr for IdRange {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Self, IdError> {
        let bad = || IdError::Range(text.to_owned());
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let last: u32 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || last < first || last == u32::MAX {
            return Err(bad());
        }
        Ok(Self {
            first,
            count: last - first + 1,
        })
    }
}

/// A leased ID: held while this value, or a descriptor of its file given to the VMM, lives.
#[derive(Debug)]
pub struct Lease {
    pub id: u32,
    file: File,
}

impl Lease {
    /// The lock file, for the VMM to hold too.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Leases the first free ID of `range`, with its lock file under `dir`.
pub fn lease(dir: &Path, range: IdRange) -> Result<Lease, IdError> {
    let io = |source| IdError::Io {
        dir: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    for id in range.first..=range.last() {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(id.to_string()))
            .map_err(io)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Lease { id, file }),
            Err(rustix::io::Errno::WOULDBLOCK) => continue,
            Err(errno) => return Err(io(errno.into())),
        }
    }
    Err(IdError::Exhausted {
        first: range.first,
        last: range.last(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leases_differ_and_a_dropped_one_comes_free() {
        let dir = tempfile::tempdir().unwrap();
        let range = IdRange {
            first: 300_000,
            count: 2,
        };
        let a = lease(dir.path(), range).unwrap();
        let b = lease(dir.path(), range).unwrap();
        assert_eq!((a.id, b.id), (300_000, 300_001));
        let err = lease(dir.path(), range).unwrap_err();
        assert_eq!(
            err.to_string(),
            "every VMM user ID of 300000-300001 is in use"
        );
        drop(a);
        assert_eq!(lease(dir.path(), range).unwrap().id, 300_000);
    }

    #[test]
    fn a_descriptor_elsewhere_keeps_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let range = IdRange { first: 7, count: 1 };
        let a = lease(dir.path(), range).unwrap();
        let held = a.file().try_clone().unwrap();
        drop(a);
        assert!(lease(dir.path(), range).is_err(), "the copy still holds it");
        drop(held);
        assert_eq!(lease(dir.path(), range).unwrap().id, 7);
    }

    #[test]
    fn ranges_parse_and_refuse_root() {
        assert_eq!(
            "200000-200009".parse::<IdRange>().unwrap(),
            IdRange {
                first: 200_000,
                count: 10
            }
        );
        for bad in ["0-10", "10-9", "x-1", "5", "1-4294967295"] {
            assert!(bad.parse::<IdRange>().is_err(), "{bad}");
        }
    }
}
