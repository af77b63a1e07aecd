//! The per-container monitor (as conmon is for podman): owns the VMM child, the agent session,
//! the container's stdio (relayed to an attached `rvm run` and written to the json-file log),
//! records the state and exit status, shuts the VM down and cleans up (`--rm`).
//!
//! It runs in a process of its own, detached from the terminal, so that `rvm` stays a plain
//! command and containers outlive it; `rvm run` talks to it over the attach socket.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus as ProcessExit;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rvm_protocol::agent::{CreateContainerRequest, LayerDisk, VolumeDisk};
use rvm_protocol::exit::RUNTIME_ERROR;
use rvm_protocol::serial::SCRATCH_SERIAL;
use thiserror::Error;
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::mpsc;

use super::agent::{AgentError, AgentSession, ExitStatus, Started};
use super::artifacts::{self, ArtifactError};
use super::attach::{self, Frame};
use super::config::ContainerConfig;
use super::log::{LogWriter, Stream};
use super::process::ProcessId;
use super::state::{Containers, StateError, Status, UNKNOWN_EXIT};
use super::time;
use super::vmm::VmmCommand;
use crate::network::endpoint;

/// How long the guest may take to boot to a listening agent, unless `RVM_AGENT_TIMEOUT` says.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the VM may take to end after the agent was asked to shut it down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
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

