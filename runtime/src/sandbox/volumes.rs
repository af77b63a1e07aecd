//! Named volumes under `<root>/volumes` (one ext4 image each), as `rvm volume` manages them:
//! create, list, inspect, and remove, which is refused while a container refers to the volume.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use thiserror::Error;

use super::disks::{self, DiskError};
use super::id;
use super::layout::Layout;
use super::volume_check;
use rustix::fs::{flock, FlockOperation};

use super::state::{Containers, StateError, Status};
use super::time;

/// The suffix of a volume's image file.
const IMAGE_SUFFIX: &str = ".ext4";

#[derive(Debug, Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("remove {name}: volume is in use - [{}]", containers.join(", "))]
    InUse {
        name: String,
        containers: Vec<String>,
    },
    #[error("volumes: cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("volume {name:?} is in use by running container {holder}: a volume is attached to one microVM at a time when written to (read-only uses may share it)")]
    Busy { name: String, holder: String },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// One named volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// The ext4 image holding it.
    pub path: PathBuf,
    /// RFC 3339.
    pub created: String,
}

/// The volumes of one root.
#[derive(Debug, Clone)]
pub struct Volumes {
    layout: Layout,
}

impl Volumes {
    pub fn new(layout: &Layout) -> Self {
        Self {
            layout: layout.clone(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.layout
            .volumes_dir()
            .join(format!("{name}{IMAGE_SUFFIX}"))
    }

    /// Creates volume `name` (nothing happens if it exists). Returns it and whether it is new.
    pub fn create(&self, name: &str) -> Result<(Volume, bool), VolumeError> {
        let (_, new) = disks::ensure_volume_new(&self.layout.volumes_dir(), name)?;
        Ok((self.get(name)?, new))
    }

    /// Volume `name`, if it exists.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        if id::check_name(name).is_err() {
            return Err(VolumeError::NotFound(name.to_owned()));
        }
        let path = self.path(name);
        let metadata = match fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => metadata,
            _ => return Err(VolumeError::NotFound(name.to_owned())),
        };
        let created = metadata
            .created()
            .or_else(|_| metadata.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Volume {
            name: name.to_owned(),
            path,
            created: time::format_rfc3339(created),
        })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>, VolumeError> {
        let dir = self.layout.volumes_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(VolumeError::Io {
                    action: "list",
                    path: dir,
                    source,
                })
            }
        };
        let mut volumes = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(IMAGE_SUFFIX) else {
                continue;
            };
            // Temporary files of a volume being made start with '.'.
            if name.starts_with('.') {
                continue;
            }
            if let Ok(volume) = self.get(name) {
                volumes.push(volume);
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// The IDs of the containers (in any state) that refer to volume `name`.
    pub fn users(&self, name: &str) -> Result<Vec<String>, VolumeError> {
        let containers = Containers::open(&self.layout)?;
        Ok(containers
            .list()?
            .into_iter()
            .filter(|c| c.config.volumes.iter().any(|v| v.name == name))
            .map(|c| c.config.id)
            .collect())
    }

    /// Refuses a volume that another VM holds in a conflicting way: any use while one VM writes
    /// to it, a read-write use while others read it. Takes (and releases) the lock `rvm-vmm`
    /// takes on the disk, so the answer matches what the VMM would find.
    pub fn check_available(&self, name: &str, read_only: bool) -> Result<(), VolumeError> {
        let path = self.path(name);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(VolumeError::Io {
                    action: "open",
                    path,
                    source,
                })
            }
        };
        let operation = if read_only {
            FlockOperation::NonBlockingLockShared
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        if flock(&file, operation).is_ok() {
            return Ok(());
        }
        let holders: Vec<String> = Containers::open(&self.layout)?
            .list()?
            .into_iter()
            .filter(|c| c.state.status() != Status::Exited)
            .filter(|c| c.config.volumes.iter().any(|v| v.name == name))
            .map(|c| format!("\"/{}\" ({})", c.config.name, id::short(&c.config.id)))
            .collect();
        Err(VolumeError::Busy {
            name: name.to_owned(),
            holder: if holders.is_empty() {
                "(another rvm-vmm holds its disk)".to_owned()
            } else {
                holders.join(", ")
            },
        })
    }

    /// Removes volume `name` and its data; refused while a container refers to it (as Docker
    /// refuses, even for a stopped container).
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        let volume = self.get(name)?;
        let users = self.users(name)?;
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                containers: users,
            });
        }
        fs::remove_file(&volume.path).map_err(|source| VolumeError::Io {
            action: "remove",
            path: volume.path.clone(),
            source,
        })?;
        let _ = fs::remove_file(volume_check::record_path(&volume.path));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the test may run: mkfs.ext4 is there, or the test fails under CI and is skipped
    /// elsewhere (see `prerequisite`).
    fn have_mkfs() -> bool {
        use crate::sandbox::prerequisite;
        prerequisite::prerequisite(prerequisite::missing_tool("mkfs.ext4", "e2fsprogs"))
    }

    #[test]
    fn create_list_remove() {
        if !have_mkfs() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(&Layout::new(Some(root.path().to_owned())));
        assert!(volumes.list().unwrap().is_empty());
        let (data, new) = volumes.create("data").unwrap();
        assert!(new);
        assert_eq!(data.path, root.path().join("volumes/data.ext4"));
        assert!(
            !volumes.create("data").unwrap().1,
            "second create is a no-op"
        );
        volumes.create("cache").unwrap();
        let names: Vec<_> = volumes
            .list()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["cache", "data"]);
        volumes.remove("data").unwrap();
        assert!(matches!(
            volumes.remove("data"),
            Err(VolumeError::NotFound(name)) if name == "data"
        ));
        assert!(matches!(volumes.get(".."), Err(VolumeError::NotFound(_))));
    }
}
