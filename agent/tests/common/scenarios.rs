//! Container scenarios run through a live agent, natively (Unix socket) and in the lab (vsock).
//!
//! [`every_scenario!`] is the one list of them: `agent/tests/server.rs` makes a `#[test]` of
//! each native one, so each passes or fails by itself, and the lab client
//! (`agent/examples/lab-client.rs`, run by `agent/tests/lab-agent.sh`) runs all of them in this
//! order in one guest.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// Calls `$each!(name)` for every scenario that runs natively too, then `$lab_only!(name)` for
/// those that need the guest's cgroup controllers (memory, pids): on the host the test cgroup
/// may lack them, and a fork bomb without pids.max would not stop. The order is the lab's.
macro_rules! every_scenario {
    ($each:ident, $lab_only:ident) => {
        $each!(echo_hello);
        $each!(exit_code);
        $each!(not_found_is_127);
        $each!(not_executable_is_126);
        $each!(user_cwd_env);
        $each!(bad_specs_are_refused);
        $each!(isolation);
        $each!(devices_are_filtered);
        $each!(privileged_gets_every_device_node);
        $each!(exec_signal_list);
        $each!(sigterm_delivered);
        $each!(pod_shares_pid_namespace);
        $each!(termination_message_returned);
        $each!(pty_resize);
        $each!(localhost_between_containers);
        $each!(spec_seccomp_profile);
        $lab_only!(oom_is_reported);
        $lab_only!(pids_limit_stops_fork_bomb);
    };
}
pub(crate) use every_scenario;

use rvm_protocol::agent::*;
use rvm_protocol::agent_ttrpc::AgentClient;
use rvm_protocol::ttrpc;

use super::*;

fn code_of(error: &ttrpc::Error) -> Option<ttrpc::Code> {
    match error {
        ttrpc::Error::RpcStatus(status) => Some(status.code()),
        _ => None,
    }
}

pub async fn echo_hello(client: &AgentClient, rootfs: &Rootfs) {
    let outcome = run(
        client,
        "echo",
        rootfs,
        &spec(rootfs, &["echo", "hello"], "", "/", &[]),
    )
    .await;
    assert_eq!(outcome.stdout, "hello\n", "{outcome:?}");
    assert_eq!(outcome.wait.exit_status, 0, "{outcome:?}");
    assert!(outcome.start.exec_failure.is_none(), "{outcome:?}");
}

pub async fn exit_code(client: &AgentClient, rootfs: &Rootfs) {
    let outcome = run(
        client,
        "exit3",
        rootfs,
        &spec(rootfs, &["sh", "-c", "echo oops >&2; exit 3"], "", "/", &[]),
    )
    .await;
    assert_eq!(outcome.wait.exit_status, 3, "{outcome:?}");
    assert_eq!(outcome.stderr, "oops\n", "{outcome:?}");
}

pub async fn not_found_is_127(client: &AgentClient, rootfs: &Rootfs) {
    let outcome = run(
        client,
        "nosuch",
        rootfs,
        &spec(rootfs, &["nosuchcmd"], "", "/", &[]),
    )
    .await;
    let failure = outcome.start.exec_failure.as_ref().expect("exec_failure");
    assert_eq!(failure.exit_status, 127, "{outcome:?}");
    assert_eq!(
        failure.message,
        "exec: \"nosuchcmd\": executable file not found in $PATH"
    );
    assert_eq!(outcome.wait.exit_status, 127, "{outcome:?}");
}

pub async fn not_executable_is_126(client: &AgentClient, rootfs: &Rootfs) {
    let outcome = run(
        client,
        "noexec",
        rootfs,
        &spec(rootfs, &["/etc/not-executable"], "", "/", &[]),
    )
    .await;
    let failure = outcome.start.exec_failure.as_ref().expect("exec_failure");
    assert_eq!(failure.exit_status, 126, "{outcome:?}");
    assert!(failure.message.contains("permission denied"), "{outcome:?}");
    assert_eq!(outcome.wait.exit_status, 126, "{outcome:?}");
}

