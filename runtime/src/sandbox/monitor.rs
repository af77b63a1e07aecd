//! The per-container monitor (as conmon is for podman): boots the container's VM (a
//! [`crate::vm::Vm`], the VM object the shim uses too), owns the container's stdio (relayed to an
//! attached `rvm run` and written to the json-file log), records the state and exit status, shuts
//! the VM down and cleans up (`--rm`).
//!
//! It runs in a process of its own, detached from the terminal, so that `rvm` stays a plain
//! command and containers outlive it; `rvm run` talks to it over the attach socket.
//!
//! While it lives it is the only writer of the container's `state.json` (see
//! [`super::state`]); what the CLI asks of it (keep a `--rm` container across `rvm restart`) it
//! reads from the CLI's `intent.json`. Waiters learn of its writes through the container
//! directory's inotify events and of its death through its pidfd ([`super::wait`]).
//!
//! It drives the VM through [`crate::vm::guest::Guest`] and takes the boot as a closure, so that
//! its tests run it against a fake guest with a real container store.

use std::fs;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::agent::{AgentSession, ExitStatus, Started};
use super::attach::{self, Frame};
use super::config::ContainerConfig;
use super::layout::Layout;
use super::log::{LogWriter, Stream};
use super::process::ProcessId;
use super::state::{Containers, Ended, Lifecycle, StateError};
use super::time;
use super::vmm::DiskArg;
use super::volume_check;
use crate::vm::create::{device_disk, layer_disk, volume_disk};
use crate::vm::guest::Guest;
use crate::vm::stdio::OutputSink;
use crate::vm::{NewContainer, Vm, VmError, VmNetwork, VmSpec};

/// How long output may keep draining after the process exited.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum MonitorError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Sends frames to the attached client, if any; a client that went away is ignored.
#[derive(Debug, Clone)]
struct Outbox(Option<mpsc::UnboundedSender<Frame>>);

impl Outbox {
    fn send(&self, frame: Frame) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(frame);
        }
    }
}

/// Why the container could not be started, and the exit code `rvm run` reports for it.
#[derive(Debug)]
struct StartFailure {
    code: i32,
    message: String,
}

impl From<VmError> for StartFailure {
    fn from(error: VmError) -> Self {
        Self {
            code: error.exit_code(),
            message: error.user_message(),
        }
    }
}

/// One output stream of the container: into the json-file log and to the attached client.
struct LogSink {
    stream: Stream,
    log: Arc<Mutex<LogWriter>>,
    outbox: Outbox,
    /// A write failed and was reported: the next failures are not (a full disk would otherwise
    /// fill the monitor's own log with one line per line of output).
    failing: bool,
}

impl OutputSink for LogSink {
    async fn write(&mut self, data: Vec<u8>) -> io::Result<()> {
        if let Ok(mut log) = self.log.lock() {
            match log.write(self.stream, &data) {
                Ok(()) => self.failing = false,
                Err(err) if !self.failing => {
                    self.failing = true;
                    tracing::warn!(%err, "cannot write the container log (reported once until a write succeeds)");
                }
                Err(_) => {}
            }
        }
        self.outbox.send(match self.stream {
            Stream::Stdout => Frame::Stdout(data),
            Stream::Stderr => Frame::Stderr(data),
        });
        Ok(())
    }
}

/// Runs the container `id` to its end. `attach` is the client's socket for `rvm run` without
/// `-d`. Returns the container's exit code.
pub async fn run(
    containers: &Containers,
    id: &str,
    attach: Option<UnixStream>,
) -> Result<i32, MonitorError> {
    let boot = async |layout: &Layout, spec: VmSpec, started: &dyn Fn(u32)| {
        layout.create_vm_files(&spec.id).map_err(|e| VmError::Dir {
            path: e.path,
            source: e.source,
        })?;
        Vm::boot(layout, spec, started).await
    };
    run_in(containers, id, attach, boot).await
}

