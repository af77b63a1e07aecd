//! The task service's state machine against a fake guest: the fake stands in for the VM and its
//! agent (answers, pids, exits on the test's command) and records what the service asked of it;
//! a fake event sink records what containerd would have seen. The real guest is the lab's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField, MessageFull};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, Code};
use containerd_shim_protos::types::task::Status as TaskStatus;
use oci_spec::runtime::Spec;
use rvm_protocol::agent::{ExecProcessRequest, PidsStats, ProcessInfo, StatsResponse};
use rvm_runtime::sandbox::agent::{AgentError, ExecFailure, ExitStatus, Started};
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::vm::{ProcessEnd, VmError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{EventSink, Service};
use crate::guest::{GuestAgent, Launcher, PodContainer};
use crate::host_files::WatchedDirectory;
use crate::layers::Disk;
use crate::metrics;
use crate::pod;
use crate::process::ExecId;
use crate::stdio::StdioPaths;
use crate::vm::{TaskVmError, VmRequest};

/// How long a test waits for something the service does in the background.
const DEADLINE: Duration = Duration::from_secs(5);

/// The VMM's pid in the fake: the one a task reports.
const VMM_PID: u32 = 4242;

/// The fake VM and agent.
#[derive(Debug)]
struct FakeGuest {
    /// What the service called, one line per call.
    calls: Mutex<Vec<String>>,
    /// The ends the test has given, by (container, process).
    ends: watch::Sender<HashMap<(String, ExecId), ProcessEnd>>,
    /// The guest pid the next started process gets.
    next_pid: AtomicU32,
    /// The answer of the next start or exec instead of a started process.
    next_start: Mutex<Option<Result<Started, AgentError>>>,
    /// Calls whose next invocation fails as an agent error.
    failing: Mutex<Vec<&'static str>>,
}

impl FakeGuest {
    fn new() -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            ends: watch::Sender::new(HashMap::new()),
            next_pid: AtomicU32::new(100),
            next_start: Mutex::new(None),
            failing: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn called(&self, prefix: &str) -> bool {
        self.calls().iter().any(|call| call.starts_with(prefix))
    }

    /// Ends process `exec` of `container` with `code`.
    fn exit(&self, container: &str, exec: ExecId, code: i32, oom_killed: bool) {
        let end = ProcessEnd {
            status: ExitStatus { code, oom_killed },
            files: Vec::new(),
            lost: None,
        };
        self.ends.send_modify(|ends| {
            ends.insert((container.to_owned(), exec), end);
        });
    }

    fn answer_next_start(&self, answer: Result<Started, AgentError>) {
        *self.next_start.lock().unwrap() = Some(answer);
    }

    fn fail_next(&self, call: &'static str) {
        self.failing.lock().unwrap().push(call);
    }

    fn check(&self, call: &'static str) -> Result<(), AgentError> {
        let mut failing = self.failing.lock().unwrap();
        match failing.iter().position(|c| *c == call) {
            Some(index) => {
                failing.remove(index);
                Err(AgentError::Rpc {
                    call,
                    code: Some(rvm_protocol::ttrpc::Code::INTERNAL),
                    message: format!("{call} refused by the fake"),
                })
            }
            None => Ok(()),
        }
    }

    fn started(&self) -> Result<Started, AgentError> {
        if let Some(answer) = self.next_start.lock().unwrap().take() {
            return answer;
        }
        Ok(Started {
            pid: self.next_pid.fetch_add(1, Ordering::SeqCst),
            failure: None,
        })
    }
}

#[async_trait]
impl GuestAgent for FakeGuest {
    fn pid(&self) -> u32 {
        VMM_PID
    }

    async fn start(&self, container: &str) -> Result<Started, AgentError> {
        self.record(format!("start {container}"));
        self.started()
    }

    async fn exec(&self, request: &ExecProcessRequest) -> Result<Started, AgentError> {
        self.record(format!(
            "exec {} {} terminal={} stdin={} spec={}",
            request.container_id,
            request.exec_id,
            request.terminal,
            request.stdin,
            String::from_utf8_lossy(&request.oci_process_json)
        ));
        self.started()
    }

    async fn wait_process(&self, container: &str, exec_id: &ExecId) -> ProcessEnd {
        let key = (container.to_owned(), exec_id.clone());
        let mut ends = self.ends.subscribe();
        let end = ends
            .wait_for(|ends| ends.contains_key(&key))
            .await
            .map(|ends| ends[&key].clone());
        match end {
            Ok(end) => end,
            Err(_) => ProcessEnd {
                status: ExitStatus {
                    code: 255,
                    oom_killed: false,
                },
                files: Vec::new(),
                lost: Some("the fake ended".to_owned()),
            },
        }
    }

    async fn signal(
        &self,
        container: &str,
        exec_id: &ExecId,
        signal: u32,
        all: bool,
    ) -> Result<(), AgentError> {
        self.record(format!(
            "signal {container} {:?} {signal} all={all}",
            exec_id.wire()
        ));
        self.check("signal")
    }

    async fn list_processes(&self, container: &str) -> Result<Vec<ProcessInfo>, AgentError> {
        self.record(format!("list_processes {container}"));
        self.check("list_processes")?;
        Ok([1, 7, 9]
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                ..Default::default()
            })
            .collect())
    }

    async fn pause(&self, container: &str, frozen: bool) -> Result<(), AgentError> {
        self.record(format!("pause {container} {frozen}"));
        self.check("pause")
    }

    async fn resize(
        &self,
        container: &str,
        exec_id: &ExecId,
        rows: u16,
        columns: u16,
    ) -> Result<(), AgentError> {
        self.record(format!(
            "resize {container} {:?} {rows}x{columns}",
            exec_id.wire()
        ));
        self.check("resize")
    }

    async fn update_resources(&self, container: &str, resources: &[u8]) -> Result<(), AgentError> {
        self.record(format!(
            "update {container} {}",
            String::from_utf8_lossy(resources)
        ));
        self.check("update")
    }

    async fn stats(&self, container: &str) -> Result<StatsResponse, AgentError> {
        self.record(format!("stats {container}"));
        self.check("stats")?;
        Ok(StatsResponse {
            pids: MessageField::some(PidsStats {
                current: 3,
                limit: 64,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn copy_stdio(
        &self,
        container: &str,
        exec_id: &ExecId,
        _paths: &StdioPaths,
    ) -> Vec<JoinHandle<()>> {
        self.record(format!("copy_stdio {container} {:?}", exec_id.wire()));
        Vec::new()
    }

    fn follow_volumes(
        self: Arc<Self>,
        container: String,
        dirs: Vec<WatchedDirectory>,
        _alive: Box<dyn Fn() -> bool + Send>,
    ) {
        self.record(format!("follow_volumes {container} {}", dirs.len()));
    }

    async fn create_in_pod(&self, container: PodContainer<'_>) -> Result<(), VmError> {
        self.record(format!("create_in_pod {}", container.id));
        Ok(())
    }

    async fn remove_from_pod(&self, container: &str) {
        self.record(format!("remove_from_pod {container}"));
    }

    async fn shutdown(&self) {
        self.record("shutdown".to_owned());
    }
}

/// Boots every task into the one fake guest (a pod's tasks share it anyway).
#[derive(Debug)]
struct FakeLauncher {
    guest: Arc<FakeGuest>,
    boots: Mutex<Vec<String>>,
    refuse_boot: Mutex<bool>,
}

#[async_trait]
impl Launcher for FakeLauncher {
    async fn layer_disks(
        &self,
        _request: &api::CreateTaskRequest,
    ) -> Result<Vec<Disk>, ttrpc::Error> {
        Ok(Vec::new())
    }

    async fn boot(&self, request: VmRequest<'_>) -> Result<Arc<dyn GuestAgent>, TaskVmError> {
        self.boots
            .lock()
            .unwrap()
            .push(format!("{} slots={}", request.id, request.disk_slots));
        if *self.refuse_boot.lock().unwrap() {
            return Err(VmError::NoSlots(request.id.to_owned()).into());
        }
        let guest: Arc<dyn GuestAgent> = self.guest.clone();
        Ok(guest)
    }
}

/// The events containerd would have received, in order.
#[derive(Default)]
struct FakeEvents {
    published: watch::Sender<Vec<(String, Box<dyn MessageDyn>)>>,
}

#[async_trait]
impl EventSink for FakeEvents {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        self.published.send_modify(|published| {
            published.push((topic.to_owned(), event));
        });
    }
}

impl FakeEvents {
    fn topics(&self) -> Vec<String> {
        self.published
            .borrow()
            .iter()
            .map(|(topic, _)| topic.clone())
            .collect()
    }

    /// The events on `topic` published so far.
    fn on<M: MessageFull + Clone>(&self, topic: &str) -> Vec<M> {
        self.published
            .borrow()
            .iter()
            .filter(|(t, _)| t == topic)
            .filter_map(|(_, event)| event.downcast_ref::<M>().cloned())
            .collect()
    }

    /// Waits (up to [`DEADLINE`]) for the `n`th event (from 1) on `topic`.
    async fn nth<M: MessageFull + Clone>(&self, topic: &str, n: usize) -> M {
        let mut published = self.published.subscribe();
        let count = |events: &Vec<(String, Box<dyn MessageDyn>)>| {
            events.iter().filter(|(t, _)| t == topic).count()
        };
        tokio::time::timeout(DEADLINE, published.wait_for(|events| count(events) >= n))
            .await
            .unwrap_or_else(|_| panic!("no event {n} on {topic}: {:?}", self.topics()))
            .unwrap();
        self.on::<M>(topic).swap_remove(n - 1)
    }
}

/// A service with a fake guest, and the bundles its tasks are created from.
struct Harness {
    service: Service,
    guest: Arc<FakeGuest>,
    launcher: Arc<FakeLauncher>,
    events: Arc<FakeEvents>,
    exit: Arc<ExitSignal>,
    dir: tempfile::TempDir,
}

fn ctx() -> TtrpcContext {
    TtrpcContext {
        fd: -1,
        mh: Default::default(),
        metadata: HashMap::new(),
        timeout_nano: 0,
    }
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let guest = Arc::new(FakeGuest::new());
    let launcher = Arc::new(FakeLauncher {
        guest: guest.clone(),
        boots: Mutex::new(Vec::new()),
        refuse_boot: Mutex::new(false),
    });
    let events = Arc::new(FakeEvents::default());
    let exit = Arc::new(ExitSignal::default());
    let service = Service::with_parts(
        events.clone(),
        exit.clone(),
        Layout::new(Some(dir.path().join("state"))),
        launcher.clone(),
    );
    Harness {
        service,
        guest,
        launcher,
        events,
        exit,
        dir,
    }
}

/// The code of a ttrpc error, and its message.
fn code_of(error: ttrpc::Error) -> (Code, String) {
    match error {
        ttrpc::Error::RpcStatus(status) => (status.code(), status.message().to_owned()),
        other => panic!("not an RPC status: {other:?}"),
    }
}

impl Harness {
    /// Writes a bundle for task `id` whose spec carries `annotations`.
    fn bundle(&self, id: &str, annotations: &[(&str, &str)]) -> String {
        let bundle = self.dir.path().join("bundles").join(id);
        std::fs::create_dir_all(&bundle).unwrap();
        let mut spec = Spec::default();
        if !annotations.is_empty() {
            spec.set_annotations(Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ));
        }
        spec.save(bundle.join("config.json")).unwrap();
        bundle.display().to_string()
    }

    async fn create_with(
        &self,
        id: &str,
        annotations: &[(&str, &str)],
    ) -> Result<api::CreateTaskResponse, ttrpc::Error> {
        let request = api::CreateTaskRequest {
            id: id.to_owned(),
            bundle: self.bundle(id, annotations),
            stdout: format!("/fifo/{id}-out"),
            ..Default::default()
        };
        self.service.create(&ctx(), request).await
    }

    async fn create(&self, id: &str) -> Result<api::CreateTaskResponse, ttrpc::Error> {
        self.create_with(id, &[]).await
    }

    async fn start(&self, id: &str, exec: &str) -> Result<api::StartResponse, ttrpc::Error> {
        let request = api::StartRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            ..Default::default()
        };
        self.service.start(&ctx(), request).await
    }

    async fn exec(&self, id: &str, exec: &str) -> Result<api::Empty, ttrpc::Error> {
        let request = api::ExecProcessRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            stdin: "/fifo/in".to_owned(),
            spec: MessageField::some(Any {
                value: br#"{"args":["sh"]}"#.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.service.exec(&ctx(), request).await
    }

    async fn kill(&self, id: &str, exec: &str, signal: u32) -> Result<api::Empty, ttrpc::Error> {
        let request = api::KillRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            signal,
            ..Default::default()
        };
        self.service.kill(&ctx(), request).await
    }

    async fn state(&self, id: &str, exec: &str) -> Result<api::StateResponse, ttrpc::Error> {
        let request = api::StateRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            ..Default::default()
        };
        self.service.state(&ctx(), request).await
    }

    async fn wait(&self, id: &str, exec: &str) -> Result<api::WaitResponse, ttrpc::Error> {
        let request = api::WaitRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            ..Default::default()
        };
        tokio::time::timeout(DEADLINE, self.service.wait(&ctx(), request))
            .await
            .expect("wait did not return")
    }

    async fn delete(&self, id: &str, exec: &str) -> Result<api::DeleteResponse, ttrpc::Error> {
        let request = api::DeleteRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            ..Default::default()
        };
        self.service.delete(&ctx(), request).await
    }

    /// Creates and starts task `id`, then has its init exit with `code` and waits for the exit.
    async fn run_to_exit(&self, id: &str, code: i32) {
        self.create(id).await.unwrap();
        self.start(id, "").await.unwrap();
        self.guest.exit(id, ExecId::Init, code, false);
        self.wait(id, "").await.unwrap();
    }
}

