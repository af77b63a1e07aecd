//! What the task service needs of the world outside its own bookkeeping, as two traits: a
//! task's VM and the agent in it ([`GuestAgent`]), and the host side that builds layer disks and
//! boots VMs ([`Launcher`]).
//!
//! The production implementations are [`rvm_runtime::vm::Vm`] and [`crate::vm::HostLauncher`]
//! (both in `vm.rs`). The service's unit tests put a fake guest behind these traits so that the
//! task and exec state machine runs without a VM; the lab suites test the real one.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::ttrpc;
use oci_spec::runtime::Spec;
use rvm_protocol::agent::{ExecProcessRequest, ProcessInfo, StatsResponse};
use rvm_runtime::sandbox::agent::{AgentError, Started};
use rvm_runtime::vm::{ProcessEnd, VmError};
use tokio::task::JoinHandle;

use crate::host_files::{HostContent, WatchedDirectory};
use crate::process::ExecId;
use crate::stdio::StdioPaths;
use crate::vm::{TaskVmError, VmRequest};
use rvm_runtime::vm::LayerImage;

/// A container of a pod to create in the pod's VM.
#[derive(Debug)]
pub struct PodContainer<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    /// Its layer disks, attached to the VM's free disk slots.
    pub disks: &'a [LayerImage],
    pub content: HostContent,
    pub terminal: bool,
    pub stdin: bool,
}

/// A running VM with its agent: the calls the task service makes for the containers in it.
/// `container` is a task id; an [`ExecId`] names one of its processes.
#[async_trait]
pub trait GuestAgent: Send + Sync + Debug {
    /// The host pid that stands for the VM's tasks (the VMM's): guest pids mean nothing on the
    /// host.
    fn pid(&self) -> u32;

    /// Starts the container's init.
    async fn start(&self, container: &str) -> Result<Started, AgentError>;

    /// Starts an exec in the container.
    async fn exec(&self, request: &ExecProcessRequest) -> Result<Started, AgentError>;

    /// Waits for the process to end; a lost VM or agent is reported in [`ProcessEnd::lost`].
    async fn wait_process(&self, container: &str, exec_id: &ExecId) -> ProcessEnd;

    /// Sends `signal` to the process, or with `all` to every process of the container.
    async fn signal(
        &self,
        container: &str,
        exec_id: &ExecId,
        signal: u32,
        all: bool,
    ) -> Result<(), AgentError>;

    async fn list_processes(&self, container: &str) -> Result<Vec<ProcessInfo>, AgentError>;

    /// Freezes (`frozen`) or thaws the container.
    async fn pause(&self, container: &str, frozen: bool) -> Result<(), AgentError>;

    async fn resize(
        &self,
        container: &str,
        exec_id: &ExecId,
        rows: u16,
        columns: u16,
    ) -> Result<(), AgentError>;

    /// Applies containerd's resources (LinuxResources, JSON) to the container.
    async fn update_resources(&self, container: &str, resources: &[u8]) -> Result<(), AgentError>;

    async fn stats(&self, container: &str) -> Result<StatsResponse, AgentError>;

    /// Starts copying a started process's stdio between the agent and containerd's FIFOs; the
    /// returned tasks end with the process's output.
    fn copy_stdio(
        &self,
        container: &str,
        exec_id: &ExecId,
        paths: &StdioPaths,
    ) -> Vec<JoinHandle<()>>;

    /// Follows kubelet's updates of the container's volumes `dirs` while `alive()` holds; it
    /// holds the VM weakly, so it also ends with the VM.
    fn follow_volumes(
        self: Arc<Self>,
        container: String,
        dirs: Vec<WatchedDirectory>,
        alive: Box<dyn Fn() -> bool + Send>,
    );

    /// Creates a container of the pod in this, the pod's, VM.
    async fn create_in_pod(&self, container: PodContainer<'_>) -> Result<(), VmError>;

    /// Removes a pod's container and frees the disk slots only it used; the VM stays.
    async fn remove_from_pod(&self, container: &str);

    /// Ends the VM.
    async fn shutdown(&self);
}

/// The host side of making a task's VM.
#[async_trait]
pub trait Launcher: Send + Sync + Debug {
    /// The read-only layer disks of the task `request` creates, built if not cached.
    async fn layer_disks(
        &self,
        request: &api::CreateTaskRequest,
    ) -> Result<Vec<LayerImage>, ttrpc::Error>;

    /// Boots the task's own VM and creates its container in it.
    async fn boot(&self, request: VmRequest<'_>) -> Result<Arc<dyn GuestAgent>, TaskVmError>;
}
