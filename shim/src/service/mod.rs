//! The Task API of the shim: a task is a container in its own microVM, or, for a pod, in the
//! VM its sandbox task booted; calls become agent RPCs, process exits become TaskExit events.
//!
//! The service owns the tasks' and processes' states; the VMs, the host work of making them and
//! containerd's event stream are behind [`GuestAgent`], [`Launcher`] and [`EventSink`], so the
//! state machine is unit-tested (`tests.rs`) against a fake guest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, Code};
use containerd_shim_protos::types::task::{ProcessInfo, Status as TaskStatus};
use oci_spec::runtime::Spec;
use rvm_protocol::agent::ExecProcessRequest;
use rvm_runtime::sandbox::agent::Started;
use rvm_runtime::sandbox::layout::Layout;
use tokio::task::JoinHandle;

use crate::events::Events;
use crate::guest::{GuestAgent, Launcher, PodContainer};
use crate::host_files::{self, HostContent};
use crate::layers::SnapshotCache;
use crate::metrics;
use crate::pod::{self, Role};
use crate::process::{timestamp, ExecId, Process, Status};
use crate::seccomp::{self, Unprofiled};
use crate::sizing::{self, HostLimits};
use crate::stdio::StdioPaths;
use crate::vm::{self, HostLauncher, VmRequest, EXIT_UNKNOWN};

#[cfg(test)]
mod tests;

/// How long output may keep draining after a process exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Disk slots of a pod's VM: at most this many distinct layers for the pod's containers.
pub const POD_DISK_SLOTS: u32 = 8;

type TtrpcResult<T> = Result<T, ttrpc::Error>;

fn status(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

/// A task: the container and the VM it runs in.
#[derive(Debug)]
struct Container {
    id: String,
    bundle: String,
    vm: Arc<dyn GuestAgent>,
    /// A container of a pod in the VM its sandbox owns: deleting it removes the container and
    /// empties its slots, the VM stays.
    in_pod: bool,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    paused: AtomicBool,
    /// Host files the init's exit writes back (kubelet's termination message).
    returned: Vec<host_files::ReturnedBind>,
    /// Volumes kubelet updates in place, followed once the init runs.
    watched: Vec<host_files::WatchedDirectory>,
}

/// What of a task's host content matters after its create.
#[derive(Debug, Default)]
struct Kept {
    returned: Vec<host_files::ReturnedBind>,
    watched: Vec<host_files::WatchedDirectory>,
}

impl Container {
    fn process(&self, exec_id: &ExecId) -> TtrpcResult<Arc<Process>> {
        let ExecId::Exec(exec_id) = exec_id else {
            return Ok(self.init.clone());
        };
        self.execs
            .lock()
            .ok()
            .and_then(|execs| execs.get(exec_id).cloned())
            .ok_or_else(|| {
                status(
                    Code::NOT_FOUND,
                    format!("exec {exec_id} of task {} not found", self.id),
                )
            })
    }
}

/// Where the service's events go: containerd's event stream ([`Events`]) in production.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes `event` on `topic`; failures are the sink's to log, as containerd retries
    /// nothing.
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>);
}

#[async_trait]
impl EventSink for Events {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        Events::publish(self, topic, event).await;
    }
}

/// The task service of one shim.
pub struct Service {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    events: Arc<dyn EventSink>,
    exit: Arc<ExitSignal>,
    layout: Layout,
    launcher: Arc<dyn Launcher>,
    /// What a container whose spec has no seccomp profile gets; a bad configuration fails
    /// every create, naming it.
    unprofiled: Result<Unprofiled, seccomp::ConfigError>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// The service of a shim whose VMs are real and whose events go to containerd.
    pub fn new(
        events: Events,
        exit: Arc<ExitSignal>,
        layout: Layout,
        layer_cache: SnapshotCache,
    ) -> Self {
        let launcher = HostLauncher {
            layout: layout.clone(),
            layer_cache,
        };
        let unprofiled = Unprofiled::from_env();
        match &unprofiled {
            Ok(unprofiled) => {
                tracing::info!(?unprofiled, "seccomp of containers without a profile")
            }
            Err(err) => {
                tracing::error!(%err, "bad seccomp configuration: every task will fail to create")
            }
        }
        Self::with_parts(
            Arc::new(events),
            exit,
            layout,
            Arc::new(launcher),
            unprofiled,
        )
    }

