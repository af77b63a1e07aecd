//! The task service's state machine against a fake guest (`fakes.rs`): the fake stands in for
//! the VM and its agent and records what the service asked of it; a fake event sink records what
//! containerd would have seen. The real guest is the lab's.

mod fakes;

use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::Code;
use containerd_shim_protos::types::task::Status as TaskStatus;
use rvm_protocol::agent::{PidsStats, StatsResponse};
use rvm_runtime::sandbox::agent::{AgentError, ExecFailure, Started};

use crate::metrics;
use crate::pod;
use crate::process::ExecId;
use crate::seccomp::Unprofiled;
use fakes::{code_of, ctx, harness, harness_with, is_ready_now, status_of, DEADLINE, VMM_PID};

#[tokio::test]
async fn create_reports_the_vmm_pid_and_publishes_task_create() {
    let h = harness();
    let created = h.create("t1").await.unwrap();
    assert_eq!(created.pid, VMM_PID);
    let event: TaskCreate = h.events.nth(topics::TASK_CREATE_EVENT_TOPIC, 1).await;
    assert_eq!(event.container_id, "t1");
    assert_eq!(event.pid, VMM_PID);
    assert_eq!(event.io.stdout, "/fifo/t1-out");
    assert_eq!(*h.launcher.boots.lock().unwrap(), ["t1 slots=0"]);
    let state = h.state("t1", "").await.unwrap();
    assert_eq!(status_of(&state), TaskStatus::CREATED);
    assert_eq!(state.pid, VMM_PID);
}

