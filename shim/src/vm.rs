//! The microVM of a task or of a pod: its directory, scratch disk, `rvm-vmm` process and agent
//! session, built from the same runtime pieces `rvm run` uses; a pod's VM also has disk slots,
//! which the pod's other containers' layers are attached to through the VMM's API.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_spec::runtime::Spec;
use rvm_protocol::agent::{CreateContainerRequest, LayerDisk};
use rvm_protocol::serial::{layer_serial, slot_serial, SCRATCH_SERIAL};
use rvm_runtime::network::podnet::{self, PodInterface, PodNetError, POD_TAP};
use rvm_runtime::sandbox::agent::{AgentError, AgentSession};
use rvm_runtime::sandbox::artifacts::{self, ArtifactError};
use rvm_runtime::sandbox::config::{ContainerConfig, LayerDiskRef, NetworkMode, VmSize};
use rvm_runtime::sandbox::disks::{self, DiskError, SCRATCH_SIZE};
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::monitor::{self, SHUTDOWN_GRACE};
use rvm_runtime::sandbox::vmm::{SpawnError, VmmCommand};
use thiserror::Error;
use tokio::sync::{watch, Notify};

use crate::host_files::{self, HostContent};
use crate::layers::Disk;
use crate::sizing;
use crate::slots::{SlotError, Slots};

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
    #[error(transparent)]
    Slots(#[from] SlotError),
    #[error("pod network: {0}")]
    PodNet(#[from] PodNetError),
    #[error("attach layer {serial} to disk slot {slot}: {message}")]
    Attach {
        slot: u32,
        serial: String,
        message: String,
    },
}

/// A pod VM's disk slots and the socket of the VMM's API that fills them.
#[derive(Debug)]
struct PodDisks {
    api: PathBuf,
    slots: Mutex<Slots>,
}

/// What a task's VM is built from.
#[derive(Debug)]
pub struct VmRequest<'a> {
    pub id: &'a str,
    pub spec: Spec,
    /// The VM's memory and vCPUs (see `sizing`).
    pub size: VmSize,
    pub layers: Vec<Disk>,
    pub terminal: bool,
    pub stdin: bool,
    /// Disk slots for the pod's other containers (0: a VM of its own).
    pub disk_slots: u32,
    /// Host files and directories the spec binds, sent by content (see `host_files`).
    pub content: HostContent,
    /// The pod's network namespace (made by CNI) whose interface the VM takes over.
    pub netns: Option<PathBuf>,
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
    size: VmSize,
    pod: Option<PodDisks>,
    /// The pod's network namespace holding the VM's TAP.
    netns: Option<PathBuf>,
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
        let size = request.size;
        let hostname = request.spec.hostname().clone().unwrap_or_default();
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
            vm: size,
            network: NetworkMode::None,
            endpoint: None,
            tty: request.terminal,
            open_stdin: request.stdin,
            auto_remove: false,
            stop_signal: None,
        };
        let mut command = VmmCommand::for_container(
            layout,
            &config,
            artifacts::find_vmm()?,
            artifacts::find_guest()?,
        );
        let pod = (request.disk_slots > 0).then(|| PodDisks {
            api: layout.run_dir(id).join("api.sock"),
            slots: Mutex::new(Slots::new(request.disk_slots)),
        });
        command.disk_slots = request.disk_slots;
        command.api = pod.as_ref().map(|pod| pod.api.clone());
        // Joined last before the spawn, so that every earlier failure leaves the namespace as is.
        let interface = match &request.netns {
            Some(netns) => Some(join_pod_network(netns).await?),
            None => None,
        };
        command.net = interface
            .as_ref()
            .map(|interface| format!("tap={POD_TAP},mac={}", interface.mac));
        command.netns = request.netns.clone();
        let _ = std::fs::remove_file(&command.vsock);
        let vmm_log = container_dir.join("vmm.log");
        let mut child = match command.spawn(&vmm_log) {
            Ok(child) => child,
            Err(err) => {
                leave_pod_network(request.netns.clone()).await;
                return Err(err.into());
            }
        };
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
            size,
            pod,
            netns: request.netns.clone(),
        };
        let session = match connected {
            Ok(session) => session,
            Err(err) => {
                kill.notify_one();
                leave_pod_network(request.netns.clone()).await;
                return Err(err.into());
            }
        };
        let vm = vm(session);
        let configured = match &interface {
            Some(interface) => {
                let network = interface.configure_request(
                    &hostname,
                    host_files::content_at(&request.content.files, "/etc/resolv.conf"),
                    host_files::content_at(&request.content.files, "/etc/hosts"),
                );
                vm.session
                    .configure_network(&network)
                    .await
                    .map_err(VmError::from)
            }
            None => Ok(()),
        };
        let create =
            configured.and_then(|()| monitor::create_request(&config).map_err(VmError::Request));
        let created = match create {
            Ok(mut create) => {
                create.files = request.content.files;
                create.directories = request.content.directories;
                vm.session.create(&create).await.map_err(VmError::from)
            }
            Err(err) => Err(err),
        };
        if let Err(err) = created {
            vm.shutdown().await;
            return Err(err);
        }
        Ok(vm)
    }

    /// Creates container `id` of the pod in this (the pod's) VM: attaches its layer `disks` to
    /// free slots (sharing those already attached) and asks the agent to create it on them,
    /// with its writes on the pod's scratch disk. Undone on failure.
    pub async fn create_in_pod(
        &self,
        id: &str,
        spec: &Spec,
        disks: &[Disk],
        content: HostContent,
        terminal: bool,
        stdin: bool,
    ) -> Result<(), VmError> {
        sizing::warn_if_beyond_vm(id, spec, self.size);
        let serials: Vec<String> = disks.iter().map(|disk| slot_serial(&disk.key)).collect();
        let spec_json = serde_json::to_vec(spec)
            .map_err(|e| VmError::Request(format!("cannot serialize the OCI spec of {id}: {e}")))?;
        let request = CreateContainerRequest {
            container_id: id.to_owned(),
            sandbox_id: self.id.clone(),
            oci_spec_json: spec_json,
            layers: disks
                .iter()
                .zip(&serials)
                .map(|(disk, serial)| LayerDisk {
                    serial: serial.clone(),
                    diff_id: disk.key.clone(),
                    ..Default::default()
                })
                .collect(),
            scratch_disk_serial: SCRATCH_SERIAL.to_owned(),
            terminal,
            stdin,
            files: content.files,
            directories: content.directories,
            sandbox_namespaces: crate::pod::sandbox_namespaces(spec),
            ..Default::default()
        };
        let attached = self.attach_layers(id, disks, &serials).await;
        let created = match attached {
            Ok(()) => self.session.create(&request).await.map_err(VmError::from),
            Err(err) => Err(err),
        };
        if created.is_err() {
            self.detach_layers(id).await;
        }
        created
    }

    /// Reserves slots for `container`'s layers and attaches those not attached yet.
    async fn attach_layers(
        &self,
        container: &str,
        disks: &[Disk],
        serials: &[String],
    ) -> Result<(), VmError> {
        let pod = self
            .pod
            .as_ref()
            .ok_or_else(|| VmError::Request(format!("the VM of {} has no disk slots", self.id)))?;
        let attach = lock(&pod.slots).reserve(container, serials)?;
        for new in attach {
            let Some(disk) = serials
                .iter()
                .position(|serial| *serial == new.serial)
                .and_then(|index| disks.get(index))
            else {
                continue;
            };
            let api = pod.api.clone();
            let path = disk.path.clone();
            let serial = new.serial.clone();
            let slot = new.slot;
            let attached =
                tokio::task::spawn_blocking(move || attach_image(&api, slot, &serial, &path))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|result| result);
            let sectors = attached.map_err(|message| VmError::Attach {
                slot: new.slot,
                serial: new.serial.clone(),
                message,
            })?;
            tracing::info!(container, slot = new.slot, serial = %new.serial, sectors, "layer attached");
        }
        Ok(())
    }

    /// Forgets `container`'s slots and detaches those no other container uses (after the agent
    /// removed the container and unmounted its layers). Failures are logged.
    pub async fn detach_layers(&self, container: &str) {
        let Some(pod) = &self.pod else { return };
        let freed = lock(&pod.slots).release(container);
        for slot in freed {
            let api = pod.api.clone();
            let detached =
                tokio::task::spawn_blocking(move || rvm_vmm::api::client::detach(&api, slot)).await;
            match detached {
                Ok(Ok(())) => tracing::info!(container, slot, "disk slot emptied"),
                Ok(Err(err)) => tracing::warn!(container, slot, %err, "disk slot not emptied"),
                Err(err) => tracing::warn!(container, slot, %err, "disk slot not emptied"),
            }
        }
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
        leave_pod_network(self.netns.clone()).await;
        remove_files(&self.layout, &self.id);
    }
}

/// Joins the pod's namespace `netns` to a new TAP (blocking netlink work, off the runtime).
async fn join_pod_network(netns: &Path) -> Result<PodInterface, VmError> {
    let path = netns.to_owned();
    tokio::task::spawn_blocking(move || podnet::connect(&path))
        .await
        .map_err(|e| VmError::Request(format!("pod network setup panicked: {e}")))?
        .map_err(VmError::from)
}

/// Undoes [`join_pod_network`]; the namespace may be gone already.
async fn leave_pod_network(netns: Option<PathBuf>) {
    if let Some(netns) = netns {
        let _ = tokio::task::spawn_blocking(move || podnet::disconnect(&netns)).await;
    }
}

fn lock(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    slots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Opens layer disk `path` read-only and attaches it to `slot` of the VMM at `api`; returns
/// its size in sectors.
fn attach_image(api: &Path, slot: u32, serial: &str, path: &Path) -> Result<u64, String> {
    let image = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    rvm_vmm::api::Client::connect(api)
        .and_then(|mut client| client.attach(slot, serial, &image))
        .map_err(|e| e.to_string())
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
