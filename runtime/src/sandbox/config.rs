//! A container's fixed configuration (`config.json`), written once when it is created: what the
//! monitor needs to boot its VM and create it in the agent, and what `ps`/`inspect` show.

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use super::log::LogConfig;
use crate::network::Endpoint;

/// A read-only erofs layer disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDiskRef {
    pub path: PathBuf,
    pub diff_id: String,
    pub serial: String,
}

/// A named volume attached as a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRef {
    pub name: String,
    pub path: PathBuf,
    pub serial: String,
    pub destination: String,
    pub read_only: bool,
}

/// A host block device attached as a disk (`--device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRef {
    /// The host's block device.
    pub host_path: PathBuf,
    pub serial: String,
    /// The node's path in the container.
    pub container_path: String,
    /// A non-empty subset of `rwm`; without `w` the disk is attached read-only.
    pub permissions: String,
}

/// The VM's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSize {
    pub memory_mib: u64,
    pub vcpus: u32,
}

/// How the container reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only.
    None,
    /// On the `rvm0` bridge (Docker's default).
    Bridge,
}

/// Everything fixed at `rvm create`/`rvm run` time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image ID (config digest).
    pub image_id: String,
    /// RFC 3339 with nanoseconds.
    pub created: String,
    /// The OCI runtime spec sent to the agent.
    pub spec: Spec,
    pub layers: Vec<LayerDiskRef>,
    pub scratch: PathBuf,
    pub volumes: Vec<VolumeRef>,
    pub vm: VmSize,
    pub network: NetworkMode,
    /// The container's address, TAP and published ports with `--network bridge`.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// `-t`: a pty in the guest.
    pub tty: bool,
    /// `-i`: keep stdin open.
    pub open_stdin: bool,
    /// `--rm`: delete everything when the container exits.
    pub auto_remove: bool,
    /// The image's StopSignal (Docker's default is SIGTERM).
    pub stop_signal: Option<String>,
    /// `--privileged`: every capability and device of the VM, no seccomp filter.
    #[serde(default)]
    pub privileged: bool,
    /// `--device`: host block devices given to the container.
    #[serde(default)]
    pub devices: Vec<DeviceRef>,
    /// `--log-driver` and `--log-opt`; a container created before they were kept has the
    /// bounded defaults.
    #[serde(default)]
    pub log: LogConfig,
}

impl ContainerConfig {
    /// The command line as `ps` shows it.
    pub fn command(&self) -> String {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default()
            .join(" ")
    }

    /// The hostname given to the container.
    pub fn hostname(&self) -> String {
        self.spec.hostname().clone().unwrap_or_default()
    }
}