#[tokio::test]
async fn a_second_create_of_the_same_task_is_refused_without_booting() {
    let h = harness();
    h.create("t1").await.unwrap();
    let (code, message) = code_of(h.create("t1").await.unwrap_err());
    assert_eq!(code, Code::ALREADY_EXISTS);
    assert!(message.contains("t1"), "{message}");
    assert_eq!(h.launcher.boots.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_vm_that_does_not_boot_fails_create_with_internal_and_leaves_no_task() {
    let h = harness();
    *h.launcher.refuse_boot.lock().unwrap() = true;
    let (code, message) = code_of(h.create("t1").await.unwrap_err());
    assert_eq!(code, Code::INTERNAL);
    assert!(message.starts_with("task t1: "), "{message}");
    assert_eq!(
        code_of(h.state("t1", "").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    assert!(h.events.topics().is_empty(), "{:?}", h.events.topics());
}

#[tokio::test]
async fn start_runs_the_init_reports_the_vmm_pid_and_publishes_task_start() {
    let h = harness();
    h.create("t1").await.unwrap();
    let started = h.start("t1", "").await.unwrap();
    assert_eq!(started.pid, VMM_PID);
    assert!(h.guest.called("start t1"));
    assert!(h.guest.called("copy_stdio t1 \"\""));
    let event: TaskStart = h.events.nth(topics::TASK_START_EVENT_TOPIC, 1).await;
    assert_eq!((event.container_id.as_str(), event.pid), ("t1", VMM_PID));
    let state = h.state("t1", "").await.unwrap();
    assert_eq!(status_of(&state), TaskStatus::RUNNING);
}

#[tokio::test]
async fn a_second_start_is_refused_with_failed_precondition() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    let (code, _) = code_of(h.start("t1", "").await.unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION);
    let starts = h.guest.calls().iter().filter(|c| *c == "start t1").count();
    assert_eq!(starts, 1);
}

#[tokio::test]
async fn the_init_exit_is_published_with_the_task_id_and_ends_wait() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    let request = api::WaitRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    let context = ctx();
    let mut waiter = Box::pin(h.service.wait(&context, request));
    assert!(
        !is_ready_now(waiter.as_mut()).await,
        "wait returned before the exit"
    );
    h.guest.exit("t1", ExecId::Init, 3, false);
    let waited = tokio::time::timeout(DEADLINE, waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waited.exit_status, 3);
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!((exit.container_id.as_str(), exit.id.as_str()), ("t1", "t1"));
    assert_eq!((exit.pid, exit.exit_status), (VMM_PID, 3));
    assert_eq!(exit.exited_at, waited.exited_at);
    let state = h.state("t1", "").await.unwrap();
    assert_eq!(status_of(&state), TaskStatus::STOPPED);
    assert_eq!(state.exit_status, 3);
}

#[tokio::test]
async fn an_oom_kill_is_published_before_the_exit() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.guest.exit("t1", ExecId::Init, 137, true);
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!(exit.exit_status, 137);
    let oom: Vec<TaskOOM> = h.events.on(topics::TASK_OOM_EVENT_TOPIC);
    assert_eq!(oom.len(), 1);
    assert_eq!(oom[0].container_id, "t1");
    let topics = h.events.topics();
    let oom_at = topics
        .iter()
        .position(|t| t == topics::TASK_OOM_EVENT_TOPIC);
    let exit_at = topics
        .iter()
        .position(|t| t == topics::TASK_EXIT_EVENT_TOPIC);
    assert!(oom_at < exit_at, "{topics:?}");
}

#[tokio::test]
async fn an_exec_runs_with_its_own_id_pid_and_events() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    let added: TaskExecAdded = h.events.nth(topics::TASK_EXEC_ADDED_EVENT_TOPIC, 1).await;
    assert_eq!(added.exec_id, "e1");
    assert_eq!(
        status_of(&h.state("t1", "e1").await.unwrap()),
        TaskStatus::CREATED
    );
    let started = h.start("t1", "e1").await.unwrap();
    // The guest's pid: the fake hands out 100, 101, ... and the init's start took 100.
    assert_eq!(started.pid, 101);
    assert!(h
        .guest
        .called(r#"exec t1 e1 terminal=false stdin=true spec={"args":["sh"]}"#));
    let event: TaskExecStarted = h.events.nth(topics::TASK_EXEC_STARTED_EVENT_TOPIC, 1).await;
    assert_eq!((event.exec_id.as_str(), event.pid), ("e1", 101));
    h.guest.exit("t1", ExecId::Exec("e1".to_owned()), 5, false);
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!((exit.container_id.as_str(), exit.id.as_str()), ("t1", "e1"));
    assert_eq!((exit.pid, exit.exit_status), (101, 5));
    // The init still runs.
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::RUNNING
    );
}

#[tokio::test]
async fn exec_ids_that_the_agent_would_refuse_are_invalid_argument_naming_them() {
    let h = harness();
    h.create("t1").await.unwrap();
    let long = "x".repeat(129);
    for (bad, shown) in [
        ("", "exec id must not be empty"),
        ("a/b", "\"a/b\""),
        ("a\0b", "\"a\\0b\""),
        ("..", "\"..\""),
        (long.as_str(), "129 bytes"),
    ] {
        let (code, message) = code_of(h.exec("t1", bad).await.unwrap_err());
        assert_eq!(code, Code::INVALID_ARGUMENT, "{bad:?}");
        assert!(message.contains(shown), "{bad:?}: {message}");
        assert!(message.contains("task t1"), "{bad:?}: {message}");
    }
    assert!(h
        .events
        .on::<TaskExecAdded>(topics::TASK_EXEC_ADDED_EVENT_TOPIC)
        .is_empty());
}

#[tokio::test]
async fn a_duplicate_exec_id_is_refused_with_already_exists() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    let (code, message) = code_of(h.exec("t1", "e1").await.unwrap_err());
    assert_eq!(code, Code::ALREADY_EXISTS);
    assert!(message.contains("exec e1 of task t1"), "{message}");
}

