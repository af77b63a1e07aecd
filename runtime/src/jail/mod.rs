//! The jail of every `rvm-vmm`, set up by the one place that starts VMMs ([`crate::vm::Vm`]):
//! a user and group ID of its own ([`ids`]), new mount, PID, IPC and UTS namespaces and a
//! cgroup of its own from the first instruction ([`spawn`], [`cgroup`]), and the `--jail`
//! flag, with which the VMM, once its files and sockets are open, pivots into an empty
//! read-only root, drops every capability, becomes that user and sets `no_new_privs`. Its
//! seccomp filter is on by default (`rvm-vmm --seccomp`), and nothing here turns it off.

pub mod cgroup;
pub mod ids;
pub mod spawn;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rvm_vmm::config::JailSpec;
use serde::{Deserialize, Serialize};

use cgroup::VmCgroup;
use ids::{IdError, IdRange, Lease};

/// A failure to prepare a VMM's jail.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("cannot create the jail directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a VM's jail is, for `rvm inspect` and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JailInfo {
    pub uid: u32,
    pub gid: u32,
    /// The directory the VMM's empty root is mounted on (in its own mount namespace).
    pub root: PathBuf,
    /// The VMM's seccomp filter: `enforce`.
    pub seccomp: String,
    /// The VMM's cgroup, if the host has cgroup v2.
    pub cgroup: Option<PathBuf>,
    /// The cgroup limits applied, as `file=value`.
    pub limits: Vec<String>,
}

/// The parts of a VMM's jail that live on the host while it runs.
#[derive(Debug)]
pub struct VmmJail {
    lease: Lease,
    root: PathBuf,
    cgroup: Option<VmCgroup>,
}

impl VmmJail {
    /// Leases an ID, makes the jail directory `root` (empty; the VMM mounts its own root
    /// there) and the cgroup of VM `id`.
    pub fn prepare(root: &Path, id: &str, memory_mib: u64, vcpus: u32) -> Result<Self, JailError> {
        let lease = ids::lease(Path::new(ids::LEASE_DIR), IdRange::from_env()?)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|source| JailError::Dir {
                path: root.to_owned(),
                source,
            })?;
        // A host without a usable cgroup v2 still runs VMs, jailed the same way, but without
        // resource limits: said here, and `"Cgroup": null` in `rvm inspect`.
        let cgroup = match cgroup::cgroup2_mount() {
            Some(mount) => match VmCgroup::create(&mount, id, memory_mib, vcpus) {
                Ok(cgroup) => Some(cgroup),
                Err(err) => {
                    tracing::warn!(%err, "the VMM runs without a cgroup of its own");
                    None
                }
            },
            None => {
                tracing::warn!(
                    "no cgroup v2 on this host: the VMM runs without a cgroup of its own"
                );
                None
            }
        };
        Ok(Self {
            lease,
            root: root.to_owned(),
            cgroup,
        })
    }

    /// The VMM's `--jail` flag.
    pub fn spec(&self) -> JailSpec {
        JailSpec {
            uid: self.lease.id,
            gid: self.lease.id,
            root: self.root.clone(),
        }
    }

    /// The lease's lock file, which the VMM holds for its life.
    pub fn lease_file(&self) -> &std::fs::File {
        self.lease.file()
    }

    /// The cgroup, if any.
    pub fn cgroup(&self) -> Option<&VmCgroup> {
        self.cgroup.as_ref()
    }

    /// What the jail is.
    pub fn info(&self) -> JailInfo {
        JailInfo {
            uid: self.lease.id,
            gid: self.lease.id,
            root: self.root.clone(),
            seccomp: "enforce".to_owned(),
            cgroup: self.cgroup.as_ref().map(|cgroup| cgroup.dir().to_owned()),
            limits: self
                .cgroup
                .as_ref()
                .map(|cgroup| cgroup.limits().to_vec())
                .unwrap_or_default(),
        }
    }
}
