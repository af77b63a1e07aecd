//! The microVM of a task: its directory, scratch disk, `rvm-vmm` process and agent session,
//! built from the same runtime pieces `rvm run` uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::Spec;
use rvm_runtime::sandbox::agent::{AgentError, AgentSession};
use rvm_runtime::sandbox::artifacts::{self, ArtifactError};
use rvm_runtime::sandbox::config::{layer_serial, ContainerConfig, LayerDiskRef, NetworkMode};
use rvm_runtime::sandbox::disks::{self, DiskError, SCRATCH_SIZE};
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::monitor::{self, SHUTDOWN_GRACE};
use rvm_runtime::sandbox::prepare;
use rvm_runtime::sandbox::vmm::{SpawnError, VmmCommand};
use thiserror::Error;
use tokio::sync::{watch, Notify};

use crate::layers::Disk;

/// The exit code reported when the real one is lost (the VM ended under the process).
pub const EXIT_UNKNOWN: u32 = 255;

#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Request(String),
}

/// What a task's VM is built from.
#[derive(Debug)]
pub struct VmRequest<'a> {
    pub id: &'a str,
    pub spec: Spec,
    pub layers: Vec<Disk>,
    pub terminal: bool,
    pub stdin: bool,
}

/// How the VMM ended: the exit code to report for processes it took down, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEnd {
    pub code: u32,
    pub reason: String,
}

/// A running VM with its agent.
#[derive(Debug)]
pub struct Vm {
    pub session: AgentSession,
    /// The host pid of `rvm-vmm`.
    pub pid: u32,
    layout: Layout,
    id: String,
    ended: watch::Receiver<Option<VmEnd>>,
    kill: Arc<Notify>,
}

/// The container limit of the spec, for sizing the VM.
fn memory_limit(spec: &Spec) -> Option<u64> {
    let limit = spec
        .linux()
        .as_ref()?
        .resources()
        .as_ref()?
        .memory()
        .as_ref()?
        .limit()?;
    u64::try_from(limit).ok().filter(|l| *l > 0)
}

/// vCPUs for the spec's CPU quota (at least one).
fn vcpus(spec: &Spec) -> u32 {
    let cpu = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref());
    match cpu.and_then(|c| Some((c.quota()?, c.period()?))) {
        Some((quota, period)) if quota > 0 && period > 0 => {
            (quota as u64).div_ceil(period).clamp(1, 64) as u32
        }
        _ => 1,
    }
}

fn create_dir(path: &Path) -> Result<(), VmError> {
    std::fs::create_dir_all(path).map_err(|source| VmError::Dir {
        path: path.to_owned(),
        source,
    })
}

impl Vm {
    /// Boots the VM under `layout` and creates the container in it.
    pub async fn boot(layout: &Layout, request: VmRequest<'_>) -> Result<Self, VmError> {
        let id = request.id;
        let container_dir = layout.container_dir(id);
        create_dir(&container_dir)?;
        create_dir(&layout.run_dir(id))?;
        let scratch = layout.scratch_path(id);
        let _ = std::fs::remove_file(&scratch);
        disks::create_ext4(&scratch, SCRATCH_SIZE)?;
        let vm = prepare::vm_size(memory_limit(&request.spec), vcpus(&request.spec));
        let config = ContainerConfig {
            id: id.to_owned(),
            name: id.to_owned(),
            image: String::new(),
            image_id: String::new(),
            created: String::new(),
            spec: request.spec,
            layers: request
                .layers
                .iter()
                .enumerate()
                .map(|(index, disk)| LayerDiskRef {
                    path: disk.path.clone(),
                    diff_id: disk.key.clone(),
                    serial: layer_serial(index),
                })
                .collect(),
            scratch,
            volumes: Vec::new(),
            vm,
            network: NetworkMode::None,
            endpoint: None,
            tty: request.terminal,
            open_stdin: request.stdin,
            auto_remove: false,
            stop_signal: None,
        };
        let command = VmmCommand::for_container(
            layout,
            &config,
            artifacts::find_vmm()?,
            artifacts::find_guest()?,
        );
        let _ = std::fs::remove_file(&command.vsock);
        let vmm_log = container_dir.join("vmm.log");
        let mut child = command.spawn(&vmm_log)?;
        let pid = child.id().unwrap_or_default();
        let (ended_tx, ended) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let console = command.console_log.clone();
        tokio::spawn({
            let kill = kill.clone();
            async move {
                let status = tokio::select! {
                    status = child.wait() => status,
                    () = kill.notified() => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                tracing::info!(?status, "VMM ended");
                let (code, reason) = monitor::vm_ended(status.ok());
                let _ = ended_tx.send(Some(VmEnd {
                    code: u32::try_from(code).unwrap_or(EXIT_UNKNOWN),
                    reason: format!(
                        "{reason}; VMM log: {}; console: {}",
                        monitor::tail(&vmm_log),
                        monitor::tail(&console)
                    ),
                }));
            }
        });
        let vm_ended = ended.clone();
        let connected = AgentSession::connect(&command.vsock, monitor::agent_timeout(), || {
            vm_ended.borrow().as_ref().map(|end| end.reason.clone())
        })
        .await;
        let vm = |session| Self {
            session,
            pid,
            layout: layout.clone(),
            id: id.to_owned(),
            ended: ended.clone(),
            kill: kill.clone(),
        };
        let session = match connected {
            Ok(session) => session,
            Err(err) => {
                kill.notify_one();
                return Err(err.into());
            }
        };
        let vm = vm(session);
        let create = monitor::create_request(&config).map_err(VmError::Request);
        let created = match create {
            Ok(request) => vm.session.create(&request).await.map_err(VmError::from),
            Err(err) => Err(err),
        };
        if let Err(err) = created {
            vm.shutdown().await;
            return Err(err);
        }
        Ok(vm)
    }

    /// Waits until the VMM has ended; says how.
    pub async fn ended(&self) -> VmEnd {
        let mut ended = self.ended.clone();
        loop {
            if let Some(end) = ended.borrow_and_update().clone() {
                return end;
            }
            if ended.changed().await.is_err() {
                return VmEnd {
                    code: EXIT_UNKNOWN,
                    reason: "the VMM watcher is gone".to_owned(),
                };
            }
        }
    }

    fn has_ended(&self) -> bool {
        self.ended.borrow().is_some()
    }

    /// Asks the agent to end the VM, kills the VMM after the grace period, and removes the
    /// VM's files (scratch disk, sockets, logs).
    pub async fn shutdown(&self) {
        if !self.has_ended() {
            if let Err(err) = self.session.shutdown().await {
                tracing::warn!(%err, "Shutdown call failed; the VMM will be killed");
            }
            if tokio::time::timeout(SHUTDOWN_GRACE, self.ended())
                .await
                .is_err()
            {
                tracing::warn!("VMM did not end after shutdown; killing it");
                self.kill.notify_one();
                let _ = tokio::time::timeout(Duration::from_secs(10), self.ended()).await;
            }
        }
        remove_files(&self.layout, &self.id);
    }
}

/// Removes the VM's directories (after the VMM has ended, or for a shim that died).
pub fn remove_files(layout: &Layout, id: &str) {
    for dir in [layout.run_dir(id), layout.container_dir(id)] {
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), %err, "cannot remove the VM's files");
            }
        }
    }
}
