//! `rvm logs`, `inspect` and `ps` of the real `rvm` binary on containers whose log and state are
//! written as the monitor writes them (the runtime's own `LogWriter`), in a temporary --root, no
//! VM needed: the log is read across its rotated files and followed through rotations, its
//! limits shown as Docker shows them, and text from the image escaped in `ps`.

// Test helpers panic on broken fixtures, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use rvm_runtime::sandbox::config::ContainerConfig;
use rvm_runtime::sandbox::files::write_atomic;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::log::{LogConfig, LogDriver, LogWriter, Stream};
use rvm_runtime::sandbox::process::ProcessId;
use rvm_runtime::sandbox::state::{ContainerState, Containers, Ended, Lifecycle};
use serde_json::{json, Value};

/// A bound on each `rvm` run, so that a follower that never ends fails the test.
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

/// A container named `name` running `args`, with `log` (none: a config written before rvm kept
/// log settings); its ID.
fn create(root: &Path, name: &str, args: &[&str], log: Option<LogConfig>) -> String {
    let containers = Containers::open(&Layout::for_root(root)).unwrap();
    let mut config = json!({
        "id": format!("{name:0>64}"),
        "name": name,
        "image": "busybox",
        "image_id": "sha256:x",
        "created": "2026-12-05T00:00:00Z",
        "spec": {
            "ociVersion": "1.0.2",
            "process": {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0}},
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
    if let Some(log) = log {
        config["log"] = serde_json::to_value(log).unwrap();
    }
    let config: ContainerConfig = serde_json::from_value(config).unwrap();
    containers.create(config).unwrap().id
}

fn record(root: &Path, id: &str, state: &ContainerState) {
    let path = Layout::for_root(root).state_path(id);
    write_atomic(&path, &serde_json::to_vec(state).unwrap()).unwrap();
}

fn exited() -> ContainerState {
    ContainerState {
        lifecycle: Lifecycle::Exited(Ended {
            code: 0,
            oom_killed: false,
            error: None,
            finished_at: Some("2026-12-05T00:00:02Z".into()),
        }),
        ..ContainerState::created()
    }
}

fn small(max_file: u32) -> LogConfig {
    LogConfig {
        driver: LogDriver::JsonFile,
        max_size: 64_000,
        max_file,
    }
}

/// Writes lines `numbers` of stdout (about 80 bytes each in the log: 800 to a file).
fn write_lines(log: &mut LogWriter, numbers: std::ops::Range<usize>) {
    for n in numbers {
        log.write(Stream::Stdout, format!("line {n:05}\n").as_bytes())
            .unwrap();
    }
}

fn numbers(text: &str) -> Vec<usize> {
    text.lines()
        .map(|l| l.trim_start_matches("line ").parse().unwrap())
        .collect()
}

fn inspect(root: &Path, name: &str) -> Value {
    let out = output(root, &["inspect", name]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all[0].clone()
}

#[test]
fn logs_reads_across_rotated_files_in_order() {
    let root = tempfile::tempdir().unwrap();
    let id = create(root.path(), "r", &["sh"], Some(small(3)));
    record(root.path(), &id, &exited());
    let path = Layout::for_root(root.path()).log_path(&id);
    let mut log = LogWriter::open(&path, small(3)).unwrap();
    write_lines(&mut log, 0..4000);
    assert!(path.with_extension("log.2").exists());
    assert!(!path.with_extension("log.3").exists());

    let out = output(root.path(), &["logs", "r"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown = numbers(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(shown.last(), Some(&3999));
    assert!(shown.len() > 1500 && shown.len() < 2500, "{}", shown.len());
    assert!(shown.windows(2).all(|w| w[1] == w[0] + 1));

    let out = output(root.path(), &["logs", "-n", "3", "-t", "r"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[2].starts_with("20") && lines[2].ends_with("Z line 03999"),
        "{text}"
    );
}

#[test]
fn logs_follow_goes_on_through_rotations() {
    let root = tempfile::tempdir().unwrap();
    let id = create(root.path(), "f", &["sh"], Some(small(3)));
    // `cat` stands in for the monitor: the container runs while it lives.
    let mut monitor = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
    record(
        root.path(),
        &id,
        &ContainerState {
            lifecycle: Lifecycle::Running,
            monitor: ProcessId::of(monitor.id()),
            guest_pid: Some(1),
            started_at: Some("2026-12-05T00:00:01Z".into()),
            ..ContainerState::created()
        },
    );
    let path = Layout::for_root(root.path()).log_path(&id);
    let mut log = LogWriter::open(&path, small(3)).unwrap();
    write_lines(&mut log, 0..10);

    let mut follower = rvm(root.path(), &["logs", "-f", "f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "line 00000\n");
    // The follower runs: two rotations while it follows, then the container ends.
    write_lines(&mut log, 10..2000);
    record(root.path(), &id, &exited());
    drop(monitor.stdin.take());
    monitor.wait().unwrap();

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(follower.wait().unwrap().success());
    let mut shown = vec![0];
    shown.extend(numbers(&rest));
    assert_eq!(shown, (0..2000).collect::<Vec<_>>());
}

#[test]
fn log_settings_show_in_inspect_and_none_cannot_be_read() {
    let root = tempfile::tempdir().unwrap();
    create(root.path(), "old", &["sh"], None);
    let old = inspect(root.path(), "old");
    assert_eq!(
        old["HostConfig"]["LogConfig"],
        json!({"Type": "json-file", "Config": {"max-size": "20m", "max-file": "5"}})
    );
    create(root.path(), "three", &["sh"], Some(small(3)));
    assert_eq!(
        inspect(root.path(), "three")["HostConfig"]["LogConfig"]["Config"],
        json!({"max-size": "64k", "max-file": "3"})
    );
    let none = LogConfig {
        driver: LogDriver::None,
        ..LogConfig::default()
    };
    create(root.path(), "quiet", &["sh"], Some(none));
    let shown = inspect(root.path(), "quiet");
    assert_eq!(shown["HostConfig"]["LogConfig"]["Type"], "none");
    assert_eq!(shown["LogPath"], "");
    let out = output(root.path(), &["logs", "quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not support reading"), "{err}");
}

#[test]
fn ps_escapes_control_characters_from_the_image() {
    let root = tempfile::tempdir().unwrap();
    create(root.path(), "t", &["sh", "-c", "\u{1b}]0;pwned\u{7}"], None);
    let out = output(root.path(), &["ps", "-a"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("\"sh -c \\x1b]0;pwned\\x07\""), "{text}");
}
