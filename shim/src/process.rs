//! One process of a task (its init or an exec): its stdio, pid and state, and a way to wait
//! for its exit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use tokio::sync::watch;

use crate::stdio::StdioPaths;

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
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// For an exec: the OCI Process object (JSON) containerd sent.
    pub spec_json: Vec<u8>,
    pid: AtomicU32,
    status: watch::Sender<Status>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioPaths, spec_json: Vec<u8>, pid: u32) -> Self {
        Self {
            exec_id: exec_id.to_owned(),
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
        let process = std::sync::Arc::new(Process::new("", StdioPaths::default(), vec![], 7));
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
}