/// [`run`] in the guest that `boot` boots (given the layout, the VM's spec and where to tell the
/// VMM's pid): a [`Vm`] but in tests.
async fn run_in<G: Guest>(
    containers: &Containers,
    id: &str,
    attach: Option<UnixStream>,
    boot: impl AsyncFnOnce(&Layout, VmSpec, &dyn Fn(u32)) -> Result<G, VmError>,
) -> Result<i32, MonitorError> {
    let layout = containers.layout().clone();
    let config = containers.load(id)?.config;
    let me = ProcessId::current();
    containers.update(id, |state| {
        state.lifecycle = Lifecycle::Created { failed: None };
        state.monitor = me;
        state.vmm = None;
        state.guest_pid = None;
    })?;

    let (outbox, attach_in, writer) = split_attach(attach);
    let log_path = layout.log_path(id);
    let log = Arc::new(Mutex::new(LogWriter::open(&log_path, config.log).map_err(
        |source| MonitorError::Io {
            action: "open log",
            path: log_path.clone(),
            source,
        },
    )?));

    let recorded_vmm = |pid| {
        let _ = containers.update(id, |state| state.vmm = ProcessId::of(pid));
    };
    // Before any VM of this container parses a volume another container's VM wrote.
    if let Err(err) = volume_check::prepare(&config.volumes, &config.id) {
        let failure = StartFailure {
            code: 125,
            message: err.to_string(),
        };
        return finish_failed(containers, &config, failure, outbox, writer).await;
    }
    let vm = match boot(&layout, vm_spec(&config), &recorded_vmm).await {
        Ok(vm) => vm,
        Err(err) => return finish_failed(containers, &config, err.into(), outbox, writer).await,
    };
    let jail = vm.jail();
    containers.update(id, |state| state.jail = jail)?;
    let guest_pid = match create_and_start(&vm, &config).await {
        Ok(pid) => pid,
        Err(failure) => {
            vm.shutdown().await;
            return finish_failed(containers, &config, failure, outbox, writer).await;
        }
    };
    containers.update(id, |state| {
        state.lifecycle = Lifecycle::Running;
        state.guest_pid = Some(guest_pid);
        state.started_at = Some(time::now_rfc3339());
    })?;
    tracing::info!(guest_pid, "container started");

    let pumps = [Stream::Stdout, Stream::Stderr].map(|stream| {
        let sink = LogSink {
            stream,
            log: log.clone(),
            outbox: outbox.clone(),
            failing: false,
        };
        vm.spawn_output(id, stream, sink)
    });
    if let Some(input) = attach_in {
        vm.spawn_input(id, input);
    }

    let end = vm.wait_process(id, "").await;
    for pump in pumps {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, pump).await;
    }
    if let Ok(mut log) = log.lock() {
        let _ = log.flush_partial(Stream::Stdout);
        let _ = log.flush_partial(Stream::Stderr);
    }
    let ExitStatus { code, oom_killed } = end.status;
    containers.update(id, |state| {
        state.lifecycle = Lifecycle::Exited(Ended {
            code,
            oom_killed,
            error: end.lost.clone(),
            finished_at: Some(time::now_rfc3339()),
        });
    })?;
    tracing::info!(code, oom = oom_killed, lost = ?end.lost, "container exited");
    outbox.send(Frame::Exit(code));
    vm.shutdown().await;
    cleanup(containers, &config, outbox, writer).await?;
    Ok(code)
}

/// The container's VM: its layers, scratch, volume and `--device` disks, its size and network.
pub(crate) fn vm_spec(config: &ContainerConfig) -> VmSpec {
    let layers = config.layers.iter().map(|layer| DiskArg {
        path: layer.path.clone(),
        read_only: true,
        serial: layer.serial.clone(),
    });
    let scratch = VmSpec::scratch_disk(config.scratch.clone());
    let volumes = config.volumes.iter().map(|volume| DiskArg {
        path: volume.path.clone(),
        read_only: volume.read_only,
        serial: volume.serial.clone(),
    });
    let devices = config.devices.iter().map(|device| DiskArg {
        path: device.host_path.clone(),
        read_only: !device.permissions.contains('w'),
        serial: device.serial.clone(),
    });
    let network = match &config.endpoint {
        Some(endpoint) => VmNetwork::Bridge(endpoint.clone()),
        None => VmNetwork::None,
    };
    VmSpec {
        id: config.id.clone(),
        size: config.vm,
        disks: layers
            .chain(std::iter::once(scratch))
            .chain(volumes)
            .chain(devices)
            .collect(),
        disk_slots: 0,
        network,
        hostname: config.hostname(),
    }
}

