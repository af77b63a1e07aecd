//! The agent binary as a native server on a Unix socket (`--no-init --listen unix://...`):
//! handshake, refusal of another major version, bad frames, and containers run by its engine
//! in namespaces on this host (as root; skipped with a reason otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/scenarios.rs"]
mod scenarios;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use rvm_protocol::agent::PingRequest;
use rvm_protocol::agent_ttrpc::AgentClient;
use rvm_protocol::client::{agent_client, handshake};
use rvm_protocol::version::{self, PROTOCOL_MAJOR};

const READY: Duration = Duration::from_secs(20);

struct Agent {
    child: Child,
    socket: PathBuf,
    cgroup: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(cgroup) = &self.cgroup {
            let _ = std::fs::remove_dir(cgroup.join("rvm"));
            let _ = std::fs::remove_dir(cgroup);
        }
    }
}

/// A cgroup2 directory the test may use, or why not.
fn test_cgroup() -> Result<PathBuf, String> {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let root = Path::new(root);
        if nix::sys::statfs::statfs(root)
            .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(false)
        {
            let dir = root.join(format!("rvm-agent-test-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            return Ok(dir);
        }
    }
    Err("no cgroup2 hierarchy on this host".into())
}

fn start_agent(cgroup: Option<PathBuf>) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rvm-agent"));
    command
        .arg("--no-init")
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .arg("--run-dir")
        .arg(dir.path().join("run"));
    let cgroup_root = cgroup
        .clone()
        .unwrap_or_else(|| dir.path().join("no-cgroup"));
    std::fs::create_dir_all(&cgroup_root).unwrap();
    command.arg("--cgroup-root").arg(&cgroup_root);
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + READY;
    while StdUnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "the agent did not listen on {} within {READY:?}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Agent {
        child,
        socket,
        cgroup,
        _dir: dir,
    }
}

async fn connect(agent: &Agent) -> AgentClient {
    let stream = tokio::net::UnixStream::connect(&agent.socket)
        .await
        .unwrap();
    agent_client(stream)
}

#[tokio::test]
async fn handshake_and_ping() {
    let agent = start_agent(None);
    let client = connect(&agent).await;
    let response = handshake(&client, "test host", CALL).await.unwrap();
    assert_eq!(response.protocol_major, PROTOCOL_MAJOR);
    client.ping(ctx(), &PingRequest::default()).await.unwrap();
}

#[tokio::test]
async fn other_major_is_refused_by_the_agent() {
    let agent = start_agent(None);
    let client = connect(&agent).await;
    let mut request = version::version_request("future host");
    request.protocol_major = PROTOCOL_MAJOR + 1;
    let error = client.version(ctx(), &request).await.unwrap_err();
    assert!(
        error.to_string().contains("protocol version mismatch"),
        "{error}"
    );
    client.ping(ctx(), &PingRequest::default()).await.unwrap();
}

#[tokio::test]
async fn malformed_and_oversized_frames_do_not_take_it_down() {
    let agent = start_agent(None);
    // An oversized length, an unknown frame type, and a request frame holding garbage.
    let frames: [&[u8]; 3] = [
        &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0],
        &[0, 0, 0, 0, 0, 0, 0, 1, 9, 0],
        &[0, 0, 0, 4, 0, 0, 0, 1, 1, 0, 0xde, 0xad, 0xbe, 0xef],
    ];
    for frame in frames {
        let mut stream = StdUnixStream::connect(&agent.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(frame).unwrap();
        let mut sink = [0u8; 256];
        let _ = stream.read(&mut sink);
    }
    let client = connect(&agent).await;
    handshake(&client, "after garbage", CALL).await.unwrap();
}

#[tokio::test]
async fn shutdown_exits_the_native_server() {
    let mut agent = start_agent(None);
    let client = connect(&agent).await;
    client
        .shutdown(ctx(), &rvm_protocol::agent::ShutdownRequest::default())
        .await
        .unwrap();
    let deadline = Instant::now() + READY;
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not exit after Shutdown"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

/// Why containers cannot run on this host, if they cannot.
fn container_host() -> Result<PathBuf, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("not root".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("/bin/busybox is missing (busybox-static)".into());
    }
    let probe = Command::new("unshare")
        .args(["-mpfiu", "true"])
        .status()
        .map_err(|e| format!("run unshare: {e}"))?;
    if !probe.success() {
        return Err("cannot create mount/pid/ipc/uts namespaces".into());
    }
    test_cgroup()
}

#[tokio::test]
async fn containers_run_in_namespaces() {
    let cgroup = match container_host() {
        Ok(cgroup) => cgroup,
        Err(reason) => {
            eprintln!("skipped: containers cannot run on this host: {reason}");
            return;
        }
    };
    let agent = start_agent(Some(cgroup));
    let rootfs_dir = tempfile::tempdir().unwrap();
    busybox_rootfs(rootfs_dir.path());
    let rootfs = Rootfs::Path(rootfs_dir.path().display().to_string());
    let client = connect(&agent).await;
    handshake(&client, "native test", CALL).await.unwrap();
    scenarios::echo_hello(&client, &rootfs).await;
    scenarios::exit_code(&client, &rootfs).await;
    scenarios::not_found_is_127(&client, &rootfs).await;
    scenarios::not_executable_is_126(&client, &rootfs).await;
    scenarios::user_cwd_env(&client, &rootfs).await;
    scenarios::bad_specs_are_refused(&client, &rootfs).await;
    scenarios::isolation(&client, &rootfs).await;
    scenarios::exec_signal_list(&client, &rootfs).await;
    scenarios::sigterm_delivered(&client, &rootfs).await;
    scenarios::pod_shares_pid_namespace(&client, &rootfs).await;
    scenarios::termination_message_returned(&client, &rootfs).await;
    scenarios::pty_resize(&client, &rootfs).await;
    scenarios::localhost_between_containers(&client, &rootfs).await;
    scenarios::spec_seccomp_profile(&client, &rootfs).await;
    drop(client);
    shutdown_on_exit(agent, &rootfs).await;
}

/// A container created with shutdown_on_exit ends the agent (natively: the process exits 0)
/// once its exit and its output have been reported.
async fn shutdown_on_exit(mut agent: Agent, rootfs: &Rootfs) {
    let client = connect(&agent).await;
    let mut request = create_request(
        "last",
        rootfs,
        &spec(rootfs, &["echo", "bye"], "", "/", &[]),
    );
    request.shutdown_on_exit = true;
    client.create_container(ctx(), &request).await.unwrap();
    let start = rvm_protocol::agent::StartContainerRequest {
        container_id: "last".into(),
        ..Default::default()
    };
    client.start_container(ctx(), &start).await.unwrap();
    assert_eq!(read_all(&client, "last", "", false).await, b"bye\n");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent ended before stderr and the exit were read"
    );
    read_all(&client, "last", "", true).await;
    assert_eq!(wait(&client, "last", "").await.exit_status, 0);
    let deadline = Instant::now() + READY;
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not end after the last container was reported"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