fn status_of(state: &api::StateResponse) -> TaskStatus {
    state.status.enum_value_or_default()
}

#[tokio::test]
async fn create_reports_the_vmm_pid_and_publishes_task_create() {
    let h = harness();
    let created = h.create("t1").await.unwrap();
    assert_eq!(created.pid, VMM_PID);
    let event: TaskCreate = h.events.nth(topics::TASK_CREATE_EVENT_TOPIC, 1).await;
    assert_eq!(event.container_id, "t1");
    assert_eq!(event.pid, VMM_PID);
    assert_eq!(event.io.stdout, "/fifo/t1-out");
    assert_eq!(*h.launcher.boots.lock().unwrap(), ["t1 slots=0"]);
    let state = h.state("t1", "").await.unwrap();
    assert_eq!(status_of(&state), TaskStatus::CREATED);
    assert_eq!(state.pid, VMM_PID);
}

#[tokio::test]
async fn a_second_create_of_the_same_task_is_refused_without_booting() {
    let h = harness();
    h.create("t1").await.unwrap();
    let (code, message) = code_of(h.create("t1").await.unwrap_err());
    assert_eq!(code, Code::ALREADY_EXISTS);
    assert!(message.contains("t1"), "{message}");
    assert_eq!(h.launcher.boots.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_vm_that_does_not_boot_fails_create_with_internal_and_leaves_no_task() {
    let h = harness();
    *h.launcher.refuse_boot.lock().unwrap() = true;
    let (code, message) = code_of(h.create("t1").await.unwrap_err());
    assert_eq!(code, Code::INTERNAL);
    assert!(message.starts_with("task t1: "), "{message}");
    assert_eq!(
        code_of(h.state("t1", "").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    assert!(h.events.topics().is_empty(), "{:?}", h.events.topics());
}

#[tokio::test]
async fn start_runs_the_init_reports_the_vmm_pid_and_publishes_task_start() {
    let h = harness();
    h.create("t1").await.unwrap();
    let started = h.start("t1", "").await.unwrap();
    assert_eq!(started.pid, VMM_PID);
    assert!(h.guest.called("start t1"));
    assert!(h.guest.called("copy_stdio t1 \"\""));
    let event: TaskStart = h.events.nth(topics::TASK_START_EVENT_TOPIC, 1).await;
    assert_eq!((event.container_id.as_str(), event.pid), ("t1", VMM_PID));
    let state = h.state("t1", "").await.unwrap();
    assert_eq!(status_of(&state), TaskStatus::RUNNING);
}

#[tokio::test]
async fn a_second_start_is_refused_with_failed_precondition() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    let (code, _) = code_of(h.start("t1", "").await.unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION);
    let starts = h.guest.calls().iter().filter(|c| *c == "start t1").count();
    assert_eq!(starts, 1);
}

#[tokio::test]
async fn the_init_exit_is_published_with_the_task_id_and_ends_wait() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    let request = api::WaitRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    let context = ctx();
    let mut waiter = Box::pin(h.service.wait(&context, request));
    assert!(
        !is_ready_now(waiter.as_mut()).await,
        "wait returned before the exit"
    );
    h.guest.exit("t1", ExecId::Init, 3, false);
    let waited = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waited.exit_status, 3);
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!((exit.container_id.as_str(), exit.id.as_str()), ("t1", "t1"));
    assert_eq!((exit.pid, exit.exit_status), (VMM_PID, 3));
    assert_eq!(exit.exited_at, waited.exited_at);
    let state = h.state("t1", "").await.unwrap();
    assert_eq!(status_of(&state), TaskStatus::STOPPED);
    assert_eq!(state.exit_status, 3);
}

#[tokio::test]
async fn an_oom_kill_is_published_before_the_exit() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.guest.exit("t1", ExecId::Init, 137, true);
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!(exit.exit_status, 137);
    let oom: Vec<TaskOOM> = h.events.on(topics::TASK_OOM_EVENT_TOPIC);
    assert_eq!(oom.len(), 1);
    assert_eq!(oom[0].container_id, "t1");
    let topics = h.events.topics();
    let oom_at = topics
        .iter()
        .position(|t| t == topics::TASK_OOM_EVENT_TOPIC);
    let exit_at = topics
        .iter()
        .position(|t| t == topics::TASK_EXIT_EVENT_TOPIC);
    assert!(oom_at < exit_at, "{topics:?}");
}

