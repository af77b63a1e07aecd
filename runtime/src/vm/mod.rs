//! One microVM, as every front end drives it (the CLI's per-container monitor, the containerd
//! shim): [`Vm::boot`] is the one place rvm starts a VM. It wires the network, starts `rvm-vmm`
//! and watches it, connects to the agent and configures the guest's network; the [`Vm`] then
//! creates containers (attaching a pod's layers to disk slots), waits for processes telling a
//! lost VM apart from an exit, and shuts the VM down with a grace period.
//!
//! What is not about the VM stays with the front end: the CLI's container store, names, log and
//! attached client; the shim's tasks, FIFOs and events.
//!
//! Undo is in one place per stage: a boot that fails undoes what it did (kills the VMM,
//! unwires the network) before it returns, so the caller has either a running [`Vm`] or nothing.

pub mod create;
pub mod guest;
mod network;
mod pod;
mod process;
pub mod slots;
pub mod stdio;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rvm_protocol::agent::ReturnedFile;
use thiserror::Error;

use crate::jail::{JailInfo, VmmJail};
use crate::network::podnet::PodNetError;
use crate::network::NetworkError;
use rvm_protocol::exit::RUNTIME_ERROR;
use rvm_protocol::serial::SCRATCH_SERIAL;

use crate::sandbox::agent::{AgentError, AgentSession, ExitStatus};
use crate::sandbox::artifacts::{self, ArtifactError};
use crate::sandbox::config::VmSize;
use crate::sandbox::layout::Layout;
use crate::sandbox::state::UNKNOWN_EXIT;
use crate::sandbox::vmm::{DiskArg, SpawnError, VmmCommand, KERNEL_CMDLINE};

pub use create::NewContainer;
pub use network::VmNetwork;
pub use pod::LayerImage;
pub use process::{tail, vm_ended, VmEnd};
pub use slots::SlotError;

use network::Wired;
use pod::PodDisks;
use process::VmmProcess;

/// How long the guest may take to boot to a listening agent, unless `RVM_AGENT_TIMEOUT` says.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the VM may take to end after the agent was asked to shut it down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long a broken agent connection waits for the VMM's end to explain it.
const VM_END_GRACE: Duration = Duration::from_secs(5);

/// A failure to boot a VM or to create a container in it, naming what failed.
#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("pod network: {0}")]
    PodNet(#[from] PodNetError),
    #[error(transparent)]
    Slots(#[from] SlotError),
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize the OCI spec of {id}: {source}")]
    Spec {
        id: String,
        source: serde_json::Error,
    },
    #[error("the VM of {0} has no disk slots")]
    NoSlots(String),
    #[error("attach layer {serial} to disk slot {slot}: {message}")]
    Attach {
        slot: u32,
        serial: String,
        message: String,
    },
    #[error("{0} failed")]
    Task(String),
}

impl VmError {
    /// Docker's exit code for this failure: the agent's verdict on the command (126, 127), else
    /// 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Agent(error) => error.exit_code(),
            _ => RUNTIME_ERROR,
        }
    }

    /// The message a user sees: the agent's own words for an agent error.
    pub fn user_message(&self) -> String {
        match self {
            Self::Agent(error) => error.agent_message(),
            other => other.to_string(),
        }
    }
}

/// What a VM is booted with.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The VM's id: its directories under the layout, its TAP's name.
    pub id: String,
    pub size: VmSize,
    /// Disks present from boot: layers (read-only), the scratch disk, volumes.
    pub disks: Vec<DiskArg>,
    /// Empty read-only disk slots for layers attached later (a pod's containers); 0 for none.
    pub disk_slots: u32,
    pub network: VmNetwork,
    /// The guest's hostname (told to the agent with the network).
    pub hostname: String,
}

impl VmSpec {
    /// The scratch disk at `path`, with the serial the agent looks for.
    pub fn scratch_disk(path: PathBuf) -> DiskArg {
        DiskArg {
            path,
            read_only: false,
            serial: SCRATCH_SERIAL.to_owned(),
        }
    }
}