/// The container as the agent creates it.
pub fn new_container(config: &ContainerConfig) -> NewContainer {
    NewContainer {
        id: config.id.clone(),
        spec: config.spec.clone(),
        layers: config
            .layers
            .iter()
            .map(|layer| layer_disk(&layer.serial, &layer.diff_id))
            .collect(),
        volumes: config
            .volumes
            .iter()
            .map(|volume| volume_disk(&volume.serial, &volume.destination, volume.read_only))
            .collect(),
        devices: config
            .devices
            .iter()
            .map(|device| device_disk(&device.serial, &device.container_path, &device.permissions))
            .collect(),
        terminal: config.tty,
        stdin: config.open_stdin,
        ..Default::default()
    }
}

/// Creates the container in its VM and starts its init: the init's pid in the guest.
async fn create_and_start(vm: &impl Guest, config: &ContainerConfig) -> Result<u32, StartFailure> {
    vm.create(&new_container(config)).await?;
    match vm.start(&config.id).await {
        Ok(Started {
            failure: Some(failure),
            ..
        }) => Err(StartFailure {
            code: failure.code,
            message: failure.message,
        }),
        Ok(started) => Ok(started.pid),
        Err(error) => Err(error.into()),
    }
}

type AttachParts = (
    Outbox,
    Option<tokio::net::unix::OwnedReadHalf>,
    Option<tokio::task::JoinHandle<()>>,
);

/// Splits the client socket into a frame writer task (fed by the outbox) and its read half.
fn split_attach(attach: Option<UnixStream>) -> AttachParts {
    let Some(stream) = attach else {
        return (Outbox(None), None, None);
    };
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if attach::write_frame(&mut write, &frame).await.is_err() {
                // The client went away: the container runs on, its output goes to the log.
                break;
            }
        }
    });
    (Outbox(Some(tx)), Some(read), Some(writer))
}

/// Relays the attached client's frames to the container's init until the client leaves.
pub(crate) async fn pump_input(
    session: AgentSession,
    id: String,
    mut input: tokio::net::unix::OwnedReadHalf,
) {
    loop {
        let frame = match attach::read_frame(&mut input).await {
            Ok(Some(frame)) => frame,
            // The client left: Docker keeps the container running, with stdin left open.
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(%err, "bad frame from the client");
                break;
            }
        };
        let result = match frame {
            Frame::Stdin(data) => session.write_stdin(&id, "", &data).await,
            Frame::StdinEof => session.close_stdin(&id, "").await,
            Frame::Resize { rows, columns } => session.resize(&id, "", rows, columns).await,
            Frame::Signal(signal) => session.signal(&id, "", signal).await,
            other => {
                tracing::warn!(?other, "unexpected frame from the client");
                Ok(())
            }
        };
        if let Err(err) = result {
            tracing::warn!(%err, "cannot relay client input");
        }
    }
}

/// Records a failure to start, tells the client, ends the VM and cleans up.
async fn finish_failed(
    containers: &Containers,
    config: &ContainerConfig,
    failure: StartFailure,
    outbox: Outbox,
    writer: Option<tokio::task::JoinHandle<()>>,
) -> Result<i32, MonitorError> {
    tracing::error!(code = failure.code, message = %failure.message, "container failed to start");
    // As Docker: a container that never started stays "created", with the exit code and error.
    containers.update(&config.id, |state| {
        state.lifecycle = Lifecycle::Created {
            failed: Some(Ended {
                code: failure.code,
                oom_killed: false,
                error: Some(failure.message.clone()),
                finished_at: Some(time::now_rfc3339()),
            }),
        };
        state.vmm = None;
    })?;
    outbox.send(Frame::Failed {
        code: failure.code,
        message: failure.message,
    });
    cleanup(containers, config, outbox, writer).await?;
    Ok(failure.code)
}