#[tokio::test]
async fn an_exec_runs_with_its_own_id_pid_and_events() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    let added: TaskExecAdded = h.events.nth(topics::TASK_EXEC_ADDED_EVENT_TOPIC, 1).await;
    assert_eq!(added.exec_id, "e1");
    assert_eq!(
        status_of(&h.state("t1", "e1").await.unwrap()),
        TaskStatus::CREATED
    );
    let started = h.start("t1", "e1").await.unwrap();
    // The guest's pid: the fake hands out 100, 101, ... and the init's start took 100.
    assert_eq!(started.pid, 101);
    assert!(h
        .guest
        .called(r#"exec t1 e1 terminal=false stdin=true spec={"args":["sh"]}"#));
    let event: TaskExecStarted = h.events.nth(topics::TASK_EXEC_STARTED_EVENT_TOPIC, 1).await;
    assert_eq!((event.exec_id.as_str(), event.pid), ("e1", 101));
    h.guest.exit("t1", ExecId::Exec("e1".to_owned()), 5, false);
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!((exit.container_id.as_str(), exit.id.as_str()), ("t1", "e1"));
    assert_eq!((exit.pid, exit.exit_status), (101, 5));
    // The init still runs.
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::RUNNING
    );
}

#[tokio::test]
async fn exec_ids_that_the_agent_would_refuse_are_invalid_argument_naming_them() {
    let h = harness();
    h.create("t1").await.unwrap();
    let long = "x".repeat(129);
    for (bad, shown) in [
        ("", "exec id must not be empty"),
        ("a/b", "\"a/b\""),
        ("a\0b", "\"a\\0b\""),
        ("..", "\"..\""),
        (long.as_str(), "129 bytes"),
    ] {
        let (code, message) = code_of(h.exec("t1", bad).await.unwrap_err());
        assert_eq!(code, Code::INVALID_ARGUMENT, "{bad:?}");
        assert!(message.contains(shown), "{bad:?}: {message}");
        assert!(message.contains("task t1"), "{bad:?}: {message}");
    }
    assert!(h
        .events
        .on::<TaskExecAdded>(topics::TASK_EXEC_ADDED_EVENT_TOPIC)
        .is_empty());
}

