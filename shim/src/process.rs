//! One process of a task (its init or an exec): which one it is ([`ExecId`]), its stdio, pid
//! and state, and a way to wait for its exit.
//!
//! containerd and the agent both say "the init" with an empty exec id. That convention lives
//! only at the two wires: [`ExecId::of_request`] reads containerd's field once, and
//! [`ExecId::wire`] writes the agent's. An exec id the shim registers has passed
//! [`ExecId::new_exec`], the agent's own rule for exec ids (they become file names in the
//! guest), so a bad one is refused when containerd adds the exec, not later at its start.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use thiserror::Error;
use tokio::sync::watch;

use crate::stdio::StdioPaths;

/// The longest exec id the agent takes.
pub const MAX_EXEC_ID_LEN: usize = 128;

/// Which process of a task a request means.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExecId {
    /// The task's own process.
    Init,
    /// A process added by containerd's Exec call, by its (non-empty) id.
    Exec(String),
}

/// Why an exec id cannot name a new exec.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExecIdError {
    #[error("exec id must not be empty")]
    Empty,
    #[error("exec id {id:?} is {len} bytes long; at most {MAX_EXEC_ID_LEN} are allowed")]
    TooLong { id: String, len: usize },
    #[error("exec id {id:?} may hold only ASCII letters, digits, '-', '_' and '.', and may not be '.' or '..'")]
    Invalid { id: String },
}

impl ExecId {
    /// The process containerd's `exec_id` field means: empty is the init.
    pub fn of_request(exec_id: &str) -> Self {
        if exec_id.is_empty() {
            Self::Init
        } else {
            Self::Exec(exec_id.to_owned())
        }
    }

    /// The id of a new exec, checked as the agent checks it (it names a file in the guest).
    pub fn new_exec(exec_id: &str) -> Result<Self, ExecIdError> {
        if exec_id.is_empty() {
            return Err(ExecIdError::Empty);
        }
        if exec_id.len() > MAX_EXEC_ID_LEN {
            return Err(ExecIdError::TooLong {
                // Cut to keep the error readable; the length says the rest.
                id: exec_id.chars().take(32).collect(),
                len: exec_id.len(),
            });
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if exec_id == "." || exec_id == ".." || !exec_id.chars().all(allowed) {
            return Err(ExecIdError::Invalid {
                id: exec_id.to_owned(),
            });
        }
        Ok(Self::Exec(exec_id.to_owned()))
    }

    /// The id as containerd and the agent spell it: empty for the init.
    pub fn wire(&self) -> &str {
        match self {
            Self::Init => "",
            Self::Exec(id) => id,
        }
    }

    pub fn is_init(&self) -> bool {
        matches!(self, Self::Init)
    }
}

impl fmt::Display for ExecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Init => f.write_str("init"),
            Self::Exec(id) => f.write_str(id),
        }
    }
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Exited { code: u32, at: SystemTime },
}

/// A process of the task.
#[derive(Debug)]
pub struct Process {
    pub exec_id: ExecId,
    pub stdio: StdioPaths,
    /// For an exec: the OCI Process object (JSON) containerd sent.
    pub spec_json: Vec<u8>,
    pid: AtomicU32,
    status: watch::Sender<Status>,
}

impl Process {
    pub fn new(exec_id: ExecId, stdio: StdioPaths, spec_json: Vec<u8>, pid: u32) -> Self {
        Self {
            exec_id,
            stdio,
            spec_json,
            pid: AtomicU32::new(pid),
            status: watch::Sender::new(Status::Created),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    pub fn set_running(&self, pid: u32) {
        self.pid.store(pid, Ordering::SeqCst);
        self.status.send_replace(Status::Running);
    }

    /// Records the exit; returns the time recorded (the first exit wins).
    pub fn set_exited(&self, code: u32) -> SystemTime {
        let mut at = SystemTime::now();
        self.status.send_modify(|status| match status {
            Status::Exited { at: first, .. } => at = *first,
            other => *other = Status::Exited { code, at },
        });
        at
    }

    /// Waits for the exit: the code and when.
    pub async fn wait(&self) -> (u32, SystemTime) {
        let mut receiver = self.status.subscribe();
        loop {
            if let Status::Exited { code, at } = *receiver.borrow_and_update() {
                return (code, at);
            }
            if receiver.changed().await.is_err() {
                return (crate::vm::EXIT_UNKNOWN, SystemTime::now());
            }
        }
    }
}

/// `time` as a protobuf timestamp.
pub fn timestamp(time: SystemTime) -> Timestamp {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_the_first_exit() {
        let process =
            std::sync::Arc::new(Process::new(ExecId::Init, StdioPaths::default(), vec![], 7));
        let waiter = tokio::spawn({
            let process = process.clone();
            async move { process.wait().await }
        });
        process.set_running(9);
        assert_eq!(process.pid(), 9);
        let at = process.set_exited(3);
        process.set_exited(5);
        assert_eq!(waiter.await.unwrap(), (3, at));
        assert_eq!(process.status(), Status::Exited { code: 3, at });
    }

    #[test]
    fn an_empty_request_id_is_the_init_and_goes_back_empty() {
        let init = ExecId::of_request("");
        assert_eq!(init, ExecId::Init);
        assert_eq!(init.wire(), "");
        let exec = ExecId::of_request("e1");
        assert_eq!(exec, ExecId::Exec("e1".to_owned()));
        assert_eq!(exec.wire(), "e1");
    }

    #[test]
    fn new_exec_ids_follow_the_agents_rule() {
        assert_eq!(ExecId::new_exec(""), Err(ExecIdError::Empty));
        for bad in [".", "..", "a/b", "a\0b", "sp ace", "é"] {
            assert!(
                matches!(ExecId::new_exec(bad), Err(ExecIdError::Invalid { .. })),
                "{bad:?} was accepted"
            );
        }
        let long = "x".repeat(MAX_EXEC_ID_LEN + 1);
        assert!(matches!(
            ExecId::new_exec(&long),
            Err(ExecIdError::TooLong { len, .. }) if len == MAX_EXEC_ID_LEN + 1
        ));
        let longest = "x".repeat(MAX_EXEC_ID_LEN);
        assert_eq!(
            ExecId::new_exec(&longest),
            Ok(ExecId::Exec(longest.clone()))
        );
        assert!(ExecId::new_exec("exec-1_a.b").is_ok());
    }
}