/// How a process ended: its own status, or the VM's end that took it down.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessEnd {
    pub status: ExitStatus,
    /// Host files the agent returned at a container's exit (see `HostFile.return_max_bytes`).
    pub files: Vec<ReturnedFile>,
    /// Why the status is not the process's own (the VM ended under it, the agent was lost).
    pub lost: Option<String>,
}

impl ProcessEnd {
    fn lost(code: i32, reason: String) -> Self {
        Self {
            status: ExitStatus {
                code,
                oom_killed: false,
            },
            files: Vec::new(),
            lost: Some(reason),
        }
    }
}

/// The agent-boot timeout from `RVM_AGENT_TIMEOUT` (seconds), else the default.
pub fn agent_timeout() -> Duration {
    std::env::var("RVM_AGENT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_AGENT_TIMEOUT)
}

/// A running VM with a connected agent.
#[derive(Debug)]
pub struct Vm {
    id: String,
    layout: Layout,
    size: VmSize,
    session: AgentSession,
    vmm: VmmProcess,
    network: Wired,
    pod: Option<PodDisks>,
}

fn create_dir(path: &Path) -> Result<(), VmError> {
    std::fs::create_dir_all(path).map_err(|source| VmError::Dir {
        path: path.to_owned(),
        source,
    })
}

impl Vm {
    /// Boots VM `spec` under `layout` to a connected agent with its network configured.
    /// `started` learns the VMM's pid as soon as it runs (before the guest has booted).
    pub async fn boot(
        layout: &Layout,
        spec: VmSpec,
        started: impl FnOnce(u32),
    ) -> Result<Self, VmError> {
        let id = spec.id.as_str();
        create_dir(&layout.container_dir(id))?;
        create_dir(&layout.run_dir(id))?;
        let vmm_path = artifacts::find_vmm()?;
        let guest = artifacts::find_guest()?;
        let network = network::wire(layout.root(), id, &spec.network, &spec.hostname).await?;
        let pod = (spec.disk_slots > 0)
            .then(|| PodDisks::new(layout.run_dir(id).join("api.sock"), spec.disk_slots));
        let command = VmmCommand {
            vmm: vmm_path,
            guest,
            cmdline: KERNEL_CMDLINE.to_owned(),
            memory_mib: spec.size.memory_mib,
            vcpus: spec.size.vcpus,
            disks: spec.disks.clone(),
            vsock: layout.vsock_path(id),
            console_log: layout.console_path(id),
            net: network.vmm_arg.clone(),
            disk_slots: spec.disk_slots,
            api: pod.as_ref().map(|pod| pod.api.clone()),
            netns: network.netns.clone(),
        };
        let _ = std::fs::remove_file(&command.vsock);
        let jail_root = layout.run_dir(id).join("jail");
        let started_vmm = VmmJail::prepare(&jail_root, id, spec.size.memory_mib, spec.size.vcpus)
            .map_err(|source| SpawnError::Jail {
                path: command.vmm.clone(),
                source,
            })
            .and_then(|jail| {
                VmmProcess::start(&command, layout.container_dir(id).join("vmm.log"), jail)
            });
        let vmm = match started_vmm {
            Ok(vmm) => vmm,
            Err(err) => {
                network.unwire().await;
                return Err(err.into());
            }
        };
        started(vmm.pid());
        let connected = AgentSession::connect(&command.vsock, agent_timeout(), || {
            vmm.end().map(|end| end.reason)
        })
        .await;
        let session = match connected {
            Ok(session) => session,
            Err(err) => {
                vmm.kill().await;
                network.unwire().await;
                return Err(err.into());
            }
        };
        let vm = Self {
            id: id.to_owned(),
            layout: layout.clone(),
            size: spec.size,
            session,
            vmm,
            network,
            pod,
        };
        if let Some(request) = &vm.network.guest {
            if let Err(err) = vm.session.configure_network(request).await {
                vm.shutdown().await;
                return Err(err.into());
            }
        }
        Ok(vm)
    }

    /// The VM's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host pid of `rvm-vmm`.
    pub fn pid(&self) -> u32 {
        self.vmm.pid()
    }

    /// The VMM's jail: its user, root, seccomp mode and cgroup.
    pub fn jail(&self) -> &JailInfo {
        self.vmm.jail()
    }

    /// The VM's memory and vCPUs.
    pub fn size(&self) -> VmSize {
        self.size
    }

    /// The agent, for the calls that need nothing of the VM (start, signals, stdio, stats...).
    pub fn session(&self) -> &AgentSession {
        &self.session
    }

    /// Creates `container` on the disks the VM booted with.
    pub async fn create(&self, container: &NewContainer) -> Result<(), VmError> {
        let request = container
            .request(&self.id)
            .map_err(|source| VmError::Spec {
                id: container.id.clone(),
                source,
            })?;
        self.session.create(&request).await?;
        Ok(())
    }

    /// Creates `container` of the pod in this (the pod's) VM: attaches its `layers` to free
    /// disk slots (sharing those attached already) and creates it on them. Undone on failure.
    pub async fn create_in_pod(
        &self,
        mut container: NewContainer,
        layers: &[LayerImage],
    ) -> Result<(), VmError> {
        let pod = self
            .pod
            .as_ref()
            .ok_or_else(|| VmError::NoSlots(self.id.clone()))?;
        let created = match pod.attach(&container.id, layers).await {
            Ok(serials) => {
                container.layers = serials
                    .iter()
                    .zip(layers)
                    .map(|(serial, layer)| create::layer_disk(serial, &layer.key))
                    .collect();
                self.create(&container).await
            }
            Err(err) => Err(err),
        };
        if created.is_err() {
            pod.detach(&container.id).await;
        }
        created
    }

    /// Removes pod container `id` from the agent and empties the disk slots only it used.
    pub async fn remove_from_pod(&self, id: &str) {
        if let Err(err) = self.session.remove(id).await {
            tracing::warn!(id, %err, "the agent did not remove the container");
        }
        if let Some(pod) = &self.pod {
            pod.detach(id).await;
        }
    }

    /// Waits for process `exec` (`""`: the init) of `container` to end. A broken agent
    /// connection is explained by the VM's end when it comes within a few seconds; a VM that
    /// ended takes its processes down with [`VmEnd::code`].
    pub async fn wait_process(&self, container: &str, exec: &str) -> ProcessEnd {
        tokio::select! {
            waited = self.session.wait_with_files(container, exec) => match waited {
                Ok((status, files)) => ProcessEnd { status, files, lost: None },
                Err(err) => match tokio::time::timeout(VM_END_GRACE, self.vmm.ended()).await {
                    Ok(end) => ProcessEnd::lost(end.code, end.reason),
                    Err(_) => ProcessEnd::lost(
                        UNKNOWN_EXIT,
                        format!("lost the process's exit status: {err}"),
                    ),
                },
            },
            end = self.vmm.ended() => ProcessEnd::lost(end.code, end.reason),
        }
    }

    /// Waits until the VMM has ended; says how.
    pub async fn ended(&self) -> VmEnd {
        self.vmm.ended().await
    }

    /// Ends the VM: asks the agent to shut it down, kills the VMM after the grace period,
    /// unwires the network and removes the VM's sockets. The VM's directory (logs, scratch disk)
    /// stays for the front end to keep or remove.
    pub async fn shutdown(&self) {
        if self.vmm.end().is_none() {
            if let Err(err) = self.session.shutdown().await {
                tracing::warn!(%err, "Shutdown call failed; the VMM will be killed");
                self.vmm.kill().await;
            } else {
                self.vmm.stop(SHUTDOWN_GRACE).await;
            }
        }
        self.network.unwire().await;
        let run_dir = self.layout.run_dir(&self.id);
        if let Err(err) = std::fs::remove_dir_all(&run_dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %run_dir.display(), %err, "cannot remove the VM's sockets");
            }
        }
    }
}