#[tokio::test]
async fn a_duplicate_exec_id_is_refused_with_already_exists() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    let (code, message) = code_of(h.exec("t1", "e1").await.unwrap_err());
    assert_eq!(code, Code::ALREADY_EXISTS);
    assert!(message.contains("exec e1 of task t1"), "{message}");
}

#[tokio::test]
async fn an_exec_without_a_process_spec_is_refused() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::ExecProcessRequest {
        id: "t1".to_owned(),
        exec_id: "e1".to_owned(),
        ..Default::default()
    };
    let (code, message) = code_of(h.service.exec(&ctx(), request).await.unwrap_err());
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(message.contains("e1 has no process spec"), "{message}");
    // Not registered: a later state call does not find it.
    assert_eq!(
        code_of(h.state("t1", "e1").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
}

#[tokio::test]
async fn unknown_tasks_and_execs_are_not_found() {
    let h = harness();
    assert_eq!(
        code_of(h.state("nope", "").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    assert_eq!(
        code_of(h.start("nope", "").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    h.create("t1").await.unwrap();
    let (code, message) = code_of(h.kill("t1", "e9", 9).await.unwrap_err());
    assert_eq!(code, Code::NOT_FOUND);
    assert_eq!(message, "exec e9 of task t1 not found");
}

#[tokio::test]
async fn kill_before_start_ends_the_process_as_killed_without_the_guest() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.kill("t1", "", 9).await.unwrap();
    assert!(!h.guest.called("signal"), "{:?}", h.guest.calls());
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!((exit.id.as_str(), exit.exit_status), ("t1", 137));
    assert_eq!(h.wait("t1", "").await.unwrap().exit_status, 137);
    // It can no longer start.
    assert_eq!(
        code_of(h.start("t1", "").await.unwrap_err()).0,
        Code::FAILED_PRECONDITION
    );
}

#[tokio::test]
async fn kill_of_a_running_process_signals_it_in_the_guest() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    h.start("t1", "e1").await.unwrap();
    h.kill("t1", "e1", 15).await.unwrap();
    let request = api::KillRequest {
        id: "t1".to_owned(),
        signal: 9,
        all: true,
        ..Default::default()
    };
    h.service.kill(&ctx(), request).await.unwrap();
    assert!(h.guest.called("signal t1 \"e1\" 15 all=false"));
    assert!(h.guest.called("signal t1 \"\" 9 all=true"));
    // The exit comes from the guest, not from the kill.
    assert!(h
        .events
        .on::<TaskExit>(topics::TASK_EXIT_EVENT_TOPIC)
        .is_empty());
}

#[tokio::test]
async fn kill_of_a_finished_process_is_not_found() {
    let h = harness();
    h.run_to_exit("t1", 0).await;
    let (code, message) = code_of(h.kill("t1", "", 9).await.unwrap_err());
    assert_eq!(code, Code::NOT_FOUND);
    assert!(message.contains("already finished"), "{message}");
}

#[tokio::test]
async fn a_refused_signal_is_unknown_naming_the_task() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.guest.fail_next("signal");
    let (code, message) = code_of(h.kill("t1", "", 15).await.unwrap_err());
    assert_eq!(code, Code::UNKNOWN);
    assert_eq!(
        message,
        "task t1: agent call signal failed: signal refused by the fake"
    );
}

#[tokio::test]
async fn delete_of_a_running_task_is_refused_and_keeps_the_vm() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    let (code, message) = code_of(h.delete("t1", "").await.unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(message.contains("kill it first"), "{message}");
    assert!(!h.guest.called("shutdown"));
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::RUNNING
    );
}

#[tokio::test]
async fn delete_of_an_exited_task_ends_its_vm_and_forgets_it() {
    let h = harness();
    h.run_to_exit("t1", 4).await;
    let deleted = h.delete("t1", "").await.unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (VMM_PID, 4));
    assert!(h.guest.called("shutdown"));
    let event: TaskDelete = h.events.nth(topics::TASK_DELETE_EVENT_TOPIC, 1).await;
    assert_eq!((event.id.as_str(), event.exit_status), ("t1", 4));
    assert_eq!(
        code_of(h.state("t1", "").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    // With no task left, shutdown ends the shim.
    let request = api::ShutdownRequest::default();
    h.service.shutdown(&ctx(), request).await.unwrap();
    tokio::time::timeout(DEADLINE, h.exit.wait())
        .await
        .expect("the shim was not told to exit");
}

#[tokio::test]
async fn delete_of_a_never_started_task_reports_exit_zero() {
    let h = harness();
    h.create("t1").await.unwrap();
    let deleted = h.delete("t1", "").await.unwrap();
    assert_eq!(deleted.exit_status, 0);
    assert!(deleted.exited_at.is_some());
    assert!(h.guest.called("shutdown"));
}

#[tokio::test]
async fn delete_of_an_exec_removes_only_the_exec() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    h.start("t1", "e1").await.unwrap();
    h.guest.exit("t1", ExecId::Exec("e1".to_owned()), 2, false);
    assert_eq!(h.wait("t1", "e1").await.unwrap().exit_status, 2);
    let deleted = h.delete("t1", "e1").await.unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (101, 2));
    assert_eq!(
        code_of(h.state("t1", "e1").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    assert!(!h.guest.called("shutdown"));
    assert!(h
        .events
        .on::<TaskDelete>(topics::TASK_DELETE_EVENT_TOPIC)
        .is_empty());
    // The same id may be used again once deleted.
    h.exec("t1", "e1").await.unwrap();
}

#[tokio::test]
async fn a_command_the_guest_cannot_run_fails_start_and_stops_with_its_code() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.guest.answer_next_start(Ok(Started {
        pid: 0,
        failure: Some(ExecFailure {
            code: 127,
            message: "exec: \"nosuchcmd\": executable file not found in $PATH".to_owned(),
        }),
    }));
    let (code, message) = code_of(h.start("t1", "").await.unwrap_err());
    assert_eq!(code, Code::UNKNOWN);
    assert_eq!(
        message,
        "task t1: exec: \"nosuchcmd\": executable file not found in $PATH"
    );
    let state = h.state("t1", "").await.unwrap();
    assert_eq!(status_of(&state), TaskStatus::STOPPED);
    assert_eq!(state.exit_status, 127);
    assert!(h
        .events
        .on::<TaskStart>(topics::TASK_START_EVENT_TOPIC)
        .is_empty());
}

#[tokio::test]
async fn an_agent_error_at_exec_start_takes_dockers_exit_code() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    h.guest.answer_next_start(Err(AgentError::Rpc {
        call: "ExecProcess",
        code: Some(rvm_protocol::ttrpc::Code::PERMISSION_DENIED),
        message: "permission denied".to_owned(),
    }));
    let (code, message) = code_of(h.start("t1", "e1").await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (Code::UNKNOWN, "task t1: permission denied")
    );
    assert_eq!(h.wait("t1", "e1").await.unwrap().exit_status, 126);
}

