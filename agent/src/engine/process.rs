//! A process the engine started (a container's init or an exec): its pid, stdio, exit record and
//! whether it could execute its command.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::command::ExecFailure;
use super::stdio::ProcessStdio;
use crate::reaper::ExitStatus;

/// How a process ended, as WaitProcess reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    pub status: ExitStatus,
    pub oom_killed: bool,
    pub exited_at_unix_nanos: i64,
}

impl ExitRecord {
    pub fn now(status: ExitStatus, oom_killed: bool) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self {
            status,
            oom_killed,
            exited_at_unix_nanos: nanos,
        }
    }
}

#[derive(Debug)]
pub struct Process {
    pub exec_id: String,
    pub pid: i32,
    pub stdio: ProcessStdio,
    exit: watch::Sender<Option<ExitRecord>>,
    exec_failure: Mutex<Option<ExecFailure>>,
    waited: AtomicBool,
}

impl Process {
    pub fn new(exec_id: String, pid: i32, stdio: ProcessStdio) -> Self {
        Self {
            exec_id,
            pid,
            stdio,
            exit: watch::channel(None).0,
            exec_failure: Mutex::new(None),
            waited: AtomicBool::new(false),
        }
    }

    pub fn set_exited(&self, record: ExitRecord) {
        self.exit.send_replace(Some(record));
    }

    pub fn exit_record(&self) -> Option<ExitRecord> {
        *self.exit.borrow()
    }

    pub fn has_exited(&self) -> bool {
        self.exit_record().is_some()
    }

    /// Waits for the exit and remembers that the host has been told.
    pub async fn wait(&self) -> ExitRecord {
        let mut receiver = self.exit.subscribe();
        let record = loop {
            if let Some(record) = *receiver.borrow_and_update() {
                break record;
            }
            if receiver.changed().await.is_err() {
                // The sender lives as long as self; unreachable in practice.
                break ExitRecord::now(ExitStatus::Exited(255), false);
            }
        };
        self.waited.store(true, Ordering::SeqCst);
        record
    }

    /// Exited, its exit reported, and its output read to the end.
    pub fn done(&self) -> bool {
        self.has_exited() && self.waited.load(Ordering::SeqCst) && self.stdio.finished()
    }

    pub fn set_exec_failure(&self, failure: ExecFailure) {
        *self
            .exec_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(failure);
    }

    pub fn exec_failure(&self) -> Option<ExecFailure> {
        self.exec_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
