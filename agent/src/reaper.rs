//! The one place that calls `waitpid`: a SIGCHLD-driven reaper that hands each child's exit
//! status to whoever registered for that pid.
//!
//! Every child the agent starts is registered by pid right after it is created. A child that
//! exits before its registration is kept as an unclaimed exit and handed over on registration,
//! so no status is lost and none is stolen. As PID 1 the reaper collects every child (orphans are
//! re-parented to us); in [`ReapMode::Registered`] (tests inside a larger process) it waits only
//! for registered pids and leaves other children alone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How many exits of unregistered pids are remembered (orphans re-parented to PID 1 are never
/// claimed; the oldest are forgotten first).
const MAX_UNCLAIMED: usize = 4096;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The status as a shell and Docker report it: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            Self::Exited(code) => code,
            Self::Signaled(signal) => 128 + signal,
        }
    }

    /// The signal that killed the process, 0 if it exited.
    pub fn signal(self) -> u32 {
        match self {
            Self::Exited(_) => 0,
            Self::Signaled(signal) => u32::try_from(signal).unwrap_or(0),
        }
    }

    /// Decodes a raw `wait` status word.
    pub fn from_raw(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Self::Signaled(libc::WTERMSIG(status))
        } else {
            Self::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// Which children the reaper collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapMode {
    /// Every child (PID 1, or a child subreaper).
    All,
    /// Only registered pids.
    Registered,
}

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<i32, oneshot::Sender<ExitStatus>>,
    unclaimed: HashMap<i32, ExitStatus>,
    unclaimed_order: VecDeque<i32>,
}

/// Dispatches exit statuses of children to their waiters. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reaper {
    mode: ReapMode,
    state: Arc<Mutex<State>>,
}

impl Reaper {
    /// Starts the reaper on the current tokio runtime.
    pub fn start(mode: ReapMode) -> std::io::Result<Self> {
        let reaper = Self {
            mode,
            state: Arc::new(Mutex::new(State::default())),
        };
        let mut sigchld = signal(SignalKind::child())?;
        let task = reaper.clone();
        tokio::spawn(async move {
            loop {
                task.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Registers interest in `pid`'s exit; the receiver gets its status once (at once if the
    /// child has already been reaped).
    pub fn register(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (sender, receiver) = oneshot::channel();
        let mut state = self.lock();
        if let Some(status) = state.unclaimed.remove(&pid) {
            state.unclaimed_order.retain(|p| *p != pid);
            let _ = sender.send(status);
        } else {
            state.waiters.insert(pid, sender);
        }
        drop(state);
        // A registered child may have exited before registration without us reaping it.
        if self.mode == ReapMode::Registered {
            self.reap();
        }
        receiver
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update; the maps stay usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Collects every child that has exited.
    fn reap(&self) {
        match self.mode {
            ReapMode::All => loop {
                match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                    Ok(status) => self.dispatch(status),
                    Err(Errno::EINTR) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "waitpid failed");
                        break;
                    }
                }
            },
            ReapMode::Registered => {
                let pids: Vec<i32> = self.lock().waiters.keys().copied().collect();
                for pid in pids {
                    if let Ok(status) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                        self.dispatch(status);
                    }
                }
            }
        }
    }

    fn dispatch(&self, status: WaitStatus) {
        let (pid, exit) = match status {
            WaitStatus::Exited(pid, code) => (pid.as_raw(), ExitStatus::Exited(code)),
            WaitStatus::Signaled(pid, signal, _) => {
                (pid.as_raw(), ExitStatus::Signaled(signal as i32))
            }
            _ => return,
        };
        tracing::debug!(pid, ?exit, "child reaped");
        let mut state = self.lock();
        if let Some(sender) = state.waiters.remove(&pid) {
            let _ = sender.send(exit);
            return;
        }
        if state.unclaimed_order.len() >= MAX_UNCLAIMED {
            if let Some(oldest) = state.unclaimed_order.pop_front() {
                state.unclaimed.remove(&oldest);
            }
        }
        state.unclaimed.insert(pid, exit);
        state.unclaimed_order.push_back(pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_exit_is_128_plus_signal() {
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(ExitStatus::Signaled(9).signal(), 9);
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Exited(3).signal(), 0);
    }
}