#[tokio::test]
async fn pause_and_resume_show_in_state_and_events() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    let pause = api::PauseRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    h.service.pause(&ctx(), pause).await.unwrap();
    assert!(h.guest.called("pause t1 true"));
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::PAUSED
    );
    let _: TaskPaused = h.events.nth(topics::TASK_PAUSED_EVENT_TOPIC, 1).await;
    let resume = api::ResumeRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    h.service.resume(&ctx(), resume).await.unwrap();
    assert!(h.guest.called("pause t1 false"));
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::RUNNING
    );
    let _: TaskResumed = h.events.nth(topics::TASK_RESUMED_EVENT_TOPIC, 1).await;
}

#[tokio::test]
async fn a_refused_pause_leaves_the_task_running_without_an_event() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.guest.fail_next("pause");
    let pause = api::PauseRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    assert_eq!(
        code_of(h.service.pause(&ctx(), pause).await.unwrap_err()).0,
        Code::UNKNOWN
    );
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::RUNNING
    );
    assert!(h
        .events
        .on::<TaskPaused>(topics::TASK_PAUSED_EVENT_TOPIC)
        .is_empty());
}

#[tokio::test]
async fn pids_are_the_guests() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::PidsRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    let pids = h.service.pids(&ctx(), request).await.unwrap();
    let pids: Vec<u32> = pids.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [1, 7, 9]);
}