#[tokio::test]
async fn an_exec_without_a_process_spec_is_refused() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::ExecProcessRequest {
        id: "t1".to_owned(),
        exec_id: "e1".to_owned(),
        ..Default::default()
    };
    let (code, message) = code_of(h.service.exec(&ctx(), request).await.unwrap_err());
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(message.contains("e1 has no process spec"), "{message}");
    // Not registered: a later state call does not find it.
    assert_eq!(
        code_of(h.state("t1", "e1").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
}

#[tokio::test]
async fn unknown_tasks_and_execs_are_not_found() {
    let h = harness();
    assert_eq!(
        code_of(h.state("nope", "").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    assert_eq!(
        code_of(h.start("nope", "").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    h.create("t1").await.unwrap();
    let (code, message) = code_of(h.kill("t1", "e9", 9).await.unwrap_err());
    assert_eq!(code, Code::NOT_FOUND);
    assert_eq!(message, "exec e9 of task t1 not found");
}

#[tokio::test]
async fn kill_before_start_ends_the_process_as_killed_without_the_guest() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.kill("t1", "", 9).await.unwrap();
    assert!(!h.guest.called("signal"), "{:?}", h.guest.calls());
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!((exit.id.as_str(), exit.exit_status), ("t1", 137));
    assert_eq!(h.wait("t1", "").await.unwrap().exit_status, 137);
    // It can no longer start.
    assert_eq!(
        code_of(h.start("t1", "").await.unwrap_err()).0,
        Code::FAILED_PRECONDITION
    );
}

#[tokio::test]
async fn kill_of_a_running_process_signals_it_in_the_guest() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    h.start("t1", "e1").await.unwrap();
    h.kill("t1", "e1", 15).await.unwrap();
    let request = api::KillRequest {
        id: "t1".to_owned(),
        signal: 9,
        all: true,
        ..Default::default()
    };
    h.service.kill(&ctx(), request).await.unwrap();
    assert!(h.guest.called("signal t1 \"e1\" 15 all=false"));
    assert!(h.guest.called("signal t1 \"\" 9 all=true"));
    // The exit comes from the guest, not from the kill.
    assert!(h
        .events
        .on::<TaskExit>(topics::TASK_EXIT_EVENT_TOPIC)
        .is_empty());
}

#[tokio::test]
async fn kill_of_a_finished_process_is_not_found() {
    let h = harness();
    h.run_to_exit("t1", 0).await;
    let (code, message) = code_of(h.kill("t1", "", 9).await.unwrap_err());
    assert_eq!(code, Code::NOT_FOUND);
    assert!(message.contains("already finished"), "{message}");
}

#[tokio::test]
async fn a_refused_signal_is_unknown_naming_the_task() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.guest.fail_next("signal");
    let (code, message) = code_of(h.kill("t1", "", 15).await.unwrap_err());
    assert_eq!(code, Code::UNKNOWN);
    assert_eq!(
        message,
        "task t1: agent call signal failed: signal refused by the fake"
    );
}

#[tokio::test]
async fn delete_of_a_running_task_is_refused_and_keeps_the_vm() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    let (code, message) = code_of(h.delete("t1", "").await.unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(message.contains("kill it first"), "{message}");
    assert!(!h.guest.called("shutdown"));
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::RUNNING
    );
}

#[tokio::test]
async fn delete_of_an_exited_task_ends_its_vm_and_forgets_it() {
    let h = harness();
    h.run_to_exit("t1", 4).await;
    let deleted = h.delete("t1", "").await.unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (VMM_PID, 4));
    assert!(h.guest.called("shutdown"));
    let event: TaskDelete = h.events.nth(topics::TASK_DELETE_EVENT_TOPIC, 1).await;
    assert_eq!((event.id.as_str(), event.exit_status), ("t1", 4));
    assert_eq!(
        code_of(h.state("t1", "").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    // With no task left, shutdown ends the shim.
    let request = api::ShutdownRequest::default();
    h.service.shutdown(&ctx(), request).await.unwrap();
    tokio::time::timeout(DEADLINE, h.exit.wait())
        .await
        .expect("the shim was not told to exit");
}

#[tokio::test]
async fn delete_of_a_never_started_task_reports_exit_zero() {
    let h = harness();
    h.create("t1").await.unwrap();
    let deleted = h.delete("t1", "").await.unwrap();
    assert_eq!(deleted.exit_status, 0);
    assert!(deleted.exited_at.is_some());
    assert!(h.guest.called("shutdown"));
}

#[tokio::test]
async fn delete_of_an_exec_removes_only_the_exec() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    h.start("t1", "e1").await.unwrap();
    h.guest.exit("t1", ExecId::Exec("e1".to_owned()), 2, false);
    assert_eq!(h.wait("t1", "e1").await.unwrap().exit_status, 2);
    let deleted = h.delete("t1", "e1").await.unwrap();
    assert_eq!((deleted.pid, deleted.exit_status), (101, 2));
    assert_eq!(
        code_of(h.state("t1", "e1").await.unwrap_err()).0,
        Code::NOT_FOUND
    );
    assert!(!h.guest.called("shutdown"));
    assert!(h
        .events
        .on::<TaskDelete>(topics::TASK_DELETE_EVENT_TOPIC)
        .is_empty());
    // The same id may be used again once deleted.
    h.exec("t1", "e1").await.unwrap();
}

#[tokio::test]
async fn a_command_the_guest_cannot_run_fails_start_and_stops_with_its_code() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.guest.answer_next_start(Ok(Started {
        pid: 0,
        failure: Some(ExecFailure {
            code: 127,
            message: "exec: \"nosuchcmd\": executable file not found in $PATH".to_owned(),
        }),
    }));
    let (code, message) = code_of(h.start("t1", "").await.unwrap_err());
    assert_eq!(code, Code::UNKNOWN);
    assert_eq!(
        message,
        "task t1: exec: \"nosuchcmd\": executable file not found in $PATH"
    );
    let state = h.state("t1", "").await.unwrap();
    assert_eq!(status_of(&state), TaskStatus::STOPPED);
    assert_eq!(state.exit_status, 127);
    assert!(h
        .events
        .on::<TaskStart>(topics::TASK_START_EVENT_TOPIC)
        .is_empty());
}