    fn with_parts(
        events: Arc<dyn EventSink>,
        exit: Arc<ExitSignal>,
        layout: Layout,
        launcher: Arc<dyn Launcher>,
        unprofiled: Result<Unprofiled, seccomp::ConfigError>,
    ) -> Self {
        Self {
            containers: Mutex::new(HashMap::new()),
            events,
            exit,
            layout,
            launcher,
            unprofiled,
        }
    }

    fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        self.containers
            .lock()
            .ok()
            .and_then(|containers| containers.get(id).cloned())
            .ok_or_else(|| status(Code::NOT_FOUND, format!("task {id} not found")))
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        self.events.publish(topic, event).await;
    }

    /// Builds the layer disks, boots the VM (with disk slots for a pod's sandbox) and creates
    /// the container in it.
    async fn boot(
        &self,
        request: &api::CreateTaskRequest,
        spec: Spec,
        content: HostContent,
        disk_slots: u32,
        netns: Option<PathBuf>,
    ) -> TtrpcResult<Arc<dyn GuestAgent>> {
        // Before any work: a pod refused for its sizing annotations should fail at once.
        let size = sizing::vm_size(&spec, HostLimits::of_host())
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("task {}: {e}", request.id)))?;
        tracing::info!(id = %request.id, memory_mib = size.memory_mib, vcpus = size.vcpus, "VM size");
        let disks = self.launcher.layer_disks(request).await?;
        self.launcher
            .boot(VmRequest {
                id: &request.id,
                spec,
                size,
                layers: disks,
                terminal: request.terminal,
                stdin: !request.stdin.is_empty(),
                disk_slots,
                content,
                netns,
            })
            .await
            .map_err(|e| status(Code::INTERNAL, format!("task {}: {e}", request.id)))
    }

    /// Creates a pod's container in the VM of its sandbox task `sandbox_id`.
    async fn join_pod(
        &self,
        request: &api::CreateTaskRequest,
        spec: &Spec,
        content: HostContent,
        sandbox_id: &str,
    ) -> TtrpcResult<Arc<dyn GuestAgent>> {
        let sandbox = self.container(sandbox_id).map_err(|_| {
            status(
                Code::FAILED_PRECONDITION,
                format!(
                    "task {}: its pod's sandbox {sandbox_id} is not running in this shim",
                    request.id
                ),
            )
        })?;
        let disks = self.launcher.layer_disks(request).await?;
        let vm = sandbox.vm.clone();
        vm.create_in_pod(PodContainer {
            id: &request.id,
            spec,
            disks: &disks,
            content,
            terminal: request.terminal,
            stdin: !request.stdin.is_empty(),
        })
        .await
        .map_err(|e| status(Code::INTERNAL, format!("task {}: {e}", request.id)))?;
        Ok(vm)
    }

    /// The VM the task runs in, after creating the container: its own (a standalone task or a
    /// pod's sandbox) or its pod's. Says whether it is the pod's, which host files come back at
    /// the exit, and which volumes kubelet may update.
    async fn create_container(
        &self,
        request: &api::CreateTaskRequest,
        mut spec: Spec,
    ) -> TtrpcResult<(Arc<dyn GuestAgent>, bool, Kept)> {
        let role = pod::role(spec.annotations().as_ref());
        tracing::info!(id = %request.id, ?role, "task role");
        self.settle_seccomp(&request.id, &mut spec)?;
        let content = host_files::translate(&mut spec)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("task {}: {e}", request.id)))?;
        let kept = Kept {
            returned: content.returned.clone(),
            watched: content.watched.clone(),
        };
        let (disk_slots, netns) = match role {
            Role::Container { sandbox_id } => {
                let joined = self.join_pod(request, &spec, content, &sandbox_id).await;
                if joined.is_err() {
                    let _ = std::fs::remove_dir_all(self.layout.container_dir(&request.id));
                }
                return Ok((joined?, true, kept));
            }
            Role::Sandbox { .. } => (POD_DISK_SLOTS, pod::network_namespace(&spec)),
            Role::Standalone => (0, None),
        };
        match self.boot(request, spec, content, disk_slots, netns).await {
            Ok(vm) => Ok((vm, false, kept)),
            Err(err) => {
                vm::remove_files(&self.layout, &request.id);
                Err(err)
            }
        }
    }

    /// Settles the container's seccomp filter in `spec` (see `seccomp`), logging what it got
    /// and any rvm annotation that was in the spec.
    fn settle_seccomp(&self, id: &str, spec: &mut Spec) -> TtrpcResult<()> {
        let unprofiled = self
            .unprofiled
            .clone()
            .map_err(|e| status(Code::FAILED_PRECONDITION, format!("task {id}: {e}")))?;
        let (filter, removed) = seccomp::settle(spec, unprofiled);
        if !removed.is_empty() {
            tracing::warn!(%id, ?removed, "annotations reserved to rvm removed from the task's spec");
        }
        tracing::info!(%id, ?filter, "seccomp filter");
        Ok(())
    }

    /// Copies the process's stdio and, when it exits, records the status and publishes TaskExit.
    fn watch_process(&self, container: &Arc<Container>, process: &Arc<Process>) {
        let pumps = container
            .vm
            .copy_stdio(&container.id, &process.exec_id, &process.stdio);
        tokio::spawn(wait_process(
            container.clone(),
            process.clone(),
            pumps,
            self.events.clone(),
        ));
    }
}

