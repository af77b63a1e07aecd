//! The host's session with a sandbox's agent: connecting through the VMM's hybrid vsock while
//! the guest boots (retrying until a deadline), the version handshake, and typed calls for the
//! container lifecycle, stdio and signals. Also how an agent error becomes a Docker exit code.

use std::path::Path;
use std::time::Duration;

use rvm_protocol::agent::{
    CloseStdinRequest, ConfigureNetworkRequest, CreateContainerRequest, ExecProcessRequest,
    HostDirectory, ListProcessesRequest, PauseRequest, ProcessInfo, ReadOutputRequest,
    RemoveContainerRequest, ResizePtyRequest, ResumeRequest, ReturnedFile, ShutdownRequest,
    SignalProcessRequest, StartContainerRequest, StatsRequest, StatsResponse,
    UpdateDirectoryRequest, UpdateResourcesRequest, WaitProcessRequest, WaitProcessResponse,
    WriteStdinRequest,
};
use rvm_protocol::agent_ttrpc::AgentClient;
use rvm_protocol::client::{connect_agent, handshake};
use rvm_protocol::exit;
use rvm_protocol::messages::MAX_IO_CHUNK;
use rvm_protocol::ttrpc::{self, context, Code};
use thiserror::Error;
use tokio::time::Instant;

use super::log::Stream;
use crate::host::unix_path::SocketPath;

/// Timeout of ordinary (not long-poll) calls.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between connection attempts while the guest boots.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// One attempt's budget for the hybrid vsock handshake plus Version.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("the agent did not answer on {} within {waited:?}: {last}", path.display())]
    ConnectTimeout {
        path: std::path::PathBuf,
        waited: Duration,
        last: String,
    },
    #[error("the VM ended before its agent answered: {0}")]
    VmEnded(String),
    #[error("agent call {call} failed: {message}")]
    Rpc {
        call: &'static str,
        code: Option<Code>,
        message: String,
    },
}

impl AgentError {
    fn rpc(call: &'static str, error: ttrpc::Error) -> Self {
        match error {
            ttrpc::Error::RpcStatus(status) => Self::Rpc {
                call,
                code: Some(status.code()),
                message: status.message().to_owned(),
            },
            other => Self::Rpc {
                call,
                code: None,
                message: other.to_string(),
            },
        }
    }

    /// The exit code Docker gives this failure: 127 when the agent says the command does not
    /// exist (ttrpc NOT_FOUND), 126 when it cannot be executed (PERMISSION_DENIED), else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Rpc {
                code: Some(Code::NOT_FOUND),
                ..
            } => exit::NOT_FOUND,
            Self::Rpc {
                code: Some(Code::PERMISSION_DENIED),
                ..
            } => exit::CANNOT_INVOKE,
            _ => exit::RUNTIME_ERROR,
        }
    }

    /// The agent's own words, for Docker-style messages.
    pub fn agent_message(&self) -> String {
        match self {
            Self::Rpc { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

type Result<T> = std::result::Result<T, AgentError>;

/// How a process ended, as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, or 128 + signal.
    pub code: i32,
    pub oom_killed: bool,
}

impl From<&WaitProcessResponse> for ExitStatus {
    fn from(response: &WaitProcessResponse) -> Self {
        Self {
            code: response.exit_status,
            oom_killed: response.oom_killed,
        }
    }
}

/// A command the agent could not execute: 127 (not found) or 126 (cannot be invoked), with
/// Docker's wording, e.g. `exec: "nosuchcmd": executable file not found in $PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFailure {
    pub code: i32,
    pub message: String,
}

/// What StartContainer or ExecProcess answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub pid: u32,
    pub failure: Option<ExecFailure>,
}