#[tokio::test]
async fn stats_are_the_guests_counters_as_cgroups_v2_metrics() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::StatsRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    let stats = h.service.stats(&ctx(), request).await.unwrap();
    assert_eq!(stats.stats.type_url, metrics::METRICS_V2_TYPE_URL);
    let expected = StatsResponse {
        pids: MessageField::some(PidsStats {
            current: 3,
            limit: 64,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(stats.stats.value, metrics::encode_v2(&expected));
    assert!(h.guest.called("stats t1"));
}

#[tokio::test]
async fn resize_clamps_the_window_and_names_the_process() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::ResizePtyRequest {
        id: "t1".to_owned(),
        exec_id: "e1".to_owned(),
        width: 80,
        height: 100_000,
        ..Default::default()
    };
    h.service.resize_pty(&ctx(), request).await.unwrap();
    assert!(
        h.guest.called("resize t1 \"e1\" 65535x80"),
        "{:?}",
        h.guest.calls()
    );
}

#[tokio::test]
async fn update_sends_the_resources_and_refuses_none() {
    let h = harness();
    h.create("t1").await.unwrap();
    let empty = api::UpdateTaskRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    assert_eq!(
        code_of(h.service.update(&ctx(), empty).await.unwrap_err()).0,
        Code::INVALID_ARGUMENT
    );
    let request = api::UpdateTaskRequest {
        id: "t1".to_owned(),
        resources: MessageField::some(Any {
            value: br#"{"cpu":{}}"#.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    h.service.update(&ctx(), request).await.unwrap();
    assert!(h.guest.called(r#"update t1 {"cpu":{}}"#));
}

#[tokio::test]
async fn a_pods_container_joins_its_sandboxs_vm_and_leaves_it_running() {
    let h = harness();
    let sandbox = [(pod::SANDBOX_ID, "s1"), (pod::CONTAINER_TYPE, "sandbox")];
    h.create_with("s1", &sandbox).await.unwrap();
    let member = [(pod::SANDBOX_ID, "s1"), (pod::CONTAINER_TYPE, "container")];
    let created = h.create_with("c1", &member).await.unwrap();
    assert_eq!(created.pid, VMM_PID);
    // Only the sandbox booted, with slots for the pod's containers.
    assert_eq!(*h.launcher.boots.lock().unwrap(), ["s1 slots=8"]);
    assert!(h.guest.called("create_in_pod c1"));
    h.delete("c1", "").await.unwrap();
    assert!(h.guest.called("remove_from_pod c1"));
    assert!(!h.guest.called("shutdown"));
    assert_eq!(
        status_of(&h.state("s1", "").await.unwrap()),
        TaskStatus::CREATED
    );
}

#[tokio::test]
async fn a_pods_container_without_its_sandbox_is_failed_precondition() {
    let h = harness();
    let member = [(pod::SANDBOX_ID, "s1"), (pod::CONTAINER_TYPE, "container")];
    let (code, message) = code_of(h.create_with("c1", &member).await.unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(message.contains("sandbox s1 is not running"), "{message}");
    assert!(!h.guest.called("create_in_pod"));
}

#[tokio::test]
async fn shutdown_with_a_task_left_keeps_the_shim() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.service
        .shutdown(&ctx(), api::ShutdownRequest::default())
        .await
        .unwrap();
    // A signalled ExitSignal's wait is ready at its first poll.
    let mut waiting = Box::pin(h.exit.wait());
    assert!(
        !is_ready_now(waiting.as_mut()).await,
        "the shim was told to exit with a task left"
    );
}

/// Polls `future` once: whether it was ready.
async fn is_ready_now(mut future: std::pin::Pin<&mut impl std::future::Future>) -> bool {
    std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}
