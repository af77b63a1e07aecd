//! The real `rvm` binary reading container states written as the monitor writes them, in a
//! temporary --root, with a plain process standing in for the monitor (no VM is needed):
//! `rvm wait` ends when the exit is recorded or the monitor dies, and `ps`/`inspect` show each
//! lifecycle in Docker's words as before.

// Test helpers panic on broken fixtures, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use rvm_runtime::sandbox::config::ContainerConfig;
use rvm_runtime::sandbox::files::write_atomic;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::process::ProcessId;
use rvm_runtime::sandbox::state::{ContainerState, Containers, Ended, Lifecycle};
use serde_json::{json, Value};

/// A bound on each `rvm` run, so that a waiter that is never woken fails the test.
const DEADLINE_SECONDS: &str = "60";

fn rvm(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("timeout");
    command
        .arg(DEADLINE_SECONDS)
        .arg(env!("CARGO_BIN_EXE_rvm"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("RVM_LOG");
    command
}

fn output(root: &Path, args: &[&str]) -> Output {
    rvm(root, args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// A container named `name` in the store at `root`; its ID. Its config.json is one written
/// before `--privileged` and `--device` existed.
fn create(root: &Path, name: &str) -> (Containers, String) {
    create_with(root, name, json!({}))
}

/// The same, with the config's fields of `extra` set.
fn create_with(root: &Path, name: &str, extra: Value) -> (Containers, String) {
    let containers = Containers::open(&Layout::for_root(root)).unwrap();
    let mut config = json!({
        "id": format!("{name:0>64}"),
        "name": name,
        "image": "busybox",
        "image_id": "sha256:x",
        "created": "2026-12-05T00:00:00Z",
        "spec": {
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        },
        "layers": [],
        "scratch": "/nowhere/scratch.ext4",
        "volumes": [],
        "vm": {"memory_mib": 256, "vcpus": 1},
        "network": "none",
        "tty": false,
        "open_stdin": false,
        "auto_remove": false,
        "stop_signal": null,
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    let config: ContainerConfig = serde_json::from_value(config).unwrap();
    let id = containers.create(config).unwrap().id;
    (containers, id)
}

/// Writes the state as the monitor does.
fn record(root: &Path, id: &str, state: &ContainerState) {
    let path = Layout::for_root(root).state_path(id);
    write_atomic(&path, &serde_json::to_vec(state).unwrap()).unwrap();
}

/// A process standing in for the monitor: `cat` lives until its stdin closes.
fn monitor() -> (Child, ProcessId) {
    let child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
    let id = ProcessId::of(child.id()).unwrap();
    (child, id)
}

fn running(monitor: ProcessId) -> ContainerState {
    ContainerState {
        lifecycle: Lifecycle::Running,
        monitor: Some(monitor),
        guest_pid: Some(1),
        started_at: Some("2026-12-05T00:00:01Z".into()),
        ..ContainerState::created()
    }
}

fn inspect_state(root: &Path, name: &str) -> Value {
    let out = output(root, &["inspect", name]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all[0]["State"].clone()
}

#[test]
fn wait_ends_when_the_monitor_records_the_exit() {
    let root = tempfile::tempdir().unwrap();
    let (_containers, id) = create(root.path(), "w");
    let (mut cat, monitor) = monitor();
    record(root.path(), &id, &running(monitor));
    let waiter = rvm(root.path(), &["wait", "w"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = ContainerState {
        lifecycle: Lifecycle::Exited(Ended {
            code: 5,
            oom_killed: false,
            error: None,
            finished_at: Some("2026-12-05T00:00:02Z".into()),
        }),
        monitor: None,
        ..running(monitor)
    };
    record(root.path(), &id, &exited);
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "5");
    drop(cat.stdin.take());
    cat.wait().unwrap();
}

#[test]
fn wait_notices_a_monitor_that_died_without_writing() {
    let root = tempfile::tempdir().unwrap();
    let (_containers, id) = create(root.path(), "d");
    let (mut cat, monitor) = monitor();
    record(root.path(), &id, &running(monitor));
    let waiter = rvm(root.path(), &["wait", "d"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(cat.stdin.take());
    cat.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "255");

    let ps = stdout(&output(root.path(), &["ps", "-a"]));
    assert!(ps.contains("Exited (255) "), "{ps}");
    let state = inspect_state(root.path(), "d");
    assert_eq!(state["Status"], "exited");
    assert_eq!(state["Running"], false);
    assert_eq!(state["ExitCode"], 255);
    assert!(
        state["Error"].as_str().unwrap().contains("monitor process"),
        "{state}"
    );
}

#[test]
fn ps_and_inspect_show_a_paused_container_as_running_and_paused() {
    let root = tempfile::tempdir().unwrap();
    let (containers, id) = create(root.path(), "p");
    let (mut cat, monitor) = monitor();
    record(root.path(), &id, &running(monitor));
    containers
        .set_intent(&id, |intent| intent.paused = true)
        .unwrap();

    let ps = stdout(&output(root.path(), &["ps"]));
    assert!(ps.contains("Up ") && ps.contains(" (Paused)"), "{ps}");
    let state = inspect_state(root.path(), "p");
    assert_eq!(state["Status"], "running");
    assert_eq!(state["Running"], true);
    assert_eq!(state["Paused"], true);
    assert_eq!(state["ExitCode"], 0);
    assert_eq!(state["FinishedAt"], "0001-01-01T00:00:00Z");

    drop(cat.stdin.take());
    cat.wait().unwrap();
}

#[test]
fn inspect_shows_privileged_and_devices_as_docker_does() {
    let root = tempfile::tempdir().unwrap();
    create(root.path(), "plain");
    let device = json!({"host_path": "/dev/loop0", "serial": "rvm-dev-0",
                        "container_path": "/dev/xvdc", "permissions": "r"});
    create_with(
        root.path(),
        "priv",
        json!({"privileged": true, "devices": [device]}),
    );
    let host_config = |name: &str| {
        let out = output(root.path(), &["inspect", name]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let all: Value = serde_json::from_slice(&out.stdout).unwrap();
        all[0]["HostConfig"].clone()
    };
    let plain = host_config("plain");
    assert_eq!(plain["Privileged"], false);
    assert_eq!(plain["Devices"], json!([]));
    let privileged = host_config("priv");
    assert_eq!(privileged["Privileged"], true);
    assert_eq!(
        privileged["Devices"],
        json!([{"PathOnHost": "/dev/loop0", "PathInContainer": "/dev/xvdc",
                "CgroupPermissions": "r"}])
    );
}

#[test]
fn a_failed_start_stays_created_with_its_code() {
    let root = tempfile::tempdir().unwrap();
    let (_containers, id) = create(root.path(), "f");
    let failed = ContainerState {
        lifecycle: Lifecycle::Created {
            failed: Some(Ended {
                code: 127,
                oom_killed: false,
                error: Some("exec: \"nope\": not found".into()),
                finished_at: Some("2026-12-05T00:00:02Z".into()),
            }),
        },
        ..ContainerState::created()
    };
    record(root.path(), &id, &failed);
    let ps = stdout(&output(root.path(), &["ps", "-a"]));
    assert!(ps.contains("Created"), "{ps}");
    let state = inspect_state(root.path(), "f");
    assert_eq!(state["Status"], "created");
    assert_eq!(state["ExitCode"], 127);
    assert_eq!(state["FinishedAt"], "2026-12-05T00:00:02Z");
}
