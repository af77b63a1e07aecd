//! A task's VM as the shim asks for it: what containerd's request becomes (a fresh scratch disk,
//! the layer disks, the pod's network, disk slots for a pod's other containers) and the task's
//! container created in it. Booting and driving the VM is [`rvm_runtime::vm::Vm`]'s, the same
//! object `rvm run`'s monitor uses; this module makes it the service's [`GuestAgent`] and
//! [`HostLauncher`] its [`Launcher`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::ttrpc::{self, Code};
use oci_spec::runtime::Spec;
use rvm_protocol::agent::{ExecProcessRequest, ProcessInfo, StatsResponse};
use rvm_protocol::serial::layer_serial;
use rvm_runtime::sandbox::agent::{AgentError, Started};
use rvm_runtime::sandbox::config::VmSize;
use rvm_runtime::sandbox::disks::{self, DiskError, SCRATCH_SIZE};
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::UNKNOWN_EXIT;
use rvm_runtime::sandbox::vmm::DiskArg;
use rvm_runtime::vm::create::layer_disk;
use rvm_runtime::vm::{LayerImage, NewContainer, ProcessEnd, Vm, VmError, VmNetwork, VmSpec};
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::guest::{GuestAgent, Launcher, PodContainer};
use crate::host_files::{self, HostContent, WatchedDirectory};
use crate::layers::{self, RootfsMount, SnapshotCache};
use crate::process::ExecId;
use crate::sizing;
use crate::stdio::{self, StdioPaths};
use crate::volume_updates;

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
async fn boot(layout: &Layout, request: VmRequest<'_>) -> Result<Vm, TaskVmError> {
    let id = request.id;
    let scratch = layout.scratch_path(id);
    layout.create_vm_files(id).map_err(|e| TaskVmError::Dir {
        path: e.path,
        source: e.source,
    })?;
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

/// Creates `container` of the pod in the pod's `vm`, on its layer disks (attached to the VM's
/// free disk slots), with its writes on the pod's scratch disk.
async fn create_in_pod(vm: &Vm, container: PodContainer<'_>) -> Result<(), VmError> {
    let PodContainer {
        id,
        spec,
        disks,
        content,
        terminal,
        stdin,
    } = container;
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
    vm.create_in_pod(container, disks).await
}

#[async_trait]
impl GuestAgent for Vm {
    fn pid(&self) -> u32 {
        Vm::pid(self)
    }

    async fn start(&self, container: &str) -> Result<Started, AgentError> {
        self.session().start(container).await
    }

    async fn exec(&self, request: &ExecProcessRequest) -> Result<Started, AgentError> {
        self.session().exec(request).await
    }

    async fn wait_process(&self, container: &str, exec_id: &ExecId) -> ProcessEnd {
        Vm::wait_process(self, container, exec_id.wire()).await
    }

    async fn signal(
        &self,
        container: &str,
        exec_id: &ExecId,
        signal: u32,
        all: bool,
    ) -> Result<(), AgentError> {
        self.session()
            .signal_processes(container, exec_id.wire(), signal, all)
            .await
    }

    async fn list_processes(&self, container: &str) -> Result<Vec<ProcessInfo>, AgentError> {
        self.session().list_processes(container).await
    }

    async fn pause(&self, container: &str, frozen: bool) -> Result<(), AgentError> {
        self.session().pause(container, frozen).await
    }

    async fn resize(
        &self,
        container: &str,
        exec_id: &ExecId,
        rows: u16,
        columns: u16,
    ) -> Result<(), AgentError> {
        self.session()
            .resize(container, exec_id.wire(), rows, columns)
            .await
    }

    async fn update_resources(&self, container: &str, resources: &[u8]) -> Result<(), AgentError> {
        self.session().update_resources(container, resources).await
    }

    async fn stats(&self, container: &str) -> Result<StatsResponse, AgentError> {
        self.session().stats(container).await
    }

    fn copy_stdio(
        &self,
        container: &str,
        exec_id: &ExecId,
        paths: &StdioPaths,
    ) -> Vec<JoinHandle<()>> {
        stdio::start(self.session(), container, exec_id.wire(), paths)
    }

    fn follow_volumes(
        self: Arc<Self>,
        container: String,
        dirs: Vec<WatchedDirectory>,
        alive: Box<dyn Fn() -> bool + Send>,
    ) {
        volume_updates::follow(Arc::downgrade(&self), container, dirs, alive);
    }

    async fn create_in_pod(&self, container: PodContainer<'_>) -> Result<(), VmError> {
        create_in_pod(self, container).await
    }

    async fn remove_from_pod(&self, container: &str) {
        Vm::remove_from_pod(self, container).await;
    }

    async fn shutdown(&self) {
        Vm::shutdown(self).await;
    }
}

/// Builds layer disks in the shim's layer cache and boots VMs under the namespace's layout.
#[derive(Debug)]
pub struct HostLauncher {
    pub layout: Layout,
    pub layer_cache: SnapshotCache,
}

#[async_trait]
impl Launcher for HostLauncher {
    /// Cached disks from the snapshot's layers, or a private one from the bundle's rootfs.
    async fn layer_disks(
        &self,
        request: &api::CreateTaskRequest,
    ) -> Result<Vec<LayerImage>, ttrpc::Error> {
        let mounts: Vec<RootfsMount> = request
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let bundle_rootfs = Path::new(&request.bundle).join("rootfs");
        let source = layers::source_of(&mounts, &bundle_rootfs)
            .map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
        let cache = self.layer_cache.clone();
        let private = self.layout.container_dir(&request.id).join("rootfs.erofs");
        let _ = self.layout.create_vm_files(&request.id);
        let build_cache = cache.clone();
        let disks = tokio::task::spawn_blocking(move || {
            layers::ensure_disks(&source, &build_cache, &private)
        })
        .await
        .map_err(|e| status(Code::INTERNAL, format!("layer disk builder failed: {e}")))?
        .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
        // After this task's disks have their records, off the task's path: a failed prune only
        // leaves disks for the next one.
        tokio::task::spawn_blocking(move || match layers::prune(&cache) {
            Ok(pruned) => tracing::debug!(
                removed = pruned.removed.len(),
                freed_bytes = pruned.freed_bytes,
                kept = pruned.kept,
                lone_records = pruned.lone_records,
                temps = pruned.temps,
                temp_bytes = pruned.temp_bytes,
                "layer cache pruned"
            ),
            Err(e) => tracing::warn!(error = %e, "layer cache not pruned"),
        });
        Ok(disks)
    }

    async fn boot(&self, request: VmRequest<'_>) -> Result<Arc<dyn GuestAgent>, TaskVmError> {
        let vm: Arc<dyn GuestAgent> = Arc::new(boot(&self.layout, request).await?);
        Ok(vm)
    }
}

fn status(code: Code, message: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

/// The text of the host file the spec binds at `destination`, if it sends one.
fn content_text(content: &HostContent, destination: &str) -> Option<String> {
    host_files::content_at(&content.files, destination).map(str::to_owned)
}

/// Removes the VM's directories (after the VMM has ended, or for a shim that died).
pub fn remove_files(layout: &Layout, id: &str) {
    rvm_runtime::jail::cgroup::remove_leftover(id);
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
