//! The `rvm-vmm` process of one VM: started from its [`VmmCommand`], owned by a watcher task
//! that reaps it and publishes how it ended ([`VmEnd`]), so that every front end gives a lost VM
//! the same meaning: 128 + the signal when the VMM was killed (137 for `kill -9`), 255 when it
//! exited on its own while a process still ran in it.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{pidfd_send_signal, waitid, Signal, WaitId, WaitIdOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{watch, Notify};

use crate::jail::spawn::Spawned;
use crate::jail::{JailInfo, VmmJail};
use crate::sandbox::state::UNKNOWN_EXIT;
use crate::sandbox::vmm::{SpawnError, VmmCommand};

/// How long a killed VMM may take to be reaped before the caller goes on regardless.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// How the VMM ended: the exit code to report for the processes it took down, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEnd {
    /// 128 + signal, or [`UNKNOWN_EXIT`].
    pub code: i32,
    /// What happened, with the last lines of the VMM's log and the guest's console.
    pub reason: String,
}

/// The running VMM, as seen by its owner.
#[derive(Debug)]
pub(super) struct VmmProcess {
    pid: u32,
    jail: JailInfo,
    ended: watch::Receiver<Option<VmEnd>>,
    kill: Arc<Notify>,
}

impl VmmProcess {
    /// Starts the VMM in `jail` with its output to `log` and hands it to a watcher task, which
    /// reaps it, then removes what the jail left on the host (its cgroup, its ID lease).
    pub(super) fn start(
        command: &VmmCommand,
        log: PathBuf,
        jail: VmmJail,
    ) -> Result<Self, SpawnError> {
        let spawned = command.spawn(&log, &jail)?;
        let pid = spawned.pid;
        let info = jail.info();
        tracing::info!(pid, uid = info.uid, root = %info.root.display(), seccomp = %info.seccomp,
            cgroup = ?info.cgroup, limits = ?info.limits, "VMM started in its jail");
        let (ended_tx, ended) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let console = command.console_log.clone();
        let kill_requested = kill.clone();
        let child = Reaper::new(spawned).map_err(|source| SpawnError::Watch { pid, source })?;
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                () = kill_requested.notified() => {
                    child.kill();
                    child.wait().await
                }
            };
            drop(jail);
            tracing::info!(?status, "VMM ended");
            let (code, reason) = vm_ended(status.ok());
            let reason = format!(
                "{reason}; VMM log: {}; console: {}",
                tail(&log),
                tail(&console)
            );
            let _ = ended_tx.send(Some(VmEnd { code, reason }));
        });
        Ok(Self {
            pid,
            jail: info,
            ended,
            kill,
        })
    }

    /// The VMM's jail.
    pub(super) fn jail(&self) -> &JailInfo {
        &self.jail
    }

    /// The host pid of `rvm-vmm`.
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// How the VMM ended, if it has.
    pub(super) fn end(&self) -> Option<VmEnd> {
        self.ended.borrow().clone()
    }

    /// Waits until the VMM has ended; says how.
    pub(super) async fn ended(&self) -> VmEnd {
        let mut ended = self.ended.clone();
        loop {
            if let Some(end) = ended.borrow_and_update().clone() {
                return end;
            }
            if ended.changed().await.is_err() {
                return VmEnd {
                    code: UNKNOWN_EXIT,
                    reason: "the VMM's watcher is gone".to_owned(),
                };
            }
        }
    }

    /// Waits up to `grace` for the VMM to end by itself, then kills it.
    pub(super) async fn stop(&self, grace: Duration) {
        if tokio::time::timeout(grace, self.ended()).await.is_ok() {
            return;
        }
        tracing::warn!(?grace, "the VMM did not end in time; killing it");
        self.kill().await;
    }

    /// Kills the VMM and waits (briefly) until it is reaped.
    pub(super) async fn kill(&self) {
        self.kill.notify_one();
        let _ = tokio::time::timeout(REAP_TIMEOUT, self.ended()).await;
    }
}