/// Follows kubelet's updates of the container's volumes while its init runs.
fn follow_volumes(container: &Arc<Container>) {
    let weak = Arc::downgrade(container);
    let alive = move || {
        weak.upgrade()
            .is_some_and(|c| matches!(c.init.status(), Status::Running))
    };
    container.vm.clone().follow_volumes(
        container.id.clone(),
        container.watched.clone(),
        Box::new(alive),
    );
}

async fn wait_process(
    container: Arc<Container>,
    process: Arc<Process>,
    pumps: Vec<JoinHandle<()>>,
    events: Arc<dyn EventSink>,
) {
    let end = container
        .vm
        .wait_process(&container.id, &process.exec_id)
        .await;
    if let Some(reason) = &end.lost {
        tracing::warn!(%reason, exec = %process.exec_id, "the process's own exit status is lost");
    } else if process.exec_id.is_init() {
        write_back_files(&container, &end.files);
    }
    let code = u32::try_from(end.status.code).unwrap_or(EXIT_UNKNOWN);
    let oom = end.status.oom_killed;
    for pump in pumps {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, pump).await;
    }
    let at = process.set_exited(code);
    tracing::info!(task = %container.id, exec = %process.exec_id, code, oom, "process exited");
    if oom {
        events
            .publish(
                topics::TASK_OOM_EVENT_TOPIC,
                Box::new(TaskOOM {
                    container_id: container.id.clone(),
                    ..Default::default()
                }),
            )
            .await;
    }
    let id = exit_event_id(&container.id, &process.exec_id);
    events
        .publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: container.id.clone(),
                id,
                pid: process.pid(),
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            }),
        )
        .await;
}