pub async fn user_cwd_env(client: &AgentClient, rootfs: &Rootfs) {
    let script = "id -u; id -g; id -G; pwd; echo $FOO; echo $HOME";
    let outcome = run(
        client,
        "user",
        rootfs,
        &spec(
            rootfs,
            &["sh", "-c", script],
            "bob",
            "/home/bob",
            &["FOO=bar"],
        ),
    )
    .await;
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(
        lines,
        ["1000", "1000", "1000 50", "/home/bob", "bar", "/home/bob"],
        "{outcome:?}"
    );
    let outcome = run(
        client,
        "user2",
        rootfs,
        &spec(rootfs, &["sh", "-c", "id -u; id -g"], "1000:50", "/", &[]),
    )
    .await;
    assert_eq!(outcome.stdout, "1000\n50\n", "{outcome:?}");
}

pub async fn bad_specs_are_refused(client: &AgentClient, rootfs: &Rootfs) {
    let cases = [
        (
            "badcwd",
            spec(rootfs, &["true"], "", "/no/such/dir", &[]),
            "chdir to cwd",
        ),
        (
            "baduser",
            spec(rootfs, &["true"], "nobody-here", "/", &[]),
            "unable to find user nobody-here",
        ),
    ];
    for (id, spec, expected) in cases {
        let error = client
            .create_container(ctx(), &create_request(id, rootfs, &spec))
            .await
            .unwrap_err();
        assert_eq!(
            code_of(&error),
            Some(ttrpc::Code::INVALID_ARGUMENT),
            "{error}"
        );
        assert!(error.to_string().contains(expected), "{error}");
    }
    let profiles = [
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["uname"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 7, "value": 0, "op": "SCMP_CMP_EQ"}]}]}),
            "container seccomp profile: linux.seccomp.syscalls[0]: argument index 7 is out of range",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_SOMETIMES"}),
            "SCMP_ACT_SOMETIMES",
        ),
    ];
    for (profile, expected) in profiles {
        let mut request =
            create_request("badseccomp", rootfs, &spec(rootfs, &["true"], "", "/", &[]));
        request.oci_spec_json = with_seccomp(&request.oci_spec_json, profile);
        let error = client.create_container(ctx(), &request).await.unwrap_err();
        assert_eq!(
            code_of(&error),
            Some(ttrpc::Code::INVALID_ARGUMENT),
            "{error}"
        );
        assert!(error.to_string().contains(expected), "{error}");
    }
    let mut garbage = create_request("garbage", rootfs, &spec(rootfs, &["true"], "", "/", &[]));
    garbage.oci_spec_json = b"{not json".to_vec();
    let error = client.create_container(ctx(), &garbage).await.unwrap_err();
    assert_eq!(
        code_of(&error),
        Some(ttrpc::Code::INVALID_ARGUMENT),
        "{error}"
    );
    // The agent is still there and a good container still runs.
    client.ping(ctx(), &PingRequest::default()).await.unwrap();
}

pub async fn isolation(client: &AgentClient, rootfs: &Rootfs) {
    let script = "echo $$; hostname; grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; \
                  mount -t tmpfs x /tmp 2>&1 || echo mount-refused; ls /proc | grep -c '^[0-9]'";
    let outcome = run(
        client,
        "isolation",
        rootfs,
        &spec(rootfs, &["sh", "-c", script], "", "/", &[]),
    )
    .await;
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines[0], "1", "pid 1 in its namespace: {outcome:?}");
    assert_eq!(lines[1], "rvm-test", "{outcome:?}");
    assert_eq!(
        lines[2], "CapEff:\t00000000a80425fb",
        "Docker's default caps: {outcome:?}"
    );
    assert_eq!(lines[3], "NoNewPrivs:\t1", "{outcome:?}");
    assert_eq!(lines[4], "Seccomp:\t2", "{outcome:?}");
    assert!(outcome.stdout.contains("mount-refused"), "{outcome:?}");
}