/// The VMM's process, waited for through its pidfd; killed if dropped before it was reaped
/// (the owner's runtime shutting down), as `kill_on_drop` would.
struct Reaper {
    pidfd: AsyncFd<OwnedFd>,
    reaped: AtomicBool,
}

impl Reaper {
    /// Watches `spawned`; kills it when it cannot be watched.
    fn new(spawned: Spawned) -> std::io::Result<Self> {
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
        // the AsyncFd's whole life, and an OwnedFd's as_raw_fd always returns it.
        let registered =
            unsafe { AsyncFd::register_with_interest(spawned.pidfd, Interest::READABLE) };
        match registered {
            Ok(pidfd) => Ok(Self {
                pidfd,
                reaped: AtomicBool::new(false),
            }),
            Err(failed) => {
                let (pidfd, error) = failed.into_parts();
                let _ = pidfd_send_signal(&pidfd, Signal::KILL);
                Err(error)
            }
        }
    }

    /// Waits until the process has ended and reaps it.
    async fn wait(&self) -> std::io::Result<ExitStatus> {
        loop {
            let mut ready = self.pidfd.readable().await?;
            match waitid(
                WaitId::PidFd(self.pidfd.get_ref().as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(status)) => {
                    self.reaped.store(true, Ordering::Release);
                    return Ok(exit_status(&status));
                }
                Ok(None) => ready.clear_ready(),
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    fn kill(&self) {
        if let Err(err) = pidfd_send_signal(self.pidfd.get_ref(), Signal::KILL) {
            tracing::warn!(%err, "cannot kill the VMM");
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::Acquire) {
            self.kill();
        }
    }
}

/// The wait status `waitid` reported, as the standard library's type.
fn exit_status(status: &rustix::process::WaitIdStatus) -> ExitStatus {
    let raw = match (status.exit_status(), status.terminating_signal()) {
        (_, Some(signal)) => signal,
        (Some(code), None) => (code & 0xff) << 8,
        (None, None) => 0xff << 8,
    };
    ExitStatus::from_raw(raw)
}

/// The exit code and reason when the VMM ended while a process ran in its guest.
pub fn vm_ended(status: Option<ExitStatus>) -> (i32, String) {
    let Some(status) = status else {
        return (UNKNOWN_EXIT, "the VM ended unexpectedly".to_owned());
    };
    match (status.code(), status.signal()) {
        (_, Some(signal)) => (
            128 + signal,
            format!("the VM ended unexpectedly: rvm-vmm was killed by signal {signal}"),
        ),
        (Some(code), _) => (
            UNKNOWN_EXIT,
            format!("the VM ended unexpectedly: rvm-vmm exited with status {code}"),
        ),
        _ => (UNKNOWN_EXIT, "the VM ended unexpectedly".to_owned()),
    }
}

/// The last lines of a diagnostic file, on one line, for error messages.
pub fn tail(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    match lines[start..].join(" | ") {
        empty if empty.is_empty() => "(empty)".to_owned(),
        joined => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_vmm_means_128_plus_the_signal_and_an_exit_means_unknown() {
        assert_eq!(vm_ended(Some(ExitStatus::from_raw(9))).0, 137);
        assert_eq!(vm_ended(Some(ExitStatus::from_raw(15))).0, 143);
        let (code, reason) = vm_ended(Some(ExitStatus::from_raw(1 << 8)));
        assert_eq!(code, UNKNOWN_EXIT);
        assert!(reason.contains("exited with status 1"), "{reason}");
        assert_eq!(vm_ended(None).0, UNKNOWN_EXIT);
    }

    #[test]
    fn tail_keeps_the_last_three_non_empty_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\n\nb\nc\n \nd\n").unwrap();
        assert_eq!(tail(&path), "b | c | d");
        assert_eq!(tail(&dir.path().join("missing")), "(empty)");
    }
}
