//! A stand-in for `rvm-vmm` in the CLI's native tests (not a usable VMM): it checks the command
//! line the monitor gives it, serves the hybrid vsock socket (`CONNECT 1024` → `OK`), and behind
//! it an agent that runs the container's command as a host process. This exercises `rvm`'s
//! monitor, state, log, attach and exit-code paths where no VM can boot; the lab test
//! `tests/e2e/run.sh` runs the same commands against the real VMM and agent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use futures::stream;
use rvm_protocol::agent::*;
use rvm_protocol::agent_ttrpc::{create_agent, Agent};
use rvm_protocol::ttrpc::r#async::transport::Listener;
use rvm_protocol::ttrpc::r#async::{Server, TtrpcContext};
use rvm_protocol::ttrpc::{self, get_status, Code};
use rvm_protocol::version;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{mpsc, Mutex, Notify};

#[derive(Default)]
struct Output {
    data: Vec<u8>,
    eof: bool,
}

#[derive(Default)]
struct Proc {
    pid: u32,
    stdout: Mutex<Output>,
    stderr: Mutex<Output>,
    exit: Mutex<Option<i32>>,
    stdin: Mutex<Option<ChildStdin>>,
    changed: Notify,
}

#[derive(Default)]
struct FakeAgent {
    specs: Mutex<HashMap<String, (Vec<String>, bool)>>,
    procs: Mutex<HashMap<(String, String), Arc<Proc>>>,
}

fn status(code: Code, message: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(get_status(code, message))
}

async fn pump(proc_: Arc<Proc>, mut reader: impl AsyncRead + Unpin, stderr: bool) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let n = reader.read(&mut buffer).await.unwrap_or(0);
        {
            let mut out = if stderr {
                proc_.stderr.lock().await
            } else {
                proc_.stdout.lock().await
            };
            if n == 0 {
                out.eof = true;
            } else {
                out.data.extend_from_slice(&buffer[..n]);
            }
        }
        proc_.changed.notify_waiters();
        if n == 0 {
            return;
        }
    }
}

impl FakeAgent {
    async fn spawn(
        &self,
        cid: &str,
        exec_id: &str,
        args: &[String],
        stdin: bool,
    ) -> ttrpc::Result<u32> {
        let Some((program, rest)) = args.split_first() else {
            return Err(status(Code::INVALID_ARGUMENT, "no command"));
        };
        let mut command = Command::new(program);
        command
            .args(rest)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => status(
                Code::NOT_FOUND,
                format!("exec: \"{program}\": executable file not found in $PATH"),
            ),
            std::io::ErrorKind::PermissionDenied => status(
                Code::PERMISSION_DENIED,
                format!("exec: \"{program}\": permission denied"),
            ),
            _ => status(Code::INTERNAL, err.to_string()),
        })?;
        let proc_ = Arc::new(Proc {
            pid: child.id().unwrap_or(0),
            ..Proc::default()
        });
        *proc_.stdin.lock().await = child.stdin.take();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(proc_.clone(), out, false));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(proc_.clone(), err, true));
        }
        let waiter = proc_.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => status.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
                }),
                Err(_) => 255,
            };
            *waiter.exit.lock().await = Some(code);
            waiter.changed.notify_waiters();
        });
        let pid = proc_.pid;
        self.procs
            .lock()
            .await
            .insert((cid.to_owned(), exec_id.to_owned()), proc_);
        Ok(pid)
    }

    async fn proc_of(&self, cid: &str, exec_id: &str) -> ttrpc::Result<Arc<Proc>> {
        self.procs
            .lock()
            .await
            .get(&(cid.to_owned(), exec_id.to_owned()))
            .cloned()
            .ok_or_else(|| status(Code::NOT_FOUND, format!("no process {cid}/{exec_id}")))
    }

    async fn read(
        &self,
        request: ReadOutputRequest,
        stderr: bool,
    ) -> ttrpc::Result<ReadOutputResponse> {
        let proc_ = self
            .proc_of(&request.container_id, &request.exec_id)
            .await?;
        loop {
            let notified = proc_.changed.notified();
            {
                let mut out = if stderr {
                    proc_.stderr.lock().await
                } else {
                    proc_.stdout.lock().await
                };
                if !out.data.is_empty() {
                    return Ok(ReadOutputResponse {
                        data: std::mem::take(&mut out.data),
                        eof: false,
                        ..Default::default()
                    });
                }
                if out.eof {
                    return Ok(ReadOutputResponse {
                        eof: true,
                        ..Default::default()
                    });
                }
            }
            notified.await;
        }
    }
}

