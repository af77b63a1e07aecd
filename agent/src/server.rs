//! The agent's ttrpc service `rvm.agent.v1.Agent`: a thin translation between protocol messages
//! and the [`Engine`], and the server on vsock port 1024 (or a Unix socket for native tests).

use std::sync::Arc;
use std::time::Duration;

use rvm_protocol::agent::*;
use rvm_protocol::agent_ttrpc::{create_agent, Agent};
use rvm_protocol::messages::MAX_IO_CHUNK;
use rvm_protocol::ttrpc::{self, r#async::Server, r#async::TtrpcContext, Code};
use rvm_protocol::version::{check_compatible, version_response, ProtocolVersion};
use thiserror::Error;
use tokio::sync::Notify;

use crate::engine::command::ExecFailure as EngineExecFailure;
use crate::engine::device_nodes::{self, DeviceRequest};
use crate::engine::devices;
use crate::engine::host_dirs;
use crate::engine::host_files::HostFile;
use crate::engine::volumes::VolumeRequest;
use crate::engine::{CreateRequest, Engine, EngineError, Started};
use crate::init::power::{power_off, PowerMode};
use crate::netconfig;

/// How long the Shutdown answer gets to leave before the VM ends.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("listen on {address}: {source}")]
    Bind {
        address: String,
        source: ttrpc::Error,
    },
    #[error("start the ttrpc server on {address}: {source}")]
    Start {
        address: String,
        source: ttrpc::Error,
    },
}

