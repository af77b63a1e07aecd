//! `rvm` end to end on the host, with `cli/examples/fake_vmm.rs` standing in for `rvm-vmm` and
//! the agent (no VM can boot natively here): run, exit codes, stdin, detached containers, ps,
//! logs, exec, stop, rm, a dead monitor or VMM, and bad flags. The same scenarios run against the
//! real VMM and agent in the lab (`tests/e2e/run.sh`).

// Test helpers panic on broken fixtures, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/fixtures/images.rs"]
mod images;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rvm_runtime::image::{archive, Store};

const DEADLINE: Duration = Duration::from_secs(60);

/// An isolated installation: `rvm` and the fake `rvm-vmm` side by side, empty guest artifacts,
/// a root holding the busybox fixture image.
struct Env {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    root: PathBuf,
    guest: PathBuf,
}

fn tools_missing() -> Option<&'static str> {
    for tool in ["mkfs.erofs", "mkfs.ext4"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(tool);
        }
    }
    if !Path::new(images::BUSYBOX).exists() {
        return Some("busybox-static");
    }
    None
}

fn setup() -> Option<Env> {
    if let Some(tool) = tools_missing() {
        println!("SKIPPED: {tool} is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let guest = dir.path().join("guest");
    let root = dir.path().join("root");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&guest).unwrap();
    let rvm = PathBuf::from(env!("CARGO_BIN_EXE_rvm"));
    let fake = rvm.parent().unwrap().join("examples/fake_vmm");
    assert!(
        fake.is_file(),
        "{} is missing: build it with cargo build -p rvm-cli --example fake_vmm",
        fake.display()
    );
    fs::copy(&rvm, bin.join("rvm")).unwrap();
    fs::copy(&fake, bin.join("rvm-vmm")).unwrap();
    fs::write(guest.join("vmlinux"), b"").unwrap();
    fs::write(guest.join("initramfs.img"), b"").unwrap();
    let store = Store::open(&root).unwrap();
    let image = images::busybox_image(images::Compression::Gzip);
    let archive_path = dir.path().join("busybox.tar");
    images::write_oci_archive(&image, &archive_path, "busybox:latest");
    archive::load(&store, &archive_path).unwrap();
    Some(Env {
        _dir: dir,
        bin,
        root,
        guest,
    })
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin.join("rvm"));
        command
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("RVM_GUEST_DIR", &self.guest)
            .env("RVM_AGENT_TIMEOUT", "20")
            .env_remove("RVM_ROOT");
        command
    }

    /// Runs `rvm ARGS` with `stdin` as input, killing it after the deadline.
    fn rvm_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).unwrap();
        drop(input);
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > DEADLINE {
                child.kill().unwrap();
                panic!("rvm {args:?} did not finish within {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    fn rvm(&self, args: &[&str]) -> Output {
        self.rvm_with_input(args, b"")
    }

    fn containers(&self) -> Vec<String> {
        match fs::read_dir(self.root.join("containers")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn inspect(&self, name: &str) -> serde_json::Value {
        let output = self.rvm(&["inspect", name]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()[0].clone()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn pid_alive(pid: u64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned();
            state != "Z"
        })
        .unwrap_or(false)
}

#[test]
fn run_rm_prints_output_and_leaves_nothing() {
    let Some(env) = setup() else { return };
    let output = env.rvm(&["run", "--rm", "busybox", "echo", "hello"]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "hello\n");
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    let run_dir = env.root.join("run");
    let leftovers = fs::read_dir(&run_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "{run_dir:?}");
}

#[test]
fn exit_codes_are_the_containers() {
    let Some(env) = setup() else { return };
    let output = env.rvm(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(code(&output), 3, "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "out\n");
    assert!(text(&output.stderr).contains("err\n"));

    let output = env.rvm(&["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(code(&output), 127, "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("executable file not found"), "{stderr}");
    assert!(stderr.contains("nosuchcmd"), "{stderr}");
    assert!(env.containers().is_empty());
}

#[test]
fn stdin_reaches_the_container_with_i() {
    let Some(env) = setup() else { return };
    let output = env.rvm_with_input(&["run", "--rm", "-i", "busybox", "cat"], b"through stdin\n");
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "through stdin\n");
}

#[test]
fn detached_container_lifecycle() {
    let Some(env) = setup() else { return };
    let output = env.rvm(&[
        "run",
        "-d",
        "--name",
        "x",
        "busybox",
        "sh",
        "-c",
        "echo started; exec sleep 60",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let id = text(&output.stdout).trim().to_owned();
    assert_eq!(id.len(), 64, "{id}");

    let ps = text(&env.rvm(&["ps"]).stdout);
    assert!(ps.starts_with("CONTAINER ID"), "{ps}");
    assert!(
        ps.contains(&id[..12]) && ps.contains(" x\n") && ps.contains("Up "),
        "{ps}"
    );
    assert_eq!(
        text(&env.rvm(&["ps", "-q"]).stdout),
        format!("{}\n", &id[..12])
    );

    let duplicate = env.rvm(&["run", "-d", "--name", "x", "busybox", "true"]);
    assert_eq!(code(&duplicate), 125);
    assert!(
        text(&duplicate.stderr).contains("already in use"),
        "{}",
        text(&duplicate.stderr)
    );

    // The log fills as the container writes.
    let start = Instant::now();
    loop {
        let logs = env.rvm(&["logs", "x"]);
        if text(&logs.stdout) == "started\n" {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "logs: {:?}", text(&logs.stdout));
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_file = env
        .root
        .join("containers")
        .join(&id)
        .join(format!("{id}-json.log"));
    let first = fs::read_to_string(&log_file).unwrap();
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(line["log"], "started\n");
    assert_eq!(line["stream"], "stdout");

    let exec = env.rvm(&["exec", "x", "sh", "-c", "echo in exec; exit 4"]);
    assert_eq!(code(&exec), 4, "{}", text(&exec.stderr));
    assert_eq!(text(&exec.stdout), "in exec\n");
    let exec = env.rvm(&["exec", "x", "nosuchcmd"]);
    assert_eq!(code(&exec), 127, "{}", text(&exec.stderr));

    let running = env.inspect("x");
    let vmm_pid = running["VM"]["Vmm"].as_u64().unwrap();
    let monitor_pid = running["VM"]["Monitor"].as_u64().unwrap();
    assert!(pid_alive(vmm_pid) && pid_alive(monitor_pid));

    let rm = env.rvm(&["rm", "x"]);
    assert_eq!(code(&rm), 1);
    assert!(
        text(&rm.stderr).contains("container is running"),
        "{}",
        text(&rm.stderr)
    );

    let stop = env.rvm(&["stop", "-t", "5", "x"]);
    assert_eq!(code(&stop), 0, "{}", text(&stop.stderr));
    let stopped = env.inspect("x");
    assert_eq!(stopped["State"]["Status"], "exited");
    // SIGTERM ends sleep: 128 + 15.
    assert_eq!(stopped["State"]["ExitCode"], 143);
    let ps = text(&env.rvm(&["ps", "-a"]).stdout);
    assert!(ps.contains("Exited (143)"), "{ps}");
    assert!(!text(&env.rvm(&["ps"]).stdout).contains(&id[..12]));

    // start boots it again (same ID, same scratch disk); kill -s signals it.
    let start = env.rvm(&["start", "x"]);
    assert_eq!(code(&start), 0, "{}", text(&start.stderr));
    assert!(text(&env.rvm(&["ps"]).stdout).contains(&id[..12]));
    let kill = env.rvm(&["kill", "-s", "USR1", "x"]);
    assert_eq!(code(&kill), 0, "{}", text(&kill.stderr));
    let deadline = Instant::now() + DEADLINE;
    while env.inspect("x")["State"]["Status"] != "exited" {
        assert!(Instant::now() < deadline, "USR1 did not end the container");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGUSR1 (10) ends sleep: 128 + 10.
    assert_eq!(env.inspect("x")["State"]["ExitCode"], 138);
    // logs -f of a stopped container prints everything and returns.
    let follow = env.rvm(&["logs", "-f", "x"]);
    assert_eq!(text(&follow.stdout), "started\nstarted\n");

    let rm = env.rvm(&["rm", "x"]);
    assert_eq!(code(&rm), 0, "{}", text(&rm.stderr));
    assert!(env.containers().is_empty());
    assert!(!pid_alive(vmm_pid) && !pid_alive(monitor_pid));
    assert!(!env.root.join("run").join(&id).exists());
}

#[test]
fn named_volume_is_created_attached_and_kept() {
    let Some(env) = setup() else { return };
    let output = env.rvm(&["run", "--rm", "-v", "data:/data:ro", "busybox", "true"]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let volume = env.root.join("volumes/data.ext4");
    assert!(volume.is_file());
    let output = env.rvm(&[
        "run",
        "-d",
        "--name",
        "v",
        "-v",
        "data:/data",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let mounts = env.inspect("v")["Mounts"].clone();
    assert_eq!(mounts[0]["Name"], "data");
    assert_eq!(mounts[0]["Destination"], "/data");
    assert_eq!(mounts[0]["RW"], true);
    let rm = env.rvm(&["rm", "-f", "v"]);
    assert_eq!(code(&rm), 0, "{}", text(&rm.stderr));
    assert!(volume.is_file(), "a volume outlives its containers");
    assert!(env.containers().is_empty());
}

#[test]
fn killed_vmm_or_monitor_shows_as_exited_with_a_reason() {
    let Some(env) = setup() else { return };
    for (name, victim) in [("vmm-killed", "Vmm"), ("monitor-killed", "Monitor")] {
        let output = env.rvm(&["run", "-d", "--name", name, "busybox", "sleep", "60"]);
        assert_eq!(code(&output), 0, "{}", text(&output.stderr));
        let pid = env.inspect(name)["VM"][victim].as_u64().unwrap();
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        let state = loop {
            let state = env.inspect(name)["State"].clone();
            if state["Status"] == "exited" {
                break state;
            }
            assert!(start.elapsed() < DEADLINE, "{name} still {state}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let reason = state["Error"].as_str().unwrap().to_owned();
        assert!(!reason.is_empty(), "{name}: no reason");
        let ps = text(&env.rvm(&["ps", "-a"]).stdout);
        assert!(ps.contains("Exited ("), "{ps}");
        let rm = env.rvm(&["rm", name]);
        assert_eq!(code(&rm), 0, "{}", text(&rm.stderr));
    }
    assert!(env.containers().is_empty());
}

#[test]
fn bad_flags_exit_125_with_a_reason() {
    let Some(env) = setup() else { return };
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--bogus", "busybox"], "--bogus"),
        (&["run", "--memory", "12x", "busybox", "true"], "12x"),
        (&["run", "--memory", "1m", "busybox", "true"], "6MB"),
        (&["run", "--cpus", "abc", "busybox", "true"], "abc"),
        (
            &["run", "-v", "/srv:/srv", "busybox", "true"],
            "named volume",
        ),
        (&["run", "--network", "bridge", "busybox", "true"], "bridge"),
        (&["run", "-p", "8080:80", "busybox", "true"], "8080:80"),
        (
            &["run", "--env-file", "/nonexistent.env", "busybox", "true"],
            "/nonexistent.env",
        ),
        (
            &["run", "-w", "relative", "busybox", "true"],
            "absolute path",
        ),
        (
            &["run", "nosuchimage", "true"],
            "Unable to find image 'nosuchimage:latest'",
        ),
        (
            &["run", "--name", "bad/name", "busybox", "true"],
            "bad/name",
        ),
    ];
    for (args, expected) in cases {
        let output = env.rvm(args);
        let stderr = text(&output.stderr);
        assert_eq!(code(&output), 125, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    let missing = env.rvm(&["logs", "nosuch"]);
    assert_eq!(code(&missing), 1);
    assert!(text(&missing.stderr).contains("No such container: nosuch"));
}