/// The attack of issue 22: a default container (it has CAP_MKNOD, as in Docker) makes a node
/// for the VM's first virtio disk (254:0) and for /dev/mem and reads them. The device filter
/// refuses the reads (EPERM, before any driver is asked), while the standard nodes still work,
/// a fresh node for null included. The nodes go in the container's /dev, a tmpfs without
/// nodev, so that only the device filter stands in the way.
pub async fn devices_are_filtered(client: &AgentClient, rootfs: &Rootfs) {
    let script = "mknod /dev/disk0 b 254 0 && echo made-disk; head -c 1 /dev/disk0; \
                  mknod /dev/mem1 c 1 1 && echo made-mem; head -c 1 /dev/mem1; \
                  mknod /dev/null2 c 1 3 && echo ok >/dev/null2 && echo null-usable; \
                  head -c 4 /dev/urandom | wc -c";
    let outcome = run(
        client,
        "devices",
        rootfs,
        &spec(rootfs, &["sh", "-c", script], "", "/", &[]),
    )
    .await;
    let lines: Vec<&str> = outcome.stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["made-disk", "made-mem", "null-usable", "4"],
        "{outcome:?}"
    );
    for node in ["/dev/disk0", "/dev/mem1"] {
        assert!(
            outcome
                .stderr
                .contains(&format!("{node}: Operation not permitted")),
            "reading {node} must be refused by the device filter: {outcome:?}"
        );
    }
}

/// `--privileged`: a spec whose device rules allow everything gets a copy of every device node
/// of the machine (the guest's /dev in a VM, the test host's natively) but the console, made by
/// the agent; a default container gets only the standard nodes.
pub async fn privileged_gets_every_device_node(client: &AgentClient, rootfs: &Rootfs) {
    let script = "test -c /dev/kmsg && echo kmsg; test -e /dev/console || echo no-console; \
                  test -c /dev/null && echo null";
    let mut privileged = spec(rootfs, &["sh", "-c", script], "", "/", &[]);
    let allow_all = oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(oci_spec::runtime::LinuxDeviceType::A)
        .access("rwm")
        .build()
        .unwrap();
    let mut linux = privileged.linux().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    resources.set_devices(Some(vec![allow_all]));
    linux.set_resources(Some(resources));
    privileged.set_linux(Some(linux));
    let outcome = run(client, "privileged", rootfs, &privileged).await;
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines, ["kmsg", "no-console", "null"], "{outcome:?}");
    let outcome = run(
        client,
        "unprivileged",
        rootfs,
        &spec(rootfs, &["sh", "-c", script], "", "/", &[]),
    )
    .await;
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines, ["no-console", "null"], "{outcome:?}");
}