fn status(code: Code, message: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn engine_status(error: EngineError) -> ttrpc::Error {
    let code = match &error {
        EngineError::NoContainer(_) | EngineError::NoProcess { .. } => Code::NOT_FOUND,
        EngineError::ContainerExists(_) | EngineError::ExecExists { .. } => Code::ALREADY_EXISTS,
        EngineError::Invalid { .. } | EngineError::Setup { .. } | EngineError::Seccomp(_) => {
            Code::INVALID_ARGUMENT
        }
        EngineError::Devices(devices::DeviceError::Rule { .. })
        | EngineError::DeviceNode(device_nodes::NodeError::BadRequest { .. }) => {
            Code::INVALID_ARGUMENT
        }
        EngineError::State { .. } => Code::FAILED_PRECONDITION,
        EngineError::Devices(_)
        | EngineError::DeviceNode(_)
        | EngineError::Disk(_)
        | EngineError::Cgroup(_)
        | EngineError::Volume(_)
        | EngineError::Io { .. } => Code::INTERNAL,
    };
    tracing::warn!(%error, "request failed");
    status(code, error)
}

/// The engine's form of a host directory; an entry kind this agent does not know is refused.
fn host_directory(d: HostDirectory) -> Result<host_dirs::HostDirectory, EngineError> {
    use std::os::unix::ffi::OsStringExt;
    let entries = d
        .entries
        .into_iter()
        .map(|e| {
            let kind = match e.kind.enum_value() {
                Ok(EntryKind::ENTRY_FILE) => host_dirs::EntryKind::File(e.content),
                Ok(EntryKind::ENTRY_DIRECTORY) => host_dirs::EntryKind::Directory,
                Ok(EntryKind::ENTRY_SYMLINK) => {
                    host_dirs::EntryKind::Symlink(std::ffi::OsString::from_vec(e.content).into())
                }
                Err(unknown) => {
                    return Err(EngineError::Invalid {
                        what: format!("host directory for {}", d.destination),
                        reason: format!("entry {} has the unknown kind {unknown}", e.path),
                    })
                }
            };
            Ok(host_dirs::Entry {
                path: e.path.into(),
                kind,
                mode: e.mode,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(host_dirs::HostDirectory {
        destination: d.destination.into(),
        mode: d.mode,
        entries,
        pod_key: Some(d.pod_key).filter(|key| !key.is_empty()),
        memory_bytes: d.memory_bytes,
        pod_subpath: Some(d.pod_subpath)
            .filter(|subpath| !subpath.is_empty())
            .map(std::path::PathBuf::from),
    })
}

fn exec_failure(failure: Option<EngineExecFailure>) -> protobuf::MessageField<ExecFailure> {
    protobuf::MessageField::from_option(failure.map(|f| ExecFailure {
        exit_status: f.status,
        message: f.message,
        ..Default::default()
    }))
}

use rvm_protocol::protobuf;

fn pid_u32(started: &Started) -> u32 {
    u32::try_from(started.pid).unwrap_or(0)
}

/// The service. Shutdown and power-off-on-exit end the VM through `power`.
#[derive(Debug)]
pub struct AgentService {
    engine: Arc<Engine>,
    shutdown: Arc<Notify>,
}

impl AgentService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            shutdown: Arc::new(Notify::new()),
        }
    }
}

type RpcResult<T> = ttrpc::Result<T>;

#[rvm_protocol::async_trait::async_trait]
impl Agent for AgentService {
    async fn version(
        &self,
        _: &TtrpcContext,
        request: VersionRequest,
    ) -> RpcResult<VersionResponse> {
        let remote = ProtocolVersion::from(&request);
        if let Err(error) = check_compatible(remote) {
            tracing::warn!(%error, host = %request.host_version, "host refused");
            return Err(status(Code::FAILED_PRECONDITION, error));
        }
        tracing::info!(host = %request.host_version, %remote, "host connected");
        Ok(version_response(env!("CARGO_PKG_VERSION")))
    }

    async fn ping(&self, _: &TtrpcContext, _: PingRequest) -> RpcResult<PingResponse> {
        Ok(PingResponse::default())
    }

    async fn configure_network(
        &self,
        _: &TtrpcContext,
        r: ConfigureNetworkRequest,
    ) -> RpcResult<Empty> {
        netconfig::apply(&r).await.map_err(|error| {
            tracing::warn!(%error, "ConfigureNetwork failed");
            status(Code::INTERNAL, error)
        })?;
        self.engine
            .set_network_files(netconfig::NetworkFiles::from_request(&r));
        Ok(Empty::default())
    }

    async fn create_container(
        &self,
        _: &TtrpcContext,
        r: CreateContainerRequest,
    ) -> RpcResult<Empty> {
        let request = CreateRequest {
            id: r.container_id,
            spec_json: r.oci_spec_json,
            layers: r.layers.into_iter().map(|l| l.serial).collect(),
            scratch: r.scratch_disk_serial,
            terminal: r.terminal,
            stdin: r.stdin,
            shutdown_on_exit: r.shutdown_on_exit,
            volumes: r
                .volumes
                .into_iter()
                .map(|v| VolumeRequest {
                    serial: v.serial,
                    destination: v.destination.into(),
                    read_only: v.read_only,
                })
                .collect(),
            files: r
                .files
                .into_iter()
                .map(|f| HostFile {
                    destination: f.destination.into(),
                    content: f.content,
                    mode: f.mode,
                    return_max_bytes: usize::try_from(f.return_max_bytes).unwrap_or(usize::MAX),
                })
                .collect(),
            directories: r
                .directories
                .into_iter()
                .map(host_directory)
                .collect::<Result<_, _>>()
                .map_err(engine_status)?,
            sandbox_id: r.sandbox_id,
            sandbox_namespaces: r.sandbox_namespaces,
            devices: r
                .devices
                .into_iter()
                .map(|d| DeviceRequest {
                    serial: d.serial,
                    path: d.path,
                    permissions: d.permissions,
                })
                .collect(),
        };
        self.engine.create(request).await.map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        r: StartContainerRequest,
    ) -> RpcResult<StartContainerResponse> {
        let started = self
            .engine
            .start(&r.container_id)
            .await
            .map_err(engine_status)?;
        Ok(StartContainerResponse {
            pid: pid_u32(&started),
            exec_failure: exec_failure(started.failure),
            ..Default::default()
        })
    }

    async fn pause(&self, _: &TtrpcContext, r: PauseRequest) -> RpcResult<Empty> {
        self.engine
            .pause(&r.container_id, true)
            .await
            .map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn resume(&self, _: &TtrpcContext, r: ResumeRequest) -> RpcResult<Empty> {
        self.engine
            .pause(&r.container_id, false)
            .await
            .map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn remove_container(
        &self,
        _: &TtrpcContext,
        r: RemoveContainerRequest,
    ) -> RpcResult<Empty> {
        self.engine
            .remove(&r.container_id)
            .await
            .map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn exec_process(
        &self,
        _: &TtrpcContext,
        r: ExecProcessRequest,
    ) -> RpcResult<ExecProcessResponse> {
        let started = self
            .engine
            .exec(
                &r.container_id,
                &r.exec_id,
                &r.oci_process_json,
                r.terminal,
                r.stdin,
            )
            .await
            .map_err(engine_status)?;
        Ok(ExecProcessResponse {
            pid: pid_u32(&started),
            exec_failure: exec_failure(started.failure),
            ..Default::default()
        })
    }

    async fn signal_process(&self, _: &TtrpcContext, r: SignalProcessRequest) -> RpcResult<Empty> {
        self.engine
            .signal(&r.container_id, &r.exec_id, r.signal, r.all)
            .map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        r: WaitProcessRequest,
    ) -> RpcResult<WaitProcessResponse> {
        let record = self
            .engine
            .wait(&r.container_id, &r.exec_id)
            .await
            .map_err(engine_status)?;
        let returned_files = if r.exec_id.is_empty() {
            self.engine
                .final_files(&r.container_id)
                .unwrap_or_default()
                .into_iter()
                .map(|(destination, content)| ReturnedFile {
                    destination: destination.display().to_string(),
                    content,
                    ..Default::default()
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(WaitProcessResponse {
            exit_status: record.status.code(),
            signal: record.status.signal(),
            oom_killed: record.oom_killed,
            exited_at_unix_nanos: record.exited_at_unix_nanos,
            returned_files,
            ..Default::default()
        })
    }

    async fn list_processes(
        &self,
        _: &TtrpcContext,
        r: ListProcessesRequest,
    ) -> RpcResult<ListProcessesResponse> {
        let entries = self
            .engine
            .list_processes(&r.container_id)
            .map_err(engine_status)?;
        Ok(ListProcessesResponse {
            processes: entries
                .into_iter()
                .map(|e| ProcessInfo {
                    pid: e.pid,
                    ppid: e.ppid,
                    uid: e.uid,
                    exec_id: e.exec_id,
                    command: e.command,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn write_stdin(
        &self,
        _: &TtrpcContext,
        r: WriteStdinRequest,
    ) -> RpcResult<WriteStdinResponse> {
        if r.data.len() > MAX_IO_CHUNK as usize {
            return Err(status(
                Code::INVALID_ARGUMENT,
                format!(
                    "stdin chunk of {} bytes exceeds {MAX_IO_CHUNK}",
                    r.data.len()
                ),
            ));
        }
        let written = self
            .engine
            .write_stdin(&r.container_id, &r.exec_id, &r.data)
            .await
            .map_err(engine_status)?;
        Ok(WriteStdinResponse {
            written: u32::try_from(written).unwrap_or(0),
            ..Default::default()
        })
    }

    async fn close_stdin(&self, _: &TtrpcContext, r: CloseStdinRequest) -> RpcResult<Empty> {
        self.engine
            .close_stdin(&r.container_id, &r.exec_id)
            .await
            .map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        r: ReadOutputRequest,
    ) -> RpcResult<ReadOutputResponse> {
        self.read_output(r, false).await
    }

    async fn read_stderr(
        &self,
        _: &TtrpcContext,
        r: ReadOutputRequest,
    ) -> RpcResult<ReadOutputResponse> {
        self.read_output(r, true).await
    }

    async fn resize_pty(&self, _: &TtrpcContext, r: ResizePtyRequest) -> RpcResult<Empty> {
        self.engine
            .resize(&r.container_id, &r.exec_id, r.rows, r.columns)
            .map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn stats(&self, _: &TtrpcContext, r: StatsRequest) -> RpcResult<StatsResponse> {
        let s = self.engine.stats(&r.container_id).map_err(engine_status)?;
        Ok(StatsResponse {
            cpu: protobuf::MessageField::some(CpuStats {
                usage_usec: s.cpu_usage_usec,
                user_usec: s.cpu_user_usec,
                system_usec: s.cpu_system_usec,
                nr_periods: s.cpu_nr_periods,
                nr_throttled: s.cpu_nr_throttled,
                throttled_usec: s.cpu_throttled_usec,
                ..Default::default()
            }),
            memory: protobuf::MessageField::some(MemoryStats {
                current: s.memory_current,
                limit: s.memory_limit,
                swap_current: s.memory_swap_current,
                anon: s.memory_anon,
                file: s.memory_file,
                kernel: s.memory_kernel,
                oom_events: s.memory_oom_events,
                oom_kill_events: s.memory_oom_kill_events,
                ..Default::default()
            }),
            pids: protobuf::MessageField::some(PidsStats {
                current: s.pids_current,
                limit: s.pids_limit,
                ..Default::default()
            }),
            io: protobuf::MessageField::some(IoStats {
                devices: s
                    .io
                    .iter()
                    .map(|d| IoDeviceStats {
                        major: d.major,
                        minor: d.minor,
                        read_bytes: d.read_bytes,
                        write_bytes: d.write_bytes,
                        read_ios: d.read_ios,
                        write_ios: d.write_ios,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            read_at_unix_nanos: s.read_at_unix_nanos,
            ..Default::default()
        })
    }

    async fn update_resources(
        &self,
        _: &TtrpcContext,
        r: UpdateResourcesRequest,
    ) -> RpcResult<Empty> {
        self.engine
            .update_resources(&r.container_id, &r.oci_resources_json)
            .map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn update_directory(
        &self,
        _: &TtrpcContext,
        r: UpdateDirectoryRequest,
    ) -> RpcResult<Empty> {
        let directory = r.directory.into_option().unwrap_or_default();
        let directory = host_directory(directory).map_err(engine_status)?;
        let engine = self.engine.clone();
        let id = r.container_id;
        tokio::task::spawn_blocking(move || engine.update_directory(&id, &directory))
            .await
            .map_err(|e| ttrpc::Error::Others(format!("update task: {e}")))?
            .map_err(engine_status)?;
        Ok(Empty::default())
    }

    async fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> RpcResult<Empty> {
        // The disks are synced before the answer, so the host knows its data is safe.
        nix::unistd::sync();
        self.shutdown.notify_one();
        Ok(Empty::default())
    }
}

impl AgentService {
    async fn read_output(
        &self,
        r: ReadOutputRequest,
        stderr: bool,
    ) -> RpcResult<ReadOutputResponse> {
        let max = r.max_bytes.clamp(1, MAX_IO_CHUNK) as usize;
        let (data, eof) = self
            .engine
            .read_output(&r.container_id, &r.exec_id, stderr, max)
            .await
            .map_err(engine_status)?;
        Ok(ReadOutputResponse {
            data,
            eof,
            ..Default::default()
        })
    }
}

/// Serves the agent on `address` (`vsock://-1:1024`, `unix:///path`) until Shutdown or the
/// power-off-on-exit condition, then ends the VM (or the process) as `power` says.
pub async fn serve(address: &str, engine: Arc<Engine>, power: PowerMode) -> Result<(), ServeError> {
    let service = AgentService::new(engine.clone());
    let shutdown = service.shutdown.clone();
    let mut server = Server::new()
        .bind(address)
        .map_err(|source| ServeError::Bind {
            address: address.to_owned(),
            source,
        })?
        .register_service(create_agent(Arc::new(service)));
    server.start().await.map_err(|source| ServeError::Start {
        address: address.to_owned(),
        source,
    })?;
    tracing::info!(address, "agent ready");
    tokio::select! {
        _ = shutdown.notified() => {
            // Let the Shutdown answer leave before the VM disappears.
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
        _ = engine.power_off_requested() => {}
    }
    engine.release_volumes();
    power_off(power)
}