/// Writes what the agent returned at the init's exit into the host files the container may
/// write back (before the exit is reported: kubelet reads its termination message when it
/// sees the exit). Anything the agent returns for another destination is ignored.
fn write_back_files(container: &Container, files: &[rvm_protocol::agent::ReturnedFile]) {
    for bind in &container.returned {
        let Some(file) = files.iter().find(|f| f.destination == bind.destination) else {
            tracing::warn!(task = %container.id, destination = %bind.destination, "the agent returned no content for a termination message file");
            continue;
        };
        match host_files::write_back(bind, &file.content) {
            Ok(()) => {
                tracing::info!(task = %container.id, path = %bind.source.display(), bytes = file.content.len(), "termination message written back")
            }
            Err(err) => {
                tracing::warn!(task = %container.id, %err, "termination message not written back")
            }
        }
    }
}

/// The `id` of a TaskExit event: the task's for its init, the exec's for an exec.
fn exit_event_id(task: &str, exec_id: &ExecId) -> String {
    match exec_id {
        ExecId::Init => task.to_owned(),
        ExecId::Exec(id) => id.clone(),
    }
}

fn read_spec(bundle: &str) -> TtrpcResult<Spec> {
    let path = Path::new(bundle).join("config.json");
    Spec::load(&path).map_err(|e| {
        status(
            Code::INVALID_ARGUMENT,
            format!("cannot read the OCI spec {}: {e}", path.display()),
        )
    })
}