pub async fn exec_signal_list(client: &AgentClient, rootfs: &Rootfs) {
    let id = "long";
    let spec = spec(rootfs, &["sleep", "600"], "", "/", &[]);
    client
        .create_container(ctx(), &create_request(id, rootfs, &spec))
        .await
        .unwrap();
    let start = client
        .start_container(
            ctx(),
            &StartContainerRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(start.pid > 0);
    let exec = |exec_id: &str, args: &[&str]| exec_request(id, exec_id, &spec, args);
    let response = client
        .exec_process(
            ctx(),
            &exec(
                "e1",
                &[
                    "sh",
                    "-c",
                    "echo exec-ok; hostname; ps -o comm | grep -c sleep",
                ],
            ),
        )
        .await
        .unwrap();
    assert!(response.exec_failure.is_none());
    let out = read_all(client, id, "e1", false).await;
    assert_eq!(String::from_utf8_lossy(&out), "exec-ok\nrvm-test\n1\n");
    assert_eq!(wait(client, id, "e1").await.exit_status, 0);
    let response = client
        .exec_process(ctx(), &exec("e2", &["nosuchcmd"]))
        .await
        .unwrap();
    assert_eq!(
        response.exec_failure.as_ref().map(|f| f.exit_status),
        Some(127)
    );
    assert_eq!(wait(client, id, "e2").await.exit_status, 127);
    let listed = client
        .list_processes(
            ctx(),
            &ListProcessesRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        listed.processes.iter().any(|p| p.command == "sleep 600"),
        "{listed:?}"
    );
    client
        .pause(
            ctx(),
            &PauseRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    client
        .resume(
            ctx(),
            &ResumeRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let stats = client
        .stats(
            ctx(),
            &StatsRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(stats.read_at_unix_nanos > 0);
    client
        .signal_process(
            ctx(),
            &SignalProcessRequest {
                container_id: id.into(),
                signal: 9,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let waited = wait(client, id, "").await;
    assert_eq!((waited.exit_status, waited.signal), (137, 9));
    remove(client, id).await;
}

/// A spec running `script` with sh under the OCI `linux.resources` given.
fn limited_spec(
    rootfs: &Rootfs,
    script: &str,
    resources: serde_json::Value,
) -> oci_spec::runtime::Spec {
    let mut spec = spec(rootfs, &["sh", "-c", script], "", "/", &[]);
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(resources).unwrap();
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_resources(Some(resources));
    spec
}

/// (Needs the memory controller: lab only.) A 32 MiB limit exceeded is reported as an OOM kill.
pub async fn oom_is_reported(client: &AgentClient, rootfs: &Rootfs) {
    let spec = limited_spec(
        rootfs,
        "x=aaaaaaaa; while true; do x=$x$x; done",
        serde_json::json!({"memory": {"limit": 33_554_432}, "pids": {"limit": 64}}),
    );
    let outcome = run(client, "oom", rootfs, &spec).await;
    assert!(outcome.wait.oom_killed, "{outcome:?}");
    assert_eq!(
        (outcome.wait.exit_status, outcome.wait.signal),
        (137, 9),
        "{outcome:?}"
    );
}

/// `spec_json` with `profile` as its `linux.seccomp` (raw JSON: a bad profile does not parse).
fn with_seccomp(spec_json: &[u8], profile: serde_json::Value) -> Vec<u8> {
    let mut spec: serde_json::Value = serde_json::from_slice(spec_json).unwrap();
    spec["linux"]["seccomp"] = profile;
    serde_json::to_vec(&spec).unwrap()
}

/// The spec's seccomp profile applies to the container's init (loaded before the uid change
/// without no_new_privs) and to its execs (loaded last with it): mkdir fails with the profile's
/// errno, the rest is allowed.
pub async fn spec_seccomp_profile(client: &AgentClient, rootfs: &Rootfs) {
    let id = "seccomp";
    // `touch` is no mkdir: the exec waits for it, so the init has written its lines before it
    // is killed (a slow guest once had not got there yet).
    let script = "grep Seccomp: /proc/self/status; mkdir /tmp/init || echo init-denied; \
                  touch /tmp/init-done; exec sleep 600";
    let mut spec = spec(rootfs, &["sh", "-c", script], "", "/", &[]);
    if let Some(p) = spec.process_mut() {
        p.set_no_new_privileges(Some(false));
    }
    let mut request = create_request(id, rootfs, &spec);
    let profile = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28},
        {"names": ["socketcall"], "action": "SCMP_ACT_KILL"}]});
    request.oci_spec_json = with_seccomp(&request.oci_spec_json, profile);
    client.create_container(ctx(), &request).await.unwrap();
    let start = StartContainerRequest {
        container_id: id.into(),
        ..Default::default()
    };
    client.start_container(ctx(), &start).await.unwrap();
    let mut process = spec.process().clone().unwrap();
    process.set_no_new_privileges(Some(true));
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "while [ ! -e /tmp/init-done ]; do sleep 0.1; done; \
         mkdir /tmp/exec || echo exec-denied; grep NoNewPrivs: /proc/self/status"
            .into(),
    ]));
    let exec = ExecProcessRequest {
        container_id: id.into(),
        exec_id: "e1".into(),
        oci_process_json: serde_json::to_vec(&process).unwrap(),
        ..Default::default()
    };
    client.exec_process(ctx(), &exec).await.unwrap();
    let out = String::from_utf8_lossy(&read_all(client, id, "e1", false).await).into_owned();
    let err = String::from_utf8_lossy(&read_all(client, id, "e1", true).await).into_owned();
    assert_eq!(out, "exec-denied\nNoNewPrivs:\t1\n", "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(wait(client, id, "e1").await.exit_status, 0);
    let signal = SignalProcessRequest {
        container_id: id.into(),
        signal: 9,
        ..Default::default()
    };
    client.signal_process(ctx(), &signal).await.unwrap();
    let out = String::from_utf8_lossy(&read_all(client, id, "", false).await).into_owned();
    let err = String::from_utf8_lossy(&read_all(client, id, "", true).await).into_owned();
    assert_eq!(out, "Seccomp:\t2\ninit-denied\n", "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(wait(client, id, "").await.signal, 9);
    remove(client, id).await;
}

/// How long a container may take to say it is ready (a loaded lab's emulated guest is slow).
const READY: Duration = Duration::from_secs(60);

fn signal_request(id: &str, exec_id: &str, signal: u32, all: bool) -> SignalProcessRequest {
    SignalProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        signal,
        all,
        ..Default::default()
    }
}