#[rvm_protocol::async_trait::async_trait]
impl Agent for FakeAgent {
    async fn version(&self, _: &TtrpcContext, _: VersionRequest) -> ttrpc::Result<VersionResponse> {
        Ok(version::version_response("fake-vmm test agent"))
    }

    async fn create_container(
        &self,
        _: &TtrpcContext,
        request: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let spec: serde_json::Value = serde_json::from_slice(&request.oci_spec_json)
            .map_err(|err| status(Code::INVALID_ARGUMENT, format!("bad spec: {err}")))?;
        let args: Vec<String> = serde_json::from_value(spec["process"]["args"].clone())
            .map_err(|err| status(Code::INVALID_ARGUMENT, format!("bad args: {err}")))?;
        if request.layers.is_empty() || request.scratch_disk_serial.is_empty() {
            return Err(status(Code::INVALID_ARGUMENT, "no layer or scratch disk"));
        }
        self.specs
            .lock()
            .await
            .insert(request.container_id.clone(), (args, request.stdin));
        Ok(Empty::default())
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        request: StartContainerRequest,
    ) -> ttrpc::Result<StartContainerResponse> {
        let (args, stdin) = self
            .specs
            .lock()
            .await
            .get(&request.container_id)
            .cloned()
            .ok_or_else(|| status(Code::NOT_FOUND, "no such container"))?;
        let pid = self.spawn(&request.container_id, "", &args, stdin).await?;
        Ok(StartContainerResponse {
            pid,
            ..Default::default()
        })
    }

    async fn exec_process(
        &self,
        _: &TtrpcContext,
        request: ExecProcessRequest,
    ) -> ttrpc::Result<ExecProcessResponse> {
        let process: serde_json::Value = serde_json::from_slice(&request.oci_process_json)
            .map_err(|err| status(Code::INVALID_ARGUMENT, format!("bad process: {err}")))?;
        let args: Vec<String> = serde_json::from_value(process["args"].clone())
            .map_err(|err| status(Code::INVALID_ARGUMENT, format!("bad args: {err}")))?;
        let pid = self
            .spawn(
                &request.container_id,
                &request.exec_id,
                &args,
                request.stdin,
            )
            .await?;
        Ok(ExecProcessResponse {
            pid,
            ..Default::default()
        })
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        request: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        let proc_ = self
            .proc_of(&request.container_id, &request.exec_id)
            .await?;
        loop {
            let notified = proc_.changed.notified();
            if let Some(code) = *proc_.exit.lock().await {
                return Ok(WaitProcessResponse {
                    exit_status: code,
                    ..Default::default()
                });
            }
            notified.await;
        }
    }

    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        request: ReadOutputRequest,
    ) -> ttrpc::Result<ReadOutputResponse> {
        self.read(request, false).await
    }

    async fn read_stderr(
        &self,
        _: &TtrpcContext,
        request: ReadOutputRequest,
    ) -> ttrpc::Result<ReadOutputResponse> {
        self.read(request, true).await
    }

    async fn write_stdin(
        &self,
        _: &TtrpcContext,
        request: WriteStdinRequest,
    ) -> ttrpc::Result<WriteStdinResponse> {
        let proc_ = self
            .proc_of(&request.container_id, &request.exec_id)
            .await?;
        let mut stdin = proc_.stdin.lock().await;
        let pipe = stdin
            .as_mut()
            .ok_or_else(|| status(Code::FAILED_PRECONDITION, "stdin closed"))?;
        pipe.write_all(&request.data)
            .await
            .map_err(|err| status(Code::INTERNAL, err.to_string()))?;
        Ok(WriteStdinResponse {
            written: request.data.len() as u32,
            ..Default::default()
        })
    }

    async fn close_stdin(
        &self,
        _: &TtrpcContext,
        request: CloseStdinRequest,
    ) -> ttrpc::Result<Empty> {
        let proc_ = self
            .proc_of(&request.container_id, &request.exec_id)
            .await?;
        proc_.stdin.lock().await.take();
        Ok(Empty::default())
    }

    async fn signal_process(
        &self,
        _: &TtrpcContext,
        request: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let proc_ = self
            .proc_of(&request.container_id, &request.exec_id)
            .await?;
        let result = std::process::Command::new("kill")
            .arg(format!("-{}", request.signal))
            .arg(proc_.pid.to_string())
            .status();
        match result {
            Ok(s) if s.success() => Ok(Empty::default()),
            _ => Err(status(Code::INTERNAL, "kill failed")),
        }
    }

    async fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> ttrpc::Result<Empty> {
        // As the real VM does: the VMM exits 0 once the guest reboots.
        tokio::spawn(async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            std::process::exit(0);
        });
        Ok(Empty::default())
    }
}

