//! A task's VM as the shim asks for it: what containerd's request becomes (a fresh scratch disk,
//! the layer disks, the pod's network, disk slots for a pod's other containers) and the task's
//! container created in it. Booting and driving the VM is [`rvm_runtime::vm::Vm`]'s, the same
//! object `rvm run`'s monitor uses.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rvm_protocol::serial::layer_serial;
use rvm_runtime::sandbox::config::VmSize;
use rvm_runtime::sandbox::disks::{self, DiskError, SCRATCH_SIZE};
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::UNKNOWN_EXIT;
use rvm_runtime::sandbox::vmm::DiskArg;
use rvm_runtime::vm::create::layer_disk;
use rvm_runtime::vm::{LayerImage, NewContainer, Vm, VmError, VmNetwork, VmSpec};
use thiserror::Error;

use crate::host_files::{self, HostContent};
use crate::sizing;

/// The exit code reported when the real one is lost (the VM ended under the process).
pub const EXIT_UNKNOWN: u32 = UNKNOWN_EXIT as u32;

#[derive(Debug, Error)]
pub enum TaskVmError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Scratch(#[from] DiskError),
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a task's VM is built from.
#[derive(Debug)]
pub struct VmRequest<'a> {
    pub id: &'a str,
    pub spec: Spec,
    /// The VM's memory and vCPUs (see `sizing`).
    pub size: VmSize,
    pub layers: Vec<LayerImage>,
    pub terminal: bool,
    pub stdin: bool,
    /// Disk slots for the pod's other containers (0: a VM of its own).
    pub disk_slots: u32,
    /// Host files and directories the spec binds, sent by content (see `host_files`).
    pub content: HostContent,
    /// The pod's network namespace (made by CNI) whose interface the VM takes over.
    pub netns: Option<PathBuf>,
}

/// Boots the task's VM under `layout` and creates the task's container in it.
pub async fn boot(layout: &Layout, request: VmRequest<'_>) -> Result<Vm, TaskVmError> {
    let id = request.id;
    let scratch = layout.scratch_path(id);
    let dir = layout.container_dir(id);
    std::fs::create_dir_all(&dir).map_err(|source| TaskVmError::Dir { path: dir, source })?;
    let _ = std::fs::remove_file(&scratch);
    disks::create_ext4(&scratch, SCRATCH_SIZE)?;
    let network = match request.netns {
        Some(netns) => VmNetwork::Pod {
            netns,
            resolv_conf: content_text(&request.content, "/etc/resolv.conf"),
            hosts: content_text(&request.content, "/etc/hosts"),
        },
        None => VmNetwork::None,
    };
    let layer_disks = request
        .layers
        .iter()
        .enumerate()
        .map(|(index, disk)| DiskArg {
            path: disk.path.clone(),
            read_only: true,
            serial: layer_serial(index),
        });
    let spec = VmSpec {
        id: id.to_owned(),
        size: request.size,
        disks: layer_disks
            .chain(std::iter::once(VmSpec::scratch_disk(scratch)))
            .collect(),
        disk_slots: request.disk_slots,
        network,
        hostname: request.spec.hostname().clone().unwrap_or_default(),
    };
    let vm = Vm::boot(layout, spec, |_| {}).await?;
    let container = NewContainer {
        id: id.to_owned(),
        layers: request
            .layers
            .iter()
            .enumerate()
            .map(|(index, disk)| layer_disk(&layer_serial(index), &disk.key))
            .collect(),
        spec: request.spec,
        terminal: request.terminal,
        stdin: request.stdin,
        files: request.content.files,
        directories: request.content.directories,
        ..Default::default()
    };
    if let Err(err) = vm.create(&container).await {
        vm.shutdown().await;
        return Err(err.into());
    }
    Ok(vm)
}

/// Creates container `id` of the pod in the pod's `vm`, on its `layers` (attached to the
/// VM's free disk slots), with its writes on the pod's scratch disk.
pub async fn create_in_pod(
    vm: &Vm,
    id: &str,
    spec: &Spec,
    layers: &[LayerImage],
    content: HostContent,
    terminal: bool,
    stdin: bool,
) -> Result<(), VmError> {
    sizing::warn_if_beyond_vm(id, spec, vm.size());
    let container = NewContainer {
        id: id.to_owned(),
        spec: spec.clone(),
        terminal,
        stdin,
        files: content.files,
        directories: content.directories,
        sandbox_namespaces: crate::pod::sandbox_namespaces(spec),
        ..Default::default()
    };
    vm.create_in_pod(container, layers).await
}

/// The text of the host file the spec binds at `destination`, if it sends one.
fn content_text(content: &HostContent, destination: &str) -> Option<String> {
    host_files::content_at(&content.files, destination).map(str::to_owned)
}

/// Removes the VM's directories (after the VMM has ended, or for a shim that died).
pub fn remove_files(layout: &Layout, id: &str) {
    for dir in [layout.run_dir(id), layout.container_dir(id)] {
        remove_dir(&dir);
    }
}

fn remove_dir(dir: &Path) {
    if let Err(err) = std::fs::remove_dir_all(dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %err, "cannot remove the VM's files");
        }
    }
}