/// SIGTERM reaches a container's init that traps it (PID 1 of its namespace gets only the
/// signals it handles), and kills an exec without a handler with status 143, as Docker reports.
pub async fn sigterm_delivered(client: &AgentClient, rootfs: &Rootfs) {
    let id = "term";
    let script = "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 1; done";
    let spec = spec(rootfs, &["sh", "-c", script], "", "/", &[]);
    create_and_start(client, &create_request(id, rootfs, &spec)).await;
    let mut before = read_until(client, id, "", "ready\n", READY).await;
    let exec = exec_request(id, "e1", &spec, &["sleep", "600"]);
    client.exec_process(ctx(), &exec).await.unwrap();
    client
        .signal_process(ctx(), &signal_request(id, "e1", 15, false))
        .await
        .unwrap();
    let waited = wait(client, id, "e1").await;
    assert_eq!((waited.exit_status, waited.signal), (143, 15), "{waited:?}");
    client
        .signal_process(ctx(), &signal_request(id, "", 15, false))
        .await
        .unwrap();
    before.push_str(&String::from_utf8_lossy(
        &read_all(client, id, "", false).await,
    ));
    let waited = wait(client, id, "").await;
    assert_eq!(before, "ready\ngot-term\n");
    assert_eq!((waited.exit_status, waited.signal), (42, 0), "{waited:?}");
    remove(client, id).await;
}

