//! Host processes a container depends on (its monitor and its VMM): identified by pid and start
//! time, so that a recycled pid is never mistaken for them, and signalled only while they live.

use std::fs;

use rustix::process::{kill_process, test_kill_process, Pid, Signal};
use serde::{Deserialize, Serialize};

/// A process as recorded in the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
    pub start_time: u64,
}

impl ProcessId {
    /// Identifies the running process `pid`; `None` when it is gone.
    pub fn of(pid: u32) -> Option<Self> {
        let (start_time, _) = stat(pid)?;
        Some(Self { pid, start_time })
    }

    /// This process.
    pub fn current() -> Option<Self> {
        Self::of(std::process::id())
    }

    /// Whether the very process recorded still runs (a zombie does not count).
    pub fn is_alive(&self) -> bool {
        let Some(pid) = self.rustix_pid() else {
            return false;
        };
        if test_kill_process(pid).is_err() {
            return false;
        }
        matches!(stat(self.pid), Some((start, state)) if start == self.start_time && state != 'Z' && state != 'X')
    }

    /// Sends `signal` if the process is still the one recorded; returns whether it was sent.
    pub fn signal(&self, signal: Signal) -> bool {
        match self.rustix_pid() {
            Some(pid) if self.is_alive() => kill_process(pid, signal).is_ok(),
            _ => false,
        }
    }

    fn rustix_pid(&self) -> Option<Pid> {
        i32::try_from(self.pid).ok().and_then(Pid::from_raw)
    }
}

/// Start time and state letter of `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u64, char)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), start time is field 22: 18 fields further.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        let recycled = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!recycled.is_alive());
    }

    #[test]
    fn exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId::of(child.id()).unwrap();
        child.wait().unwrap();
        assert!(!id.is_alive());
        assert!(!id.signal(Signal::KILL));
    }
}