#[tokio::test]
async fn an_agent_error_at_exec_start_takes_dockers_exit_code() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.exec("t1", "e1").await.unwrap();
    h.guest.answer_next_start(Err(AgentError::Rpc {
        call: "ExecProcess",
        code: Some(rvm_protocol::ttrpc::Code::PERMISSION_DENIED),
        message: "permission denied".to_owned(),
    }));
    let (code, message) = code_of(h.start("t1", "e1").await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (Code::UNKNOWN, "task t1: permission denied")
    );
    assert_eq!(h.wait("t1", "e1").await.unwrap().exit_status, 126);
}

#[tokio::test]
async fn pause_and_resume_show_in_state_and_events() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    let pause = api::PauseRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    h.service.pause(&ctx(), pause).await.unwrap();
    assert!(h.guest.called("pause t1 true"));
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::PAUSED
    );
    let _: TaskPaused = h.events.nth(topics::TASK_PAUSED_EVENT_TOPIC, 1).await;
    let resume = api::ResumeRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    h.service.resume(&ctx(), resume).await.unwrap();
    assert!(h.guest.called("pause t1 false"));
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::RUNNING
    );
    let _: TaskResumed = h.events.nth(topics::TASK_RESUMED_EVENT_TOPIC, 1).await;
}

#[tokio::test]
async fn a_refused_pause_leaves_the_task_running_without_an_event() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.guest.fail_next("pause");
    let pause = api::PauseRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    assert_eq!(
        code_of(h.service.pause(&ctx(), pause).await.unwrap_err()).0,
        Code::UNKNOWN
    );
    assert_eq!(
        status_of(&h.state("t1", "").await.unwrap()),
        TaskStatus::RUNNING
    );
    assert!(h
        .events
        .on::<TaskPaused>(topics::TASK_PAUSED_EVENT_TOPIC)
        .is_empty());
}