/// A pod whose containers share the sandbox's pid namespace (`shareProcessNamespace`): a
/// member sees the sandbox's process as PID 1 and the other member's process, is not PID 1
/// itself (so SIGTERM without a handler kills it, 143), an exec into it is in the same
/// namespace, and what is left of it dies with its init. Without "pid" a pod's container keeps
/// its own namespace.
pub async fn pod_shares_pid_namespace(client: &AgentClient, rootfs: &Rootfs) {
    let member = |id: &str, args: &[&str], namespaces: &[&str]| {
        let spec = spec(rootfs, args, "", "/", &[]);
        let mut request = create_request(id, rootfs, &spec);
        request.sandbox_id = "pid-sandbox".into();
        request.sandbox_namespaces = namespaces.iter().map(|n| (*n).to_owned()).collect();
        (spec, request)
    };
    let sandbox = create_request(
        "pid-sandbox",
        rootfs,
        &spec(rootfs, &["sleep", "3601"], "", "/", &[]),
    );
    create_and_start(client, &sandbox).await;
    let (m1_spec, m1) = member("pid-m1", &["sleep", "3602"], &["pid", "ipc"]);
    create_and_start(client, &m1).await;
    let script =
        "tr '\\0' ' ' </proc/1/cmdline; echo; echo $$; ps -o args | grep -c '^sleep 360[12]'";
    let (_, m2) = member("pid-m2", &["sh", "-c", script], &["pid"]);
    create_and_start(client, &m2).await;
    let out = String::from_utf8_lossy(&read_all(client, "pid-m2", "", false).await).into_owned();
    assert_eq!(wait(client, "pid-m2", "").await.exit_status, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0], "sleep 3601 ",
        "PID 1 is the sandbox's process: {out}"
    );
    assert_ne!(lines[1], "1", "the member is not PID 1: {out}");
    assert_eq!(
        lines[2], "2",
        "the sandbox's and m1's sleep are listed: {out}"
    );
    remove(client, "pid-m2").await;

    let exec = exec_request(
        "pid-m1",
        "e1",
        &m1_spec,
        &[
            "sh",
            "-c",
            "tr '\\0' ' ' </proc/1/cmdline; echo; ps -o args | grep -c '^sleep 360[12]'",
        ],
    );
    client.exec_process(ctx(), &exec).await.unwrap();
    let out = String::from_utf8_lossy(&read_all(client, "pid-m1", "e1", false).await).into_owned();
    assert_eq!(wait(client, "pid-m1", "e1").await.exit_status, 0, "{out}");
    assert_eq!(
        out, "sleep 3601 \n2\n",
        "the exec is in the pod's pid namespace"
    );

    let exec = exec_request("pid-m1", "e2", &m1_spec, &["sleep", "3603"]);
    client.exec_process(ctx(), &exec).await.unwrap();
    client
        .signal_process(ctx(), &signal_request("pid-m1", "", 15, false))
        .await
        .unwrap();
    let waited = wait(client, "pid-m1", "").await;
    assert_eq!((waited.exit_status, waited.signal), (143, 15), "{waited:?}");
    // Not PID 1, the init's end does not end the namespace: the engine kills the rest.
    let waited = wait(client, "pid-m1", "e2").await;
    assert_eq!(waited.signal, 9, "the exec outlived the init: {waited:?}");
    remove(client, "pid-m1").await;

    let (_, own) = member(
        "pid-own",
        &["sh", "-c", "echo $$; ps -o args | grep -c '^sleep 3601'"],
        &["ipc"],
    );
    create_and_start(client, &own).await;
    let out = String::from_utf8_lossy(&read_all(client, "pid-own", "", false).await).into_owned();
    assert_eq!(wait(client, "pid-own", "").await.exit_status, 1, "{out}");
    assert_eq!(
        out, "1\n0\n",
        "its own pid namespace: PID 1, the sandbox unseen"
    );
    remove(client, "pid-own").await;

    client
        .signal_process(ctx(), &signal_request("pid-sandbox", "", 9, false))
        .await
        .unwrap();
    assert_eq!(wait(client, "pid-sandbox", "").await.signal, 9);
    remove(client, "pid-sandbox").await;
}