/// Field 2 (`exec_failure`) of StartContainerResponse and ExecProcessResponse, added in protocol
/// 1.1. Read from the wire form so that this works whether the generated type knows the field
/// (then it is re-encoded) or not (then protobuf keeps it as an unknown field and re-encodes it).
pub fn exec_failure_from_wire(response: &[u8]) -> Option<ExecFailure> {
    use rvm_protocol::protobuf::rt::WireType;
    use rvm_protocol::protobuf::CodedInputStream;
    let mut input = CodedInputStream::from_bytes(response);
    let mut failure = None;
    while let Ok(Some(tag)) = input.read_raw_tag_or_eof() {
        let wire_type = WireType::new(tag & 7)?;
        if tag >> 3 == 2 && wire_type == WireType::LengthDelimited {
            failure = Some(input.read_bytes().ok()?);
        } else {
            input.skip_field(wire_type).ok()?;
        }
    }
    let bytes = failure?;
    let mut inner = CodedInputStream::from_bytes(&bytes);
    let mut parsed = ExecFailure {
        code: 0,
        message: String::new(),
    };
    while let Ok(Some(tag)) = inner.read_raw_tag_or_eof() {
        match (tag >> 3, tag & 7) {
            (1, 0) => parsed.code = inner.read_int32().ok()?,
            (2, 2) => parsed.message = inner.read_string().ok()?,
            (_, wire) => inner.skip_field(WireType::new(wire)?).ok()?,
        }
    }
    (parsed.code != 0).then_some(parsed)
}

fn started_from(pid: u32, response: &impl rvm_protocol::protobuf::Message) -> Started {
    let failure = response
        .write_to_bytes()
        .ok()
        .and_then(|bytes| exec_failure_from_wire(&bytes));
    Started { pid, failure }
}

/// Connects to the agent behind `uds`, however long its path: the connection is made through
/// the run directory's descriptor, held open for the call (see [`crate::host::unix_path`]).
async fn connect_short(uds: &Path) -> std::result::Result<AgentClient, String> {
    let short = SocketPath::new(uds).map_err(|err| format!("{}: {err}", uds.display()))?;
    connect_agent(short.as_path(), ATTEMPT_TIMEOUT)
        .await
        .map_err(|err| err.to_string())
}

/// A connected, version-checked agent.
#[derive(Clone)]
pub struct AgentSession {
    client: AgentClient,
}

impl std::fmt::Debug for AgentSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentSession")
    }
}

fn call_ctx() -> context::Context {
    context::with_duration(CALL_TIMEOUT)
}

fn poll_ctx() -> context::Context {
    context::with_timeout(0)
}

impl AgentSession {
    /// Connects to the agent behind `uds`, retrying while the guest boots, until `timeout`
    /// has passed or `vm_ended` reports why the VM is gone.
    pub async fn connect(
        uds: &Path,
        timeout: Duration,
        mut vm_ended: impl FnMut() -> Option<String>,
    ) -> Result<Self> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            if let Some(reason) = vm_ended() {
                return Err(AgentError::VmEnded(reason));
            }
            let last = match connect_short(uds).await {
                Ok(client) => {
                    match handshake(&client, env!("CARGO_PKG_VERSION"), ATTEMPT_TIMEOUT).await {
                        Ok(version) => {
                            tracing::info!(agent = %version.agent_version, waited = ?start.elapsed(), "agent connected");
                            return Ok(Self { client });
                        }
                        Err(err) => err.to_string(),
                    }
                }
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(AgentError::ConnectTimeout {
                    path: uds.to_owned(),
                    waited: timeout,
                    last,
                });
            }
            tracing::trace!(%last, "agent not ready yet");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Configures the guest's network (eth0, routes, DNS, hosts) before containers are created.
    pub async fn configure_network(&self, request: &ConfigureNetworkRequest) -> Result<()> {
        self.client
            .configure_network(call_ctx(), request)
            .await
            .map_err(|e| AgentError::rpc("ConfigureNetwork", e))?;
        Ok(())
    }

    pub async fn create(&self, request: &CreateContainerRequest) -> Result<()> {
        self.client
            .create_container(call_ctx(), request)
            .await
            .map_err(|e| AgentError::rpc("CreateContainer", e))?;
        Ok(())
    }

    /// Starts the init process: its pid in the guest, or why its command could not run.
    pub async fn start(&self, container_id: &str) -> Result<Started> {
        let request = StartContainerRequest {
            container_id: container_id.to_owned(),
            ..Default::default()
        };
        let response = self
            .client
            .start_container(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("StartContainer", e))?;
        Ok(started_from(response.pid, &response))
    }