/// Removes the sockets, drops the monitor from the state, deletes everything with `--rm` (unless
/// `rvm restart` is at work), and only then lets the client go: `rvm run` returns once the
/// container is fully cleaned up.
async fn cleanup(
    containers: &Containers,
    config: &ContainerConfig,
    outbox: Outbox,
    writer: Option<tokio::task::JoinHandle<()>>,
) -> Result<(), MonitorError> {
    let _ = fs::remove_dir_all(containers.layout().run_dir(&config.id));
    let restarting = containers
        .load(&config.id)
        .is_ok_and(|container| container.intent.restart);
    let result = if config.auto_remove && !restarting {
        containers
            .remove(&config.id)
            .inspect(|()| tracing::info!("container removed (--rm)"))
    } else {
        containers
            .update(&config.id, |state| {
                state.monitor = None;
                state.vmm = None;
            })
            .map(drop)
    };
    drop(outbox);
    if let Some(writer) = writer {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, writer).await;
    }
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::super::agent::ExecFailure;
    use super::super::log::read_entries;
    use super::super::state::fixtures::{config, store};
    use super::super::state::ContainerState;
    use super::*;
    use crate::vm::ProcessEnd;
    use rvm_protocol::exit::RUNTIME_ERROR;
    use tokio::task::JoinHandle;

    /// A guest that does what it is told; the store it records into is real.
    struct FakeGuest {
        containers: Containers,
        create_error: Mutex<Option<VmError>>,
        start_failure: Option<ExecFailure>,
        stdout: Vec<u8>,
        end: ProcessEnd,
        /// The container's state when the monitor waited for its process.
        running: Mutex<Option<ContainerState>>,
        shutdowns: Mutex<u32>,
    }

    impl FakeGuest {
        fn new(containers: &Containers) -> Self {
            Self {
                containers: containers.clone(),
                create_error: Mutex::new(None),
                start_failure: None,
                stdout: Vec::new(),
                end: exit(0),
                running: Mutex::new(None),
                shutdowns: Mutex::new(0),
            }
        }
    }

    fn exit(code: i32) -> ProcessEnd {
        ProcessEnd {
            status: ExitStatus {
                code,
                oom_killed: false,
            },
            files: Vec::new(),
            lost: None,
        }
    }

    impl Guest for &FakeGuest {
        async fn create(&self, _container: &NewContainer) -> Result<(), VmError> {
            match self.create_error.lock().unwrap().take() {
                Some(error) => Err(error),
                None => Ok(()),
            }
        }

        async fn start(&self, _id: &str) -> Result<Started, VmError> {
            Ok(Started {
                pid: 7,
                failure: self.start_failure.clone(),
            })
        }

        fn spawn_output(
            &self,
            _container: &str,
            stream: Stream,
            mut sink: impl OutputSink,
        ) -> JoinHandle<()> {
            let data = match stream {
                Stream::Stdout => self.stdout.clone(),
                Stream::Stderr => Vec::new(),
            };
            tokio::spawn(async move {
                if !data.is_empty() {
                    sink.write(data).await.unwrap();
                }
                sink.finish().await;
            })
        }

        fn spawn_input(&self, _container: &str, _input: tokio::net::unix::OwnedReadHalf) {}

        async fn wait_process(&self, container: &str, _exec: &str) -> ProcessEnd {
            let state = self.containers.load(container).unwrap().state;
            *self.running.lock().unwrap() = Some(state);
            self.end.clone()
        }

        async fn shutdown(&self) {
            *self.shutdowns.lock().unwrap() += 1;
        }

        fn jail(&self) -> Option<crate::jail::JailInfo> {
            Some(crate::jail::JailInfo {
                uid: 200_007,
                ..Default::default()
            })
        }
    }

    /// Runs container `config` (created in `containers`) in `guest`.
    async fn run_fake(containers: &Containers, config: ContainerConfig, guest: &FakeGuest) -> i32 {
        boot_and_run(containers, config, Ok(guest)).await
    }

    /// Runs container `config` (created in `containers`) in what the boot returns.
    async fn boot_and_run(
        containers: &Containers,
        config: ContainerConfig,
        booted: Result<&FakeGuest, VmError>,
    ) -> i32 {
        let id = config.id.clone();
        containers.create(config).unwrap();
        let boot = async |_: &Layout, _: VmSpec, started: &dyn Fn(u32)| {
            started(std::process::id());
            booted
        };
        run_in(containers, &id, None, boot).await.unwrap()
    }

    fn failed_to_start(containers: &Containers, id: &str) -> Ended {
        let state = containers.load(id).unwrap().state;
        assert_eq!((state.monitor, state.vmm), (None, None));
        match state.lifecycle {
            Lifecycle::Created {
                failed: Some(ended),
            } => ended,
            other => panic!("not failed to start: {other:?}"),
        }
    }

    fn exited(containers: &Containers, id: &str) -> Ended {
        match containers.load(id).unwrap().state.lifecycle {
            Lifecycle::Exited(ended) => ended,
            other => panic!("not exited: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_container_runs_and_its_exit_code_is_recorded() {
        let (_dir, containers) = store();
        let guest = FakeGuest {
            end: exit(3),
            ..FakeGuest::new(&containers)
        };
        let code = run_fake(&containers, config("c1"), &guest).await;
        assert_eq!(code, 3);
        let running = guest.running.lock().unwrap().clone().unwrap();
        assert_eq!(running.lifecycle, Lifecycle::Running);
        assert_eq!(running.vmm, ProcessId::of(std::process::id()));
        assert_eq!(running.monitor, Some(ProcessId::current().unwrap()));
        let state = containers.load("c1").unwrap().state;
        assert_eq!(state.guest_pid, Some(7));
        assert!(state.started_at.is_some());
        assert_eq!(
            state.jail.map(|jail| jail.uid),
            Some(200_007),
            "the VMM's jail is recorded"
        );
        assert_eq!(state.monitor, None);
        assert_eq!(state.vmm, None);
        let ended = exited(&containers, "c1");
        assert_eq!(
            (ended.code, ended.oom_killed, ended.error),
            (3, false, None)
        );
        assert!(ended.finished_at.is_some());
        assert_eq!(*guest.shutdowns.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_boot_failure_is_recorded_as_the_containers_error() {
        let (_dir, containers) = store();
        let error = VmError::Task("the VMM".into());
        let code = boot_and_run(&containers, config("c1"), Err(error)).await;
        assert_eq!(code, RUNTIME_ERROR);
        let ended = failed_to_start(&containers, "c1");
        assert_eq!(ended.code, RUNTIME_ERROR);
        assert_eq!(ended.error.as_deref(), Some("the VMM failed"));
        assert!(ended.finished_at.is_some());
    }

    #[tokio::test]
    async fn a_create_failure_is_recorded_and_the_vm_shut_down() {
        let (_dir, containers) = store();
        let guest = FakeGuest::new(&containers);
        *guest.create_error.lock().unwrap() = Some(VmError::NoSlots("c1".into()));
        let code = run_fake(&containers, config("c1"), &guest).await;
        assert_eq!(code, RUNTIME_ERROR);
        let ended = failed_to_start(&containers, "c1");
        assert_eq!(
            ended.error.as_deref(),
            Some("the VM of c1 has no disk slots")
        );
        assert_eq!(*guest.shutdowns.lock().unwrap(), 1);
        assert!(guest.running.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_start_failure_keeps_the_agents_code_and_message() {
        let (_dir, containers) = store();
        let guest = FakeGuest {
            start_failure: Some(ExecFailure {
                code: 127,
                message: "exec: \"nope\": not found".into(),
            }),
            ..FakeGuest::new(&containers)
        };
        let code = run_fake(&containers, config("c1"), &guest).await;
        assert_eq!(code, 127);
        let ended = failed_to_start(&containers, "c1");
        assert_eq!(ended.code, 127);
        assert_eq!(ended.error.as_deref(), Some("exec: \"nope\": not found"));
        assert_eq!(*guest.shutdowns.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_vm_lost_under_the_process_records_the_vms_code_and_why() {
        let (_dir, containers) = store();
        let guest = FakeGuest {
            end: ProcessEnd {
                lost: Some("the VM was killed by signal 9".into()),
                ..exit(137)
            },
            ..FakeGuest::new(&containers)
        };
        let code = run_fake(&containers, config("c1"), &guest).await;
        assert_eq!(code, 137);
        let ended = exited(&containers, "c1");
        assert_eq!(ended.code, 137);
        assert!(!ended.oom_killed);
        assert_eq!(
            ended.error.as_deref(),
            Some("the VM was killed by signal 9")
        );
    }

    #[tokio::test]
    async fn an_oom_kill_is_recorded() {
        let (_dir, containers) = store();
        let guest = FakeGuest {
            end: ProcessEnd {
                status: ExitStatus {
                    code: 137,
                    oom_killed: true,
                },
                ..exit(0)
            },
            ..FakeGuest::new(&containers)
        };
        assert_eq!(run_fake(&containers, config("c1"), &guest).await, 137);
        let ended = exited(&containers, "c1");
        assert_eq!(
            (ended.code, ended.oom_killed, ended.error),
            (137, true, None)
        );
    }

    #[tokio::test]
    async fn an_auto_remove_container_is_removed_after_it_exits() {
        let (_dir, containers) = store();
        let guest = FakeGuest {
            end: exit(5),
            ..FakeGuest::new(&containers)
        };
        let config = ContainerConfig {
            auto_remove: true,
            ..config("c1")
        };
        assert_eq!(run_fake(&containers, config, &guest).await, 5);
        assert!(containers.load("c1").is_err());
        assert!(containers.ids().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_auto_remove_container_is_kept_while_restarting() {
        let (_dir, containers) = store();
        let guest = FakeGuest::new(&containers);
        let config = ContainerConfig {
            auto_remove: true,
            ..config("c1")
        };
        containers.create(config.clone()).unwrap();
        containers
            .set_intent("c1", |intent| intent.restart = true)
            .unwrap();
        let boot = async |_: &Layout, _: VmSpec, _: &dyn Fn(u32)| Ok(&guest);
        assert_eq!(run_in(&containers, "c1", None, boot).await.unwrap(), 0);
        assert_eq!(exited(&containers, "c1").code, 0);
    }

    #[tokio::test]
    async fn the_output_reaches_the_log() {
        let (_dir, containers) = store();
        let guest = FakeGuest {
            stdout: b"hello\nworld".to_vec(),
            ..FakeGuest::new(&containers)
        };
        run_fake(&containers, config("c1"), &guest).await;
        let (entries, _) = read_entries(&containers.layout().log_path("c1"), 0).unwrap();
        let lines: Vec<_> = entries
            .iter()
            .map(|entry| (entry.stream, entry.log.as_str()))
            .collect();
        assert_eq!(
            lines,
            [(Stream::Stdout, "hello\n"), (Stream::Stdout, "world")]
        );
    }

    /// Every frame the monitor sent to an attached client, to the end of its stream.
    async fn frames(mut client: UnixStream) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = attach::read_frame(&mut client).await.unwrap() {
            frames.push(frame);
        }
        frames
    }

    #[tokio::test]
    async fn an_attached_client_gets_the_output_then_the_exit_code() {
        let (_dir, containers) = store();
        let guest = FakeGuest {
            stdout: b"hi\n".to_vec(),
            end: exit(2),
            ..FakeGuest::new(&containers)
        };
        containers.create(config("c1")).unwrap();
        let (client, monitor) = UnixStream::pair().unwrap();
        let boot = async |_: &Layout, _: VmSpec, _: &dyn Fn(u32)| Ok(&guest);
        assert_eq!(
            run_in(&containers, "c1", Some(monitor), boot)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            frames(client).await,
            [Frame::Stdout(b"hi\n".to_vec()), Frame::Exit(2)]
        );
    }

    #[tokio::test]
    async fn an_attached_client_is_told_why_the_container_did_not_start() {
        let (_dir, containers) = store();
        containers.create(config("c1")).unwrap();
        let (client, monitor) = UnixStream::pair().unwrap();
        let boot = async |_: &Layout, _: VmSpec, _: &dyn Fn(u32)| {
            Err::<&FakeGuest, _>(VmError::Task("the VMM".into()))
        };
        let code = run_in(&containers, "c1", Some(monitor), boot)
            .await
            .unwrap();
        assert_eq!(code, RUNTIME_ERROR);
        assert_eq!(
            frames(client).await,
            [Frame::Failed {
                code: RUNTIME_ERROR,
                message: "the VMM failed".into(),
            }]
        );
    }
}