#[tokio::test]
async fn pids_are_the_guests() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::PidsRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    let pids = h.service.pids(&ctx(), request).await.unwrap();
    let pids: Vec<u32> = pids.processes.iter().map(|p| p.pid).collect();
    assert_eq!(pids, [1, 7, 9]);
}

#[tokio::test]
async fn stats_are_the_guests_counters_as_cgroups_v2_metrics() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::StatsRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    let stats = h.service.stats(&ctx(), request).await.unwrap();
    assert_eq!(stats.stats.type_url, metrics::METRICS_V2_TYPE_URL);
    let expected = StatsResponse {
        pids: MessageField::some(PidsStats {
            current: 3,
            limit: 64,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(stats.stats.value, metrics::encode_v2(&expected));
    assert!(h.guest.called("stats t1"));
}

#[tokio::test]
async fn resize_clamps_the_window_and_names_the_process() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::ResizePtyRequest {
        id: "t1".to_owned(),
        exec_id: "e1".to_owned(),
        width: 80,
        height: 100_000,
        ..Default::default()
    };
    h.service.resize_pty(&ctx(), request).await.unwrap();
    assert!(
        h.guest.called("resize t1 \"e1\" 65535x80"),
        "{:?}",
        h.guest.calls()
    );
}

#[tokio::test]
async fn update_sends_the_resources_and_refuses_none() {
    let h = harness();
    h.create("t1").await.unwrap();
    let empty = api::UpdateTaskRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    assert_eq!(
        code_of(h.service.update(&ctx(), empty).await.unwrap_err()).0,
        Code::INVALID_ARGUMENT
    );
    let request = api::UpdateTaskRequest {
        id: "t1".to_owned(),
        resources: MessageField::some(Any {
            value: br#"{"cpu":{}}"#.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    h.service.update(&ctx(), request).await.unwrap();
    assert!(h.guest.called(r#"update t1 {"cpu":{}}"#));
}

#[tokio::test]
async fn a_pods_container_joins_its_sandboxs_vm_and_leaves_it_running() {
    let h = harness();
    let sandbox = [(pod::SANDBOX_ID, "s1"), (pod::CONTAINER_TYPE, "sandbox")];
    h.create_with("s1", &sandbox).await.unwrap();
    let member = [(pod::SANDBOX_ID, "s1"), (pod::CONTAINER_TYPE, "container")];
    let created = h.create_with("c1", &member).await.unwrap();
    assert_eq!(created.pid, VMM_PID);
    // Only the sandbox booted, with slots for the pod's containers.
    assert_eq!(*h.launcher.boots.lock().unwrap(), ["s1 slots=8"]);
    assert!(h.guest.called("create_in_pod c1"));
    h.delete("c1", "").await.unwrap();
    assert!(h.guest.called("remove_from_pod c1"));
    assert!(!h.guest.called("shutdown"));
    assert_eq!(
        status_of(&h.state("s1", "").await.unwrap()),
        TaskStatus::CREATED
    );
}

#[tokio::test]
async fn a_pods_container_without_its_sandbox_is_failed_precondition() {
    let h = harness();
    let member = [(pod::SANDBOX_ID, "s1"), (pod::CONTAINER_TYPE, "container")];
    let (code, message) = code_of(h.create_with("c1", &member).await.unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(message.contains("sandbox s1 is not running"), "{message}");
    assert!(!h.guest.called("create_in_pod"));
}

#[tokio::test]
async fn shutdown_with_a_task_left_keeps_the_shim() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.service
        .shutdown(&ctx(), api::ShutdownRequest::default())
        .await
        .unwrap();
    // A signalled ExitSignal's wait is ready at its first poll.
    let mut waiting = Box::pin(h.exit.wait());
    assert!(
        !is_ready_now(waiting.as_mut()).await,
        "the shim was told to exit with a task left"
    );
}

#[tokio::test]
async fn a_process_the_vm_took_down_exits_with_the_vms_code() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.guest.lose("t1", ExecId::Init, 137, "the VMM was killed");
    let exit: TaskExit = h.events.nth(topics::TASK_EXIT_EVENT_TOPIC, 1).await;
    assert_eq!((exit.id.as_str(), exit.exit_status), ("t1", 137));
    assert_eq!(h.wait("t1", "").await.unwrap().exit_status, 137);
}

#[tokio::test]
async fn a_negative_exit_code_is_reported_as_unknown() {
    let h = harness();
    h.create("t1").await.unwrap();
    h.start("t1", "").await.unwrap();
    h.guest.exit("t1", ExecId::Init, -1, false);
    let waited = h.wait("t1", "").await.unwrap();
    assert_eq!(waited.exit_status, crate::vm::EXIT_UNKNOWN);
}

#[tokio::test]
async fn connect_reports_the_shim_and_the_tasks_vmm() {
    let h = harness();
    h.create("t1").await.unwrap();
    let request = api::ConnectRequest {
        id: "t1".to_owned(),
        ..Default::default()
    };
    let connected = h.service.connect(&ctx(), request).await.unwrap();
    assert_eq!(connected.shim_pid, std::process::id());
    assert_eq!(connected.task_pid, VMM_PID);
    let unknown = api::ConnectRequest {
        id: "nope".to_owned(),
        ..Default::default()
    };
    assert_eq!(
        h.service.connect(&ctx(), unknown).await.unwrap().task_pid,
        0
    );
}

#[tokio::test]
async fn an_rvm_annotation_in_a_tasks_spec_never_reaches_the_agent() {
    let h = harness();
    let unconfined = (rvm_protocol::annotations::SECCOMP, "unconfined");
    h.create_with("t1", &[unconfined]).await.unwrap();
    let sandbox = [
        (pod::SANDBOX_ID, "s1"),
        (pod::CONTAINER_TYPE, "sandbox"),
        unconfined,
    ];
    h.create_with("s1", &sandbox).await.unwrap();
    assert_eq!(*h.launcher.seccomp.lock().unwrap(), [None, None]);
    let member = [
        (pod::SANDBOX_ID, "s1"),
        (pod::CONTAINER_TYPE, "container"),
        unconfined,
    ];
    h.create_with("c1", &member).await.unwrap();
    assert!(h.guest.called("create_in_pod c1 seccomp=None"));
}

#[tokio::test]
async fn a_spec_without_a_profile_runs_unconfined_only_when_the_shim_is_configured_so() {
    let h = harness_with(Ok(Unprofiled::Unconfined));
    h.create_with(
        "s1",
        &[(pod::SANDBOX_ID, "s1"), (pod::CONTAINER_TYPE, "sandbox")],
    )
    .await
    .unwrap();
    assert_eq!(
        *h.launcher.seccomp.lock().unwrap(),
        [Some("unconfined".to_owned())]
    );
    h.create_with(
        "c1",
        &[(pod::SANDBOX_ID, "s1"), (pod::CONTAINER_TYPE, "container")],
    )
    .await
    .unwrap();
    assert!(h
        .guest
        .called(r#"create_in_pod c1 seccomp=Some("unconfined")"#));
}

#[tokio::test]
async fn a_bad_seccomp_configuration_fails_create_naming_it_without_booting() {
    let h = harness_with(Unprofiled::parse(Some("off")));
    let (code, message) = code_of(h.create("t1").await.unwrap_err());
    assert_eq!(code, Code::FAILED_PRECONDITION);
    assert!(
        message.contains("RVM_SECCOMP_DEFAULT") && message.contains("off"),
        "{message}"
    );
    assert!(h.launcher.boots.lock().unwrap().is_empty());
}