/// The agent-boot timeout from `RVM_AGENT_TIMEOUT` (seconds), else the default.
pub fn agent_timeout() -> Duration {
    std::env::var("RVM_AGENT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_AGENT_TIMEOUT)
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

impl StartFailure {
    fn runtime(message: impl Into<String>) -> Self {
        Self {
            code: RUNTIME_ERROR,
            message: message.into(),
        }
    }

    fn agent(error: &AgentError) -> Self {
        Self {
            code: error.exit_code(),
            message: error.agent_message(),
        }
    }
}

/// Runs the container `id` to its end. `attach` is the client's socket for `rvm run` without
/// `-d`. Returns the container's exit code.
pub async fn run(
    containers: &Containers,
    id: &str,
    attach: Option<UnixStream>,
) -> Result<i32, MonitorError> {
    let layout = containers.layout().clone();
    let config = containers.load(id)?.config;
    let me = ProcessId::current();
    containers.update(id, |state| {
        state.status = Status::Created;
        state.monitor = me;
        state.vmm = None;
        state.guest_pid = None;
        state.exit_code = None;
        state.oom_killed = false;
        state.error = None;
        state.finished_at = None;
    })?;

    let (outbox, attach_in, writer) = split_attach(attach);
    let log_path = layout.log_path(id);
    let log = Arc::new(Mutex::new(LogWriter::open(&log_path).map_err(
        |source| MonitorError::Io {
            action: "open log",
            path: log_path.clone(),
            source,
        },
    )?));

    if let Err(failure) = attach_network(containers, &config).await {
        return finish_failed(containers, &config, failure, outbox, None, writer).await;
    }
    let mut vmm = match spawn_vmm(containers, &config) {
        Ok(child) => child,
        Err(failure) => {
            return finish_failed(containers, &config, failure, outbox, None, writer).await;
        }
    };
    let session = match boot(&layout.vsock_path(id), &mut vmm, &config, containers).await {
        Ok(session) => session,
        Err(failure) => {
            return finish_failed(containers, &config, failure, outbox, Some(vmm), writer).await;
        }
    };
    let guest_pid = match session.start(id).await {
        Ok(Started {
            failure: Some(failure),
            ..
        }) => {
            let failure = StartFailure {
                code: failure.code,
                message: failure.message,
            };
            shutdown_vm(&session, &mut vmm).await;
            return finish_failed(containers, &config, failure, outbox, Some(vmm), writer).await;
        }
        Ok(started) => started.pid,
        Err(error) => {
            let failure = StartFailure::agent(&error);
            shutdown_vm(&session, &mut vmm).await;
            return finish_failed(containers, &config, failure, outbox, Some(vmm), writer).await;
        }
    };
    containers.update(id, |state| {
        state.status = Status::Running;
        state.guest_pid = Some(guest_pid);
        state.started_at = Some(time::now_rfc3339());
    })?;
    tracing::info!(guest_pid, "container started");

    let pumps = [Stream::Stdout, Stream::Stderr].map(|stream| {
        tokio::spawn(pump_output(
            session.clone(),
            id.to_owned(),
            stream,
            log.clone(),
            outbox.clone(),
        ))
    });
    if let Some(input) = attach_in {
        tokio::spawn(pump_input(session.clone(), id.to_owned(), input));
    }

    let (status, error) = tokio::select! {
        waited = session.wait(id, "") => match waited {
            Ok(status) => (status, None),
            Err(err) => (ExitStatus { code: UNKNOWN_EXIT, oom_killed: false }, Some(format!("lost the container's exit status: {err}"))),
        },
        exited = vmm.wait() => {
            let (code, reason) = vm_ended(exited.ok());
            (ExitStatus { code, oom_killed: false }, Some(reason))
        }
    };
    for pump in pumps {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, pump).await;
    }
    if let Ok(mut log) = log.lock() {
        let _ = log.flush_partial(Stream::Stdout);
        let _ = log.flush_partial(Stream::Stderr);
    }
    containers.update(id, |state| {
        state.status = Status::Exited;
        state.exit_code = Some(status.code);
        state.oom_killed = status.oom_killed;
        state.error = error.clone();
        state.finished_at = Some(time::now_rfc3339());
    })?;
    tracing::info!(
        code = status.code,
        oom = status.oom_killed,
        ?error,
        "container exited"
    );
    outbox.send(Frame::Exit(status.code));
    shutdown_vm(&session, &mut vmm).await;
    cleanup(containers, &config, outbox, writer).await?;
    Ok(status.code)
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

fn spawn_vmm(containers: &Containers, config: &ContainerConfig) -> Result<Child, StartFailure> {
    let layout = containers.layout();
    let failure = |e: ArtifactError| StartFailure::runtime(e.to_string());
    let vmm_path = artifacts::find_vmm().map_err(failure)?;
    let guest = artifacts::find_guest().map_err(failure)?;
    let command = VmmCommand::for_container(layout, config, vmm_path, guest);
    let run_dir = layout.run_dir(&config.id);
    fs::create_dir_all(&run_dir)
        .map_err(|e| StartFailure::runtime(format!("cannot create {}: {e}", run_dir.display())))?;
    let _ = fs::remove_file(&command.vsock);
    let vmm_log = layout.container_dir(&config.id).join("vmm.log");
    let child = command
        .spawn(&vmm_log)
        .map_err(|e| StartFailure::runtime(e.to_string()))?;
    let vmm_id = child.id().and_then(ProcessId::of);
    let _ = containers.update(&config.id, |state| state.vmm = vmm_id);
    Ok(child)
}

/// Puts the VM's TAP on the bridge and installs its port forwards (bridge networking only).
async fn attach_network(
    containers: &Containers,
    config: &ContainerConfig,
) -> Result<(), StartFailure> {
    let Some(endpoint) = &config.endpoint else {
        return Ok(());
    };
    endpoint::attach(containers.layout().root(), &config.id, endpoint)
        .await
        .map_err(|e| StartFailure::runtime(e.to_string()))
}

/// Waits for the agent and creates the container in it.
async fn boot(
    vsock: &Path,
    vmm: &mut Child,
    config: &ContainerConfig,
    containers: &Containers,
) -> Result<AgentSession, StartFailure> {
    let vmm_log = containers
        .layout()
        .container_dir(&config.id)
        .join("vmm.log");
    let console = containers.layout().console_path(&config.id);
    let session = AgentSession::connect(vsock, agent_timeout(), || match vmm.try_wait() {
        Ok(Some(status)) => Some(format!(
            "rvm-vmm exited ({status}); VMM log: {}; console: {}",
            tail(&vmm_log),
            tail(&console)
        )),
        _ => None,
    })
    .await
    .map_err(|e| StartFailure::runtime(e.to_string()))?;
    if let Some(endpoint) = &config.endpoint {
        let request = endpoint::configure_request(endpoint, &config.hostname());
        session
            .configure_network(&request)
            .await
            .map_err(|e| StartFailure::agent(&e))?;
    }
    let request = create_request(config).map_err(StartFailure::runtime)?;
    session
        .create(&request)
        .await
        .map_err(|e| StartFailure::agent(&e))?;
    Ok(session)
}

/// The CreateContainer request of the container.
pub fn create_request(config: &ContainerConfig) -> Result<CreateContainerRequest, String> {
    let spec = serde_json::to_vec(&config.spec)
        .map_err(|e| format!("cannot serialize the OCI spec of {}: {e}", config.id))?;
    Ok(CreateContainerRequest {
        container_id: config.id.clone(),
        sandbox_id: config.id.clone(),
        oci_spec_json: spec,
        layers: config
            .layers
            .iter()
            .map(|layer| LayerDisk {
                serial: layer.serial.clone(),
                diff_id: layer.diff_id.clone(),
                ..Default::default()
            })
            .collect(),
        scratch_disk_serial: SCRATCH_SERIAL.to_owned(),
        volumes: config
            .volumes
            .iter()
            .map(|volume| VolumeDisk {
                serial: volume.serial.clone(),
                destination: volume.destination.clone(),
                read_only: volume.read_only,
                ..Default::default()
            })
            .collect(),
        terminal: config.tty,
        stdin: config.open_stdin,
        ..Default::default()
    })
}

/// The last line or two of a diagnostic file, for error messages.
pub fn tail(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    match lines[start..].join(" | ") {
        empty if empty.is_empty() => "(empty)".to_owned(),
        joined => joined,
    }
}

/// The exit code and reason when the VMM ended while the container ran.
pub fn vm_ended(status: Option<ProcessExit>) -> (i32, String) {
    match status {
        Some(status) => match (status.code(), status.signal()) {
            (_, Some(signal)) => (
                128 + signal,
                format!("the VM ended unexpectedly: rvm-vmm was killed by signal {signal}"),
            ),
            (Some(code), _) => (
                UNKNOWN_EXIT,
                format!("the VM ended unexpectedly: rvm-vmm exited with status {code}"),
            ),
            _ => (UNKNOWN_EXIT, "the VM ended unexpectedly".to_owned()),
        },
        None => (UNKNOWN_EXIT, "the VM ended unexpectedly".to_owned()),
    }
}

async fn pump_output(
    session: AgentSession,
    id: String,
    stream: Stream,
    log: Arc<Mutex<LogWriter>>,
    outbox: Outbox,
) {
    loop {
        match session.read(stream, &id, "").await {
            Ok(Some(data)) => {
                if let Ok(mut log) = log.lock() {
                    if let Err(err) = log.write(stream, &data) {
                        tracing::warn!(%err, "cannot write the container log");
                    }
                }
                outbox.send(match stream {
                    Stream::Stdout => Frame::Stdout(data),
                    Stream::Stderr => Frame::Stderr(data),
                });
            }
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(?stream, %err, "output stream ended with an error");
                break;
            }
        }
    }
}

async fn pump_input(session: AgentSession, id: String, mut input: tokio::net::unix::OwnedReadHalf) {
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

/// Asks the agent to end the VM and waits for the VMM; kills it after the grace period.
async fn shutdown_vm(session: &AgentSession, vmm: &mut Child) {
    if let Ok(Some(_)) = vmm.try_wait() {
        return;
    }
    if let Err(err) = session.shutdown().await {
        tracing::warn!(%err, "Shutdown call failed; the VMM will be killed");
    }
    stop_vmm(vmm, SHUTDOWN_GRACE).await;
}

async fn stop_vmm(vmm: &mut Child, grace: Duration) {
    match tokio::time::timeout(grace, vmm.wait()).await {
        Ok(status) => tracing::info!(?status, "VMM ended"),
        Err(_) => {
            tracing::warn!("VMM did not end after shutdown; killing it");
            let _ = vmm.kill().await;
        }
    }
}

/// Records a failure to start, tells the client, ends the VM and cleans up.
async fn finish_failed(
    containers: &Containers,
    config: &ContainerConfig,
    failure: StartFailure,
    outbox: Outbox,
    vmm: Option<Child>,
    writer: Option<tokio::task::JoinHandle<()>>,
) -> Result<i32, MonitorError> {
    tracing::error!(code = failure.code, message = %failure.message, "container failed to start");
    if let Some(mut vmm) = vmm {
        if !matches!(vmm.try_wait(), Ok(Some(_))) {
            let _ = vmm.start_kill();
        }
        stop_vmm(&mut vmm, SHUTDOWN_GRACE).await;
    }
    // As Docker: a container that never started stays "created", with the exit code and error.
    containers.update(&config.id, |state| {
        state.status = Status::Created;
        state.exit_code = Some(failure.code);
        state.error = Some(failure.message.clone());
        state.finished_at = Some(time::now_rfc3339());
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
    if let Some(endpoint) = &config.endpoint {
        endpoint::detach(containers.layout().root(), &config.id, endpoint);
    }
    let restarting = containers
        .load(&config.id)
        .is_ok_and(|container| container.state.restarting);
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
