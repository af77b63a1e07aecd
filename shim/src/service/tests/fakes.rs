//! The fakes the service's tests run against: a guest that answers, hands out pids, ends
//! processes when a test says so and records every call; a launcher that "boots" that guest; an
//! event sink that keeps what containerd would have seen; and a harness making the requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField, MessageFull};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, Code};
use containerd_shim_protos::types::task::Status as TaskStatus;
use oci_spec::runtime::Spec;
use rvm_protocol::agent::{ExecProcessRequest, PidsStats, ProcessInfo, StatsResponse};
use rvm_runtime::sandbox::agent::{AgentError, ExitStatus, Started};
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::vm::{ProcessEnd, VmError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::guest::{GuestAgent, Launcher, PodContainer};
use crate::host_files::WatchedDirectory;
use crate::process::ExecId;
use crate::seccomp::{self, Unprofiled};
use crate::service::{EventSink, Service};
use crate::stdio::StdioPaths;
use crate::vm::{TaskVmError, VmRequest};
use rvm_runtime::vm::LayerImage;

/// How long a test waits for something the service does in the background.
pub(super) const DEADLINE: Duration = Duration::from_secs(5);

/// The VMM's pid in the fake: the one a task reports.
pub(super) const VMM_PID: u32 = 4242;

/// The fake VM and agent.
#[derive(Debug)]
pub(super) struct FakeGuest {
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

    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub(super) fn called(&self, prefix: &str) -> bool {
        self.calls().iter().any(|call| call.starts_with(prefix))
    }

    /// Ends process `exec` of `container` with `code`.
    pub(super) fn exit(&self, container: &str, exec: ExecId, code: i32, oom_killed: bool) {
        self.end(container, exec, code, oom_killed, None);
    }

    /// Ends process `exec` of `container` as the VM's end does: its own status is `lost`, the
    /// VM's `code` stands for it.
    pub(super) fn lose(&self, container: &str, exec: ExecId, code: i32, lost: &str) {
        self.end(container, exec, code, false, Some(lost.to_owned()));
    }

    fn end(
        &self,
        container: &str,
        exec: ExecId,
        code: i32,
        oom_killed: bool,
        lost: Option<String>,
    ) {
        let end = ProcessEnd {
            status: ExitStatus { code, oom_killed },
            files: Vec::new(),
            lost,
        };
        self.ends.send_modify(|ends| {
            ends.insert((container.to_owned(), exec), end);
        });
    }

    pub(super) fn answer_next_start(&self, answer: Result<Started, AgentError>) {
        *self.next_start.lock().unwrap() = Some(answer);
    }

    pub(super) fn fail_next(&self, call: &'static str) {
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
        let seccomp = seccomp_annotation(container.spec);
        self.record(format!(
            "create_in_pod {} seccomp={seccomp:?}",
            container.id
        ));
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
pub(super) struct FakeLauncher {
    guest: Arc<FakeGuest>,
    pub(super) boots: Mutex<Vec<String>>,
    /// The `org.rvm.seccomp` annotation of each booted task's spec.
    pub(super) seccomp: Mutex<Vec<Option<String>>>,
    pub(super) refuse_boot: Mutex<bool>,
}

fn seccomp_annotation(spec: &Spec) -> Option<String> {
    spec.annotations()
        .as_ref()?
        .get(rvm_protocol::annotations::SECCOMP)
        .cloned()
}

#[async_trait]
impl Launcher for FakeLauncher {
    async fn layer_disks(
        &self,
        _request: &api::CreateTaskRequest,
    ) -> Result<Vec<LayerImage>, ttrpc::Error> {
        Ok(Vec::new())
    }

    async fn boot(&self, request: VmRequest<'_>) -> Result<Arc<dyn GuestAgent>, TaskVmError> {
        self.boots
            .lock()
            .unwrap()
            .push(format!("{} slots={}", request.id, request.disk_slots));
        self.seccomp
            .lock()
            .unwrap()
            .push(seccomp_annotation(&request.spec));
        if *self.refuse_boot.lock().unwrap() {
            return Err(VmError::NoSlots(request.id.to_owned()).into());
        }
        let guest: Arc<dyn GuestAgent> = self.guest.clone();
        Ok(guest)
    }
}

/// The events containerd would have received, in order.
#[derive(Default)]
pub(super) struct FakeEvents {
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
    pub(super) fn topics(&self) -> Vec<String> {
        self.published
            .borrow()
            .iter()
            .map(|(topic, _)| topic.clone())
            .collect()
    }

    /// The events on `topic` published so far.
    pub(super) fn on<M: MessageFull + Clone>(&self, topic: &str) -> Vec<M> {
        self.published
            .borrow()
            .iter()
            .filter(|(t, _)| t == topic)
            .filter_map(|(_, event)| event.downcast_ref::<M>().cloned())
            .collect()
    }

    /// Waits (up to [`DEADLINE`]) for the `n`th event (from 1) on `topic`.
    pub(super) async fn nth<M: MessageFull + Clone>(&self, topic: &str, n: usize) -> M {
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
pub(super) struct Harness {
    pub(super) service: Service,
    pub(super) guest: Arc<FakeGuest>,
    pub(super) launcher: Arc<FakeLauncher>,
    pub(super) events: Arc<FakeEvents>,
    pub(super) exit: Arc<ExitSignal>,
    dir: tempfile::TempDir,
}

pub(super) fn ctx() -> TtrpcContext {
    TtrpcContext {
        fd: -1,
        mh: Default::default(),
        metadata: HashMap::new(),
        timeout_nano: 0,
    }
}

pub(super) fn harness() -> Harness {
    harness_with(Ok(Unprofiled::RuntimeDefault))
}

/// A harness whose shim is configured with `unprofiled`.
pub(super) fn harness_with(unprofiled: Result<Unprofiled, seccomp::ConfigError>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let guest = Arc::new(FakeGuest::new());
    let launcher = Arc::new(FakeLauncher {
        guest: guest.clone(),
        boots: Mutex::new(Vec::new()),
        seccomp: Mutex::new(Vec::new()),
        refuse_boot: Mutex::new(false),
    });
    let events = Arc::new(FakeEvents::default());
    let exit = Arc::new(ExitSignal::default());
    let service = Service::with_parts(
        events.clone(),
        exit.clone(),
        Layout::new(Some(dir.path().join("state"))),
        launcher.clone(),
        unprofiled,
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
pub(super) fn code_of(error: ttrpc::Error) -> (Code, String) {
    match error {
        ttrpc::Error::RpcStatus(status) => (status.code(), status.message().to_owned()),
        other => panic!("not an RPC status: {other:?}"),
    }
}

impl Harness {
    /// Writes a bundle for task `id` whose spec carries `annotations`.
    pub(super) fn bundle(&self, id: &str, annotations: &[(&str, &str)]) -> String {
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

    pub(super) async fn create_with(
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

    pub(super) async fn create(&self, id: &str) -> Result<api::CreateTaskResponse, ttrpc::Error> {
        self.create_with(id, &[]).await
    }

    pub(super) async fn start(
        &self,
        id: &str,
        exec: &str,
    ) -> Result<api::StartResponse, ttrpc::Error> {
        let request = api::StartRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            ..Default::default()
        };
        self.service.start(&ctx(), request).await
    }

    pub(super) async fn exec(&self, id: &str, exec: &str) -> Result<api::Empty, ttrpc::Error> {
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

    pub(super) async fn kill(
        &self,
        id: &str,
        exec: &str,
        signal: u32,
    ) -> Result<api::Empty, ttrpc::Error> {
        let request = api::KillRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            signal,
            ..Default::default()
        };
        self.service.kill(&ctx(), request).await
    }

    pub(super) async fn state(
        &self,
        id: &str,
        exec: &str,
    ) -> Result<api::StateResponse, ttrpc::Error> {
        let request = api::StateRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            ..Default::default()
        };
        self.service.state(&ctx(), request).await
    }

    pub(super) async fn wait(
        &self,
        id: &str,
        exec: &str,
    ) -> Result<api::WaitResponse, ttrpc::Error> {
        let request = api::WaitRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            ..Default::default()
        };
        tokio::time::timeout(DEADLINE, self.service.wait(&ctx(), request))
            .await
            .expect("wait did not return")
    }

    pub(super) async fn delete(
        &self,
        id: &str,
        exec: &str,
    ) -> Result<api::DeleteResponse, ttrpc::Error> {
        let request = api::DeleteRequest {
            id: id.to_owned(),
            exec_id: exec.to_owned(),
            ..Default::default()
        };
        self.service.delete(&ctx(), request).await
    }

    /// Creates and starts task `id`, then has its init exit with `code` and waits for the exit.
    pub(super) async fn run_to_exit(&self, id: &str, code: i32) {
        self.create(id).await.unwrap();
        self.start(id, "").await.unwrap();
        self.guest.exit(id, ExecId::Init, code, false);
        self.wait(id, "").await.unwrap();
    }
}

pub(super) fn status_of(state: &api::StateResponse) -> TaskStatus {
    state.status.enum_value_or_default()
}

/// Polls `future` once: whether it was ready.
pub(super) async fn is_ready_now(mut future: std::pin::Pin<&mut impl std::future::Future>) -> bool {
    std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}