fn stdio_of(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> StdioPaths {
    StdioPaths {
        stdin: stdin.to_owned(),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
        terminal,
    }
}

fn started_or_failed(
    process: &Process,
    id: &str,
    result: Result<Started, rvm_runtime::sandbox::agent::AgentError>,
) -> TtrpcResult<u32> {
    match result {
        Ok(Started {
            failure: Some(failure),
            ..
        }) => {
            process.set_exited(u32::try_from(failure.code).unwrap_or(EXIT_UNKNOWN));
            Err(status(
                Code::UNKNOWN,
                format!("task {id}: {}", failure.message),
            ))
        }
        Ok(started) => Ok(started.pid),
        Err(err) => {
            process.set_exited(u32::try_from(err.exit_code()).unwrap_or(EXIT_UNKNOWN));
            Err(status(
                Code::UNKNOWN,
                format!("task {id}: {}", err.agent_message()),
            ))
        }
    }
}

fn agent_error(id: &str, err: impl std::fmt::Display) -> ttrpc::Error {
    status(Code::UNKNOWN, format!("task {id}: {err}"))
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        request: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let id = request.id.clone();
        if self.container(&id).is_ok() {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("task {id} already exists"),
            ));
        }
        tracing::info!(%id, bundle = %request.bundle, rootfs = ?request.rootfs, "create");
        let spec = read_spec(&request.bundle)?;
        let (vm, in_pod, kept) = self.create_container(&request, spec).await?;
        let pid = vm.pid();
        let stdio = stdio_of(
            &request.stdin,
            &request.stdout,
            &request.stderr,
            request.terminal,
        );
        let container = Arc::new(Container {
            id: id.clone(),
            bundle: request.bundle.clone(),
            init: Arc::new(Process::new(ExecId::Init, stdio, Vec::new(), pid)),
            vm,
            in_pod,
            execs: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
            returned: kept.returned,
            watched: kept.watched,
        });
        if let Ok(mut containers) = self.containers.lock() {
            containers.insert(id.clone(), container);
        }
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: id,
                bundle: request.bundle.clone(),
                rootfs: request.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: request.stdin.clone(),
                    stdout: request.stdout.clone(),
                    stderr: request.stderr.clone(),
                    terminal: request.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            }),
        )
        .await;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        request: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let exec_id = ExecId::of_request(&request.exec_id);
        let container = self.container(&request.id)?;
        let process = container.process(&exec_id)?;
        if process.status() != Status::Created {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!(
                    "process {:?} of task {} was already started",
                    request.exec_id, request.id
                ),
            ));
        }
        let pid = if exec_id.is_init() {
            let result = container.vm.start(&container.id).await;
            started_or_failed(&process, &container.id, result)?;
            // The task's pid is the VMM's: the guest's pids mean nothing on the host.
            container.vm.pid()
        } else {
            let exec = ExecProcessRequest {
                container_id: container.id.clone(),
                exec_id: exec_id.wire().to_owned(),
                oci_process_json: process.spec_json.clone(),
                terminal: process.stdio.terminal,
                stdin: !process.stdio.stdin.is_empty(),
                ..Default::default()
            };
            let result = container.vm.exec(&exec).await;
            started_or_failed(&process, &container.id, result)?
        };
        process.set_running(pid);
        self.watch_process(&container, &process);
        if exec_id.is_init() {
            follow_volumes(&container);
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: container.id.clone(),
                    pid,
                    ..Default::default()
                }),
            )
            .await;
        } else {
            self.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: container.id.clone(),
                    exec_id: exec_id.wire().to_owned(),
                    pid,
                    ..Default::default()
                }),
            )
            .await;
        }
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        request: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let exec_id = ExecId::of_request(&request.exec_id);
        let container = self.container(&request.id)?;
        let process = container.process(&exec_id)?;
        let (code, at) = match process.status() {
            Status::Exited { code, at } => (code, at),
            // Never started: nothing ran, nothing failed.
            Status::Created => (0, process.set_exited(0)),
            Status::Running => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "process {:?} of task {} is running; kill it first",
                        exec_id.wire(),
                        request.id
                    ),
                ))
            }
        };
        let response = api::DeleteResponse {
            pid: process.pid(),
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        };
        if let ExecId::Exec(id) = &exec_id {
            if let Ok(mut execs) = container.execs.lock() {
                execs.remove(id);
            }
            return Ok(response);
        }
        if container.in_pod {
            container.vm.remove_from_pod(&container.id).await;
            let _ = std::fs::remove_dir_all(self.layout.container_dir(&container.id));
        } else {
            container.vm.shutdown().await;
            vm::remove_files(&self.layout, &container.id);
        }
        if let Ok(mut containers) = self.containers.lock() {
            containers.remove(&request.id);
        }
        tracing::info!(id = %request.id, code, "task deleted");
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: request.id.clone(),
                pid: process.pid(),
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                id: request.id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(response)
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        request: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let container = self.container(&request.id)?;
        let processes = container
            .vm
            .list_processes(&container.id)
            .await
            .map_err(|e| agent_error(&container.id, e))?;
        Ok(api::PidsResponse {
            processes: processes
                .into_iter()
                .map(|p| ProcessInfo {
                    pid: p.pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(
        &self,
        _ctx: &TtrpcContext,
        request: api::PauseRequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&request.id)?;
        container
            .vm
            .pause(&container.id, true)
            .await
            .map_err(|e| agent_error(&container.id, e))?;
        container.paused.store(true, Ordering::SeqCst);
        self.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            Box::new(TaskPaused {
                container_id: container.id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::default())
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        request: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&request.id)?;
        container
            .vm
            .pause(&container.id, false)
            .await
            .map_err(|e| agent_error(&container.id, e))?;
        container.paused.store(false, Ordering::SeqCst);
        self.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            Box::new(TaskResumed {
                container_id: container.id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::default())
    }

    async fn kill(
        &self,
        _ctx: &TtrpcContext,
        request: api::KillRequest,
    ) -> TtrpcResult<api::Empty> {
        let exec_id = ExecId::of_request(&request.exec_id);
        let container = self.container(&request.id)?;
        let process = container.process(&exec_id)?;
        match process.status() {
            Status::Exited { .. } => {
                return Err(status(
                    Code::NOT_FOUND,
                    format!(
                        "process {:?} of task {} already finished",
                        exec_id.wire(),
                        request.id
                    ),
                ))
            }
            Status::Created => {
                // Never started: there is nothing in the guest to signal.
                let code = 128 + request.signal;
                let at = process.set_exited(code);
                self.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: container.id.clone(),
                        id: exit_event_id(&container.id, &exec_id),
                        pid: process.pid(),
                        exit_status: code,
                        exited_at: MessageField::some(timestamp(at)),
                        ..Default::default()
                    }),
                )
                .await;
                return Ok(api::Empty::default());
            }
            Status::Running => {}
        }
        container
            .vm
            .signal(&container.id, &exec_id, request.signal, request.all)
            .await
            .map_err(|e| agent_error(&container.id, e))?;
        Ok(api::Empty::default())
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        request: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&request.id)?;
        let exec_id = ExecId::new_exec(&request.exec_id).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("exec of task {}: {e}", request.id),
            )
        })?;
        let spec_json = request
            .spec
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("exec {} has no process spec", exec_id.wire()),
                )
            })?;
        {
            let mut execs = container
                .execs
                .lock()
                .map_err(|_| status(Code::INTERNAL, "exec table poisoned"))?;
            if execs.contains_key(exec_id.wire()) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!(
                        "exec {} of task {} already exists",
                        exec_id.wire(),
                        request.id
                    ),
                ));
            }
            let stdio = stdio_of(
                &request.stdin,
                &request.stdout,
                &request.stderr,
                request.terminal,
            );
            execs.insert(
                exec_id.wire().to_owned(),
                Arc::new(Process::new(exec_id.clone(), stdio, spec_json, 0)),
            );
        }
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: container.id.clone(),
                exec_id: exec_id.wire().to_owned(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::default())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        request: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&request.id)?;
        let rows = u16::try_from(request.height).unwrap_or(u16::MAX);
        let columns = u16::try_from(request.width).unwrap_or(u16::MAX);
        container
            .vm
            .resize(
                &container.id,
                &ExecId::of_request(&request.exec_id),
                rows,
                columns,
            )
            .await
            .map_err(|e| agent_error(&container.id, e))?;
        Ok(api::Empty::default())
    }

    /// containerd closes its end of the stdin FIFO before asking: the stdin copy forwards what
    /// is left in the FIFO, sees its end and closes the process's stdin itself, so closing here
    /// would cut off data still in flight.
    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        request: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&request.id)?;
        container.process(&ExecId::of_request(&request.exec_id))?;
        Ok(api::Empty::default())
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        request: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&request.id)?;
        let resources = request
            .resources
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("update of task {} has no resources", request.id),
                )
            })?;
        container
            .vm
            .update_resources(&container.id, &resources)
            .await
            .map_err(|e| agent_error(&container.id, e))?;
        Ok(api::Empty::default())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        request: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let container = self.container(&request.id)?;
        let process = container.process(&ExecId::of_request(&request.exec_id))?;
        let (code, at) = process.wait().await;
        Ok(api::WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        request: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let container = self.container(&request.id)?;
        let process = container.process(&ExecId::of_request(&request.exec_id))?;
        let mut response = api::StateResponse {
            id: request.id.clone(),
            bundle: container.bundle.clone(),
            pid: process.pid(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exec_id: process.exec_id.wire().to_owned(),
            ..Default::default()
        };
        let state = match process.status() {
            Status::Created => TaskStatus::CREATED,
            Status::Running if container.paused.load(Ordering::SeqCst) => TaskStatus::PAUSED,
            Status::Running => TaskStatus::RUNNING,
            Status::Exited { code, at } => {
                response.exit_status = code;
                response.exited_at = MessageField::some(timestamp(at));
                TaskStatus::STOPPED
            }
        };
        response.status = state.into();
        Ok(response)
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        request: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let container = self.container(&request.id)?;
        let stats = container
            .vm
            .stats(&container.id)
            .await
            .map_err(|e| agent_error(&container.id, e))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(metrics::to_any(&stats)),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        request: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.container(&request.id).map(|c| c.vm.pid()).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _request: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        let empty = self.containers.lock().map(|c| c.is_empty()).unwrap_or(true);
        if empty {
            tracing::info!("no task left; the shim exits");
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