/// A host file asked back (kubelet's termination message on /dev/termination-log): what the
/// container wrote into it comes back with its init's WaitProcess, and with no exec's.
pub async fn termination_message_returned(client: &AgentClient, rootfs: &Rootfs) {
    let id = "termlog";
    let script = "printf 'lab message' >/dev/termination-log && exit 2";
    let mut spec = spec(rootfs, &["sh", "-c", script], "", "/", &[]);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(
        oci_spec::runtime::MountBuilder::default()
            .destination("/dev/termination-log")
            .typ("bind")
            .source("/var/lib/kubelet/pods/uid/containers/termlog/0a1b2c3d")
            .options(vec!["rbind".to_owned(), "rw".to_owned()])
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    let mut request = create_request(id, rootfs, &spec);
    request.files = vec![HostFile {
        destination: "/dev/termination-log".into(),
        mode: 0o666,
        return_max_bytes: 4096,
        ..Default::default()
    }];
    create_and_start(client, &request).await;
    let err = String::from_utf8_lossy(&read_all(client, id, "", true).await).into_owned();
    let waited = wait(client, id, "").await;
    assert_eq!(waited.exit_status, 2, "{err}");
    let returned: Vec<(&str, &[u8])> = waited
        .returned_files
        .iter()
        .map(|f| (f.destination.as_str(), &f.content[..]))
        .collect();
    assert_eq!(returned, [("/dev/termination-log", &b"lab message"[..])]);
    remove(client, id).await;
}

/// A terminal session: output comes through the pty (with its \r\n), ResizePty sets the size
/// `stty size` reads and sends the session SIGWINCH, stdin typed into the pty is echoed and read.
pub async fn pty_resize(client: &AgentClient, rootfs: &Rootfs) {
    let id = "pty";
    // ash's read returns early when a trapped signal arrives while it waits: it is retried.
    let script = "trap 'echo \"winch $(stty size)\"' WINCH; echo ready; n=0; \
                  until read -r line; do n=$((n+1)); [ $n -lt 5 ] || exit 9; done; \
                  echo \"got $line\"; echo \"size $(stty size)\"";
    let mut request = create_request(
        id,
        rootfs,
        &spec(rootfs, &["sh", "-c", script], "", "/", &[]),
    );
    request.terminal = true;
    request.stdin = true;
    create_and_start(client, &request).await;
    let mut out = read_until(client, id, "", "ready\r\n", READY).await;
    let resize = ResizePtyRequest {
        container_id: id.into(),
        rows: 40,
        columns: 120,
        ..Default::default()
    };
    client.resize_pty(ctx(), &resize).await.unwrap();
    // The shell runs its WINCH trap once the signal has arrived; only then is "go" typed.
    out.push_str(&read_until(client, id, "", "winch 40 120\r\n", READY).await);
    let write = WriteStdinRequest {
        container_id: id.into(),
        data: b"go\n".to_vec(),
        ..Default::default()
    };
    assert_eq!(client.write_stdin(ctx(), &write).await.unwrap().written, 3);
    out.push_str(&String::from_utf8_lossy(
        &read_all(client, id, "", false).await,
    ));
    assert_eq!(
        out, "ready\r\nwinch 40 120\r\ngo\r\ngot go\r\nsize 40 120\r\n",
        "the pty's output"
    );
    assert!(read_all(client, id, "", true).await.is_empty());
    assert_eq!(wait(client, id, "").await.exit_status, 0);
    remove(client, id).await;
}

/// Two containers of one VM share its network namespace: B reaches A's listener on 127.0.0.1
/// and data flows both ways. B retries until A listens, within its own deadline. The port
/// follows the test's process id: natively the containers share the host's loopback with any
/// other run of these tests.
///
/// A answers from a program that closes the connection only once B's line is in: busybox nc
/// exits at the peer's EOF, so a listener fed by `echo from-a |` (which half-closes as soon as
/// it has sent) could end B before B had read its own stdin (CI, 2026-12-03: A got nothing).
pub async fn localhost_between_containers(client: &AgentClient, rootfs: &Rootfs) {
    let port = 20_000 + std::process::id() % 20_000;
    let server =
        format!("nc -l -p {port} -e sh -c 'echo from-a; read -r line; echo \"$line\" >&2'");
    let a = create_request(
        "net-a",
        rootfs,
        &spec(rootfs, &["sh", "-c", &server], "", "/", &[]),
    );
    create_and_start(client, &a).await;
    let connect = format!(
        "i=0; until echo from-b | nc 127.0.0.1 {port}; do i=$((i+1)); \
         [ $i -lt 300 ] || exit 1; usleep 200000; done 2>/dev/null"
    );
    let b = run(
        client,
        "net-b",
        rootfs,
        &spec(rootfs, &["sh", "-c", &connect], "", "/", &[]),
    )
    .await;
    assert_eq!(
        (b.stdout.as_str(), b.wait.exit_status),
        ("from-a\n", 0),
        "{b:?}"
    );
    let a_out = String::from_utf8_lossy(&read_all(client, "net-a", "", false).await).into_owned();
    let a_err = String::from_utf8_lossy(&read_all(client, "net-a", "", true).await).into_owned();
    assert_eq!(a_err, "from-b\n", "A's stdout: {a_out}");
    assert_eq!(wait(client, "net-a", "").await.exit_status, 0);
    remove(client, "net-a").await;
}

/// (Needs the pids controller: lab only, since without it the bomb would be unbounded.)
/// pids.max 64 holds a fork bomb at 64 processes while the agent keeps answering (a ping, a
/// listing of the bomb, and another container); the bomb's container is then killed.
pub async fn pids_limit_stops_fork_bomb(client: &AgentClient, rootfs: &Rootfs) {
    const LIMIT: u64 = 64;
    let id = "bomb";
    // A foreground bomb: every shell waits for its pipeline, so orphans are reaped (by sh as
    // PID 1) and pids stay in use by live, forking processes, not by zombies.
    let bomb = limited_spec(
        rootfs,
        "f() { f | f; }; while true; do f; done",
        serde_json::json!({"pids": {"limit": LIMIT}}),
    );
    create_and_start(client, &create_request(id, rootfs, &bomb)).await;
    let stats = StatsRequest {
        container_id: id.into(),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    loop {
        let pids = client.stats(ctx(), &stats).await.unwrap().pids.unwrap();
        assert_eq!(pids.limit, LIMIT, "{pids:?}");
        assert!(pids.current <= LIMIT, "{pids:?}");
        if pids.current == LIMIT {
            break;
        }
        assert!(
            started.elapsed() < READY,
            "the bomb never reached {LIMIT} pids: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let responsive = Duration::from_secs(20);
    let ping = std::time::Instant::now();
    client
        .ping(
            ttrpc::context::with_duration(responsive),
            &PingRequest::default(),
        )
        .await
        .unwrap();
    let list = ListProcessesRequest {
        container_id: id.into(),
        ..Default::default()
    };
    let listed = client
        .list_processes(ttrpc::context::with_duration(responsive), &list)
        .await
        .unwrap();
    assert!(!listed.processes.is_empty() && listed.processes.len() <= LIMIT as usize);
    let ping = ping.elapsed();
    let beside = std::time::Instant::now();
    let other = tokio::time::timeout(
        READY,
        run(
            client,
            "beside-bomb",
            rootfs,
            &spec(rootfs, &["echo", "alive"], "", "/", &[]),
        ),
    )
    .await
    .expect("a container beside the bomb within the deadline");
    assert_eq!(other.stdout, "alive\n", "{other:?}");
    let beside = beside.elapsed();
    let pids = client.stats(ctx(), &stats).await.unwrap().pids.unwrap();
    assert!(
        pids.current > 1 && pids.current <= LIMIT,
        "the bomb still runs: {pids:?}"
    );
    println!(
        "  fork bomb at {} pids: ping and list in {:.2} s, a container beside it in {:.2} s",
        pids.current,
        ping.as_secs_f64(),
        beside.as_secs_f64()
    );
    client
        .signal_process(ctx(), &signal_request(id, "", 9, true))
        .await
        .unwrap();
    let waited = wait(client, id, "").await;
    assert_eq!((waited.exit_status, waited.signal), (137, 9), "{waited:?}");
    read_all(client, id, "", false).await;
    read_all(client, id, "", true).await;
    remove(client, id).await;
}