    /// Starts an exec: its pid in the guest, or why its command could not run.
    pub async fn exec(&self, request: &ExecProcessRequest) -> Result<Started> {
        let response = self
            .client
            .exec_process(call_ctx(), request)
            .await
            .map_err(|e| AgentError::rpc("ExecProcess", e))?;
        Ok(started_from(response.pid, &response))
    }

    /// Waits (without deadline) for a process to end.
    pub async fn wait(&self, container_id: &str, exec_id: &str) -> Result<ExitStatus> {
        Ok(self.wait_with_files(container_id, exec_id).await?.0)
    }

    /// [`Self::wait`], with the host files the agent returns at a container's exit (those
    /// created with `return_max_bytes`; an agent before protocol 1.3 returns none).
    pub async fn wait_with_files(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<(ExitStatus, Vec<ReturnedFile>)> {
        let request = WaitProcessRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        let response = self
            .client
            .wait_process(poll_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("WaitProcess", e))?;
        Ok((ExitStatus::from(&response), response.returned_files))
    }

    /// Long-polls one output stream: `None` at its end.
    pub async fn read(
        &self,
        stream: Stream,
        container_id: &str,
        exec_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let request = ReadOutputRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            max_bytes: MAX_IO_CHUNK,
            ..Default::default()
        };
        let response = match stream {
            Stream::Stdout => self
                .client
                .read_stdout(poll_ctx(), &request)
                .await
                .map_err(|e| AgentError::rpc("ReadStdout", e))?,
            Stream::Stderr => self
                .client
                .read_stderr(poll_ctx(), &request)
                .await
                .map_err(|e| AgentError::rpc("ReadStderr", e))?,
        };
        Ok((!response.eof).then_some(response.data))
    }

