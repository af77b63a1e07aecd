//! Shared by the agent's native tests and its lab client: a client's view of running containers
//! through the agent, spec builders, and a busybox rootfs.

// Test-only code: a panic is the right reaction to a broken fixture or a failed call.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::{ProcessBuilder, RootBuilder, Spec, UserBuilder};
use rvm_protocol::agent::*;
use rvm_protocol::agent_ttrpc::AgentClient;
use rvm_protocol::ttrpc::context;

pub const CALL: Duration = Duration::from_secs(30);

pub fn ctx() -> context::Context {
    context::with_duration(CALL)
}

/// No deadline, for long polls.
pub fn poll() -> context::Context {
    context::with_timeout(0)
}

/// Where a container's rootfs comes from.
#[derive(Debug, Clone)]
pub enum Rootfs {
    /// A directory on the agent's machine (native tests).
    Path(String),
    /// Layer disk serials (lowest first) and a scratch disk serial (in a VM).
    Disks {
        layers: Vec<String>,
        scratch: String,
    },
}

/// A spec running `args` as `user` ("" for root) in `cwd`.
pub fn spec(rootfs: &Rootfs, args: &[&str], user: &str, cwd: &str, env: &[&str]) -> Spec {
    let mut spec = Spec::default();
    let root_path = match rootfs {
        Rootfs::Path(p) => p.clone(),
        Rootfs::Disks { .. } => "rootfs".to_owned(),
    };
    spec.set_root(Some(
        RootBuilder::default()
            .path(root_path)
            .readonly(false)
            .build()
            .unwrap(),
    ));
    let mut user_builder = UserBuilder::default().uid(0u32).gid(0u32);
    if !user.is_empty() {
        user_builder = user_builder.username(user.to_owned());
    }
    let mut all_env = vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    all_env.extend(env.iter().map(|e| e.to_string()));
    let process = ProcessBuilder::default()
        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .env(all_env)
        .cwd(cwd)
        .user(user_builder.build().unwrap())
        .no_new_privileges(true)
        .build()
        .unwrap();
    spec.set_process(Some(process));
    spec.set_hostname(Some("rvm-test".to_owned()));
    // Docker's default capabilities come from the agent when the spec names none.
    if let Some(p) = spec.process_mut() {
        p.set_capabilities(None);
    }
    spec
}

pub fn create_request(id: &str, rootfs: &Rootfs, spec: &Spec) -> CreateContainerRequest {
    let mut request = CreateContainerRequest {
        container_id: id.to_owned(),
        sandbox_id: id.to_owned(),
        oci_spec_json: serde_json::to_vec(spec).unwrap(),
        ..Default::default()
    };
    if let Rootfs::Disks { layers, scratch } = rootfs {
        request.layers = layers
            .iter()
            .map(|serial| LayerDisk {
                serial: serial.clone(),
                ..Default::default()
            })
            .collect();
        request.scratch_disk_serial = scratch.clone();
    }
    request
}

/// An exec of `args` in container `id`, otherwise as the process of `spec`.
pub fn exec_request(id: &str, exec_id: &str, spec: &Spec, args: &[&str]) -> ExecProcessRequest {
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    ExecProcessRequest {
        container_id: id.to_owned(),
        exec_id: exec_id.to_owned(),
        oci_process_json: serde_json::to_vec(&process).unwrap(),
        ..Default::default()
    }
}

/// Reads a stream of a process to its end.
pub async fn read_all(client: &AgentClient, id: &str, exec_id: &str, stderr: bool) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let request = ReadOutputRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            max_bytes: 65536,
            ..Default::default()
        };
        let response = if stderr {
            client.read_stderr(poll(), &request).await.unwrap()
        } else {
            client.read_stdout(poll(), &request).await.unwrap()
        };
        if response.eof {
            return out;
        }
        out.extend(response.data);
    }
}

/// Reads stdout of a process until it holds `needle`, within `deadline`; returns what was read.
pub async fn read_until(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    needle: &str,
    deadline: Duration,
) -> String {
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(needle) {
        let left = deadline
            .checked_sub(started.elapsed())
            .unwrap_or_else(|| panic!("no {needle:?} within {deadline:?}; read {out:?}"));
        let request = ReadOutputRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            max_bytes: 65536,
            ..Default::default()
        };
        let response = client
            .read_stdout(context::with_duration(left), &request)
            .await
            .unwrap_or_else(|e| panic!("no {needle:?} within {deadline:?} ({e}); read {out:?}"));
        assert!(
            !response.eof,
            "stdout ended without {needle:?}; read {out:?}"
        );
        out.extend(response.data);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates and starts a container, returning the start response.
pub async fn create_and_start(
    client: &AgentClient,
    request: &CreateContainerRequest,
) -> StartContainerResponse {
    client.create_container(ctx(), request).await.unwrap();
    client
        .start_container(
            ctx(),
            &StartContainerRequest {
                container_id: request.container_id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

pub async fn wait(client: &AgentClient, id: &str, exec_id: &str) -> WaitProcessResponse {
    client
        .wait_process(
            poll(),
            &WaitProcessRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
}

/// What a finished container reported.
#[derive(Debug)]
pub struct Outcome {
    pub start: StartContainerResponse,
    pub stdout: String,
    pub stderr: String,
    pub wait: WaitProcessResponse,
}

/// Creates, starts, drains and waits for a container; removes it unless `keep`.
pub async fn run(client: &AgentClient, id: &str, rootfs: &Rootfs, spec: &Spec) -> Outcome {
    let start = create_and_start(client, &create_request(id, rootfs, spec)).await;
    let (stdout, stderr) = tokio::join!(
        read_all(client, id, "", false),
        read_all(client, id, "", true)
    );
    let wait = wait(client, id, "").await;
    remove(client, id).await;
    Outcome {
        start,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        wait,
    }
}

pub async fn remove(client: &AgentClient, id: &str) {
    client
        .remove_container(
            ctx(),
            &RemoveContainerRequest {
                container_id: id.to_owned(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

/// A busybox rootfs in `dir`: /bin/busybox and an applet link per command, /etc/passwd and
/// /etc/group with a user `bob` (1000) in group `staff` (50), and a non-executable file.
pub fn busybox_rootfs(dir: &Path) {
    for sub in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "home/bob", "root",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet));
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000:bob:/home/bob:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nstaff:x:50:bob\nbob:x:1000:\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/not-executable"), "#!/bin/sh\necho no\n").unwrap();
}