/// Checks the fixed `rvm-vmm` interface and returns the vsock socket path.
fn check_args() -> Result<PathBuf, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Vec<&String> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| &w[1])
            .collect()
    };
    for flag in ["--kernel", "--initrd"] {
        let path = value(flag)
            .first()
            .ok_or(format!("missing {flag}"))?
            .to_string();
        if !std::path::Path::new(&path).is_file() {
            return Err(format!("{flag} {path}: no such file"));
        }
    }
    let cmdline = value("--cmdline")
        .first()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if !cmdline.contains("reboot=k") {
        return Err(format!("--cmdline {cmdline:?} lacks reboot=k"));
    }
    for disk in value("--disk") {
        let mut parts = disk.split(',');
        let path = parts.next().unwrap_or_default();
        if !std::path::Path::new(path).is_file() {
            return Err(format!("--disk {disk}: no such file"));
        }
        for option in parts {
            if let Some(serial) = option.strip_prefix("serial=") {
                if serial.len() > 20 {
                    return Err(format!("--disk {disk}: serial longer than 20 bytes"));
                }
            } else if option != "ro" {
                return Err(format!("--disk {disk}: unknown option {option}"));
            }
        }
    }
    let vsock = value("--vsock")
        .first()
        .map(|s| s.to_string())
        .ok_or("missing --vsock")?;
    let uds = vsock
        .split(',')
        .find_map(|part| part.strip_prefix("uds="))
        .ok_or(format!("--vsock {vsock}: no uds="))?;
    Ok(PathBuf::from(uds))
}

async fn accept_connections(listener: UnixListener, tx: mpsc::UnboundedSender<UnixStream>) {
    while let Ok((mut connection, _)) = listener.accept().await {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut line = Vec::new();
            while line.last() != Some(&b'\n') && line.len() < 64 {
                match connection.read_u8().await {
                    Ok(byte) => line.push(byte),
                    Err(_) => return,
                }
            }
            if line != b"CONNECT 1024\n" {
                return;
            }
            if connection.write_all(b"OK 1073741824\n").await.is_ok() {
                let _ = tx.send(connection);
            }
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let uds = match check_args() {
        Ok(uds) => uds,
        Err(err) => {
            eprintln!("fake rvm-vmm: {err}");
            std::process::exit(1);
        }
    };
    let listener = match UnixListener::bind(&uds) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("fake rvm-vmm: cannot bind {}: {err}", uds.display());
            std::process::exit(1);
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(accept_connections(listener, tx));
    let connections = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|connection| (Ok(connection), rx))
    });
    let mut server = Server::new()
        .add_listener(Listener::new(connections))
        .register_service(create_agent(Arc::new(FakeAgent::default())));
    if let Err(err) = server.start().await {
        eprintln!("fake rvm-vmm: cannot serve: {err}");
        std::process::exit(1);
    }
    std::future::pending::<()>().await;
}