    /// Writes all of `data` to a process's stdin.
    pub async fn write_stdin(&self, container_id: &str, exec_id: &str, data: &[u8]) -> Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(MAX_IO_CHUNK as usize)];
            let request = WriteStdinRequest {
                container_id: container_id.to_owned(),
                exec_id: exec_id.to_owned(),
                data: chunk.to_vec(),
                ..Default::default()
            };
            let response = self
                .client
                .write_stdin(call_ctx(), &request)
                .await
                .map_err(|e| AgentError::rpc("WriteStdin", e))?;
            let written = (response.written as usize).min(chunk.len());
            if written == 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            rest = &rest[written..];
        }
        Ok(())
    }

    pub async fn close_stdin(&self, container_id: &str, exec_id: &str) -> Result<()> {
        let request = CloseStdinRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        self.client
            .close_stdin(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("CloseStdin", e))?;
        Ok(())
    }

    pub async fn signal(&self, container_id: &str, exec_id: &str, signal: u32) -> Result<()> {
        self.signal_processes(container_id, exec_id, signal, false)
            .await
    }

    /// Sends `signal` to the process, or with `all` to every process of the container.
    pub async fn signal_processes(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        let request = SignalProcessRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal,
            all,
            ..Default::default()
        };
        self.client
            .signal_process(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("SignalProcess", e))?;
        Ok(())
    }

    pub async fn resize(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u16,
        columns: u16,
    ) -> Result<()> {
        let request = ResizePtyRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            rows: rows.into(),
            columns: columns.into(),
            ..Default::default()
        };
        self.client
            .resize_pty(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("ResizePty", e))?;
        Ok(())
    }

    /// Freezes (`true`) or thaws the container's cgroup.
    pub async fn pause(&self, container_id: &str, frozen: bool) -> Result<()> {
        if frozen {
            let request = PauseRequest {
                container_id: container_id.to_owned(),
                ..Default::default()
            };
            self.client
                .pause(call_ctx(), &request)
                .await
                .map_err(|e| AgentError::rpc("Pause", e))?;
        } else {
            let request = ResumeRequest {
                container_id: container_id.to_owned(),
                ..Default::default()
            };
            self.client
                .resume(call_ctx(), &request)
                .await
                .map_err(|e| AgentError::rpc("Resume", e))?;
        }
        Ok(())
    }

    /// The processes of the container, as the guest sees them.
    pub async fn list_processes(&self, container_id: &str) -> Result<Vec<ProcessInfo>> {
        let request = ListProcessesRequest {
            container_id: container_id.to_owned(),
            ..Default::default()
        };
        let response = self
            .client
            .list_processes(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("ListProcesses", e))?;
        Ok(response.processes)
    }

    /// The container's cgroup v2 counters.
    pub async fn stats(&self, container_id: &str) -> Result<StatsResponse> {
        let request = StatsRequest {
            container_id: container_id.to_owned(),
            ..Default::default()
        };
        self.client
            .stats(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("Stats", e))
    }

    /// Applies an OCI LinuxResources object (JSON) to the container's cgroup.
    pub async fn update_resources(&self, container_id: &str, resources_json: &[u8]) -> Result<()> {
        let request = UpdateResourcesRequest {
            container_id: container_id.to_owned(),
            oci_resources_json: resources_json.to_vec(),
            ..Default::default()
        };
        self.client
            .update_resources(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("UpdateResources", e))?;
        Ok(())
    }

    /// Brings the container's private copy of a host directory to `directory`'s tree.
    pub async fn update_directory(
        &self,
        container_id: &str,
        directory: HostDirectory,
    ) -> Result<()> {
        let request = UpdateDirectoryRequest {
            container_id: container_id.to_owned(),
            directory: rvm_protocol::protobuf::MessageField::some(directory),
            ..Default::default()
        };
        self.client
            .update_directory(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("UpdateDirectory", e))?;
        Ok(())
    }

    /// Removes an exited container from the guest (its rootfs and cgroup).
    pub async fn remove(&self, container_id: &str) -> Result<()> {
        let request = RemoveContainerRequest {
            container_id: container_id.to_owned(),
            ..Default::default()
        };
        self.client
            .remove_container(call_ctx(), &request)
            .await
            .map_err(|e| AgentError::rpc("RemoveContainer", e))?;
        Ok(())
    }

    /// Asks the agent to sync the disks and end the VM.
    pub async fn shutdown(&self) -> Result<()> {
        self.client
            .shutdown(call_ctx(), &ShutdownRequest::default())
            .await
            .map_err(|e| AgentError::rpc("Shutdown", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_protocol::agent::StartContainerResponse;
    use rvm_protocol::protobuf::{CodedOutputStream, Message};

    /// A StartContainerResponse as an agent speaking protocol 1.1 encodes it.
    fn with_failure(pid: u32, code: i32, message: &str) -> Vec<u8> {
        let mut inner = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut inner);
            out.write_int32(1, code).unwrap();
            out.write_string(2, message).unwrap();
            out.flush().unwrap();
        }
        let mut bytes = Vec::new();
        {
            let mut out = CodedOutputStream::vec(&mut bytes);
            out.write_uint32(1, pid).unwrap();
            out.write_bytes(2, &inner).unwrap();
            out.flush().unwrap();
        }
        bytes
    }

    #[test]
    fn exec_failure_survives_decoding_and_re_encoding() {
        let wire = with_failure(7, 127, "exec: \"x\": executable file not found in $PATH");
        let response = StartContainerResponse::parse_from_bytes(&wire).unwrap();
        assert_eq!(response.pid, 7);
        let started = started_from(response.pid, &response);
        assert_eq!(
            started.failure,
            Some(ExecFailure {
                code: 127,
                message: "exec: \"x\": executable file not found in $PATH".into()
            })
        );
    }

    #[test]
    fn plain_response_has_no_failure() {
        let response = StartContainerResponse {
            pid: 9,
            ..Default::default()
        };
        assert_eq!(started_from(9, &response).failure, None);
        assert_eq!(exec_failure_from_wire(&[0xff, 0xff]), None);
    }

    #[test]
    fn not_found_status_maps_to_127() {
        let error = AgentError::Rpc {
            call: "StartContainer",
            code: Some(Code::NOT_FOUND),
            message: "m".into(),
        };
        assert_eq!(error.exit_code(), exit::NOT_FOUND);
        let error = AgentError::Rpc {
            call: "StartContainer",
            code: Some(Code::INTERNAL),
            message: "m".into(),
        };
        assert_eq!(error.exit_code(), exit::RUNTIME_ERROR);
    }
}
