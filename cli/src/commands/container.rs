//! What several commands share: opening the container store, resolving a name or ID, starting a
//! container's monitor and waiting for it, reaching a running container's agent, signal names.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rvm_runtime::host::private;
use rvm_runtime::sandbox::agent::AgentSession;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::{Container, Containers, Ended, Lifecycle, Status};
use rvm_runtime::vm;

/// How long a monitor may take to clean up after its container exited.
pub const MONITOR_EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens the container store of `layout`.
pub fn open(layout: &Layout) -> Result<Containers> {
    Containers::open(layout).context("cannot open the container store")
}

/// Loads the container named `reference` (name, ID or unique ID prefix).
pub fn find(containers: &Containers, reference: &str) -> Result<Container> {
    let id = containers.find(reference)?;
    Ok(containers.load(&id)?)
}

/// Starts the monitor of container `id`, detached, its earlier run's state cleared; with `attach`, that socket becomes the
/// monitor's stdin for `rvm run`'s stdio relay.
pub fn spawn_monitor(containers: &Containers, id: &str, attach: Option<UnixStream>) -> Result<()> {
    let layout = containers.layout();
    let exe = std::env::current_exe().context("cannot find the rvm binary to start a monitor")?;
    let log_path = layout.monitor_log_path(id);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(private::FILE_MODE)
        .open(&log_path)
        .and_then(|log| private::restrict(&log_path, private::FILE_MODE).map(|()| log))
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut command = Command::new(&exe);
    if *layout != Layout::new(None) {
        command.arg("--root").arg(layout.root());
    }
    command.args(["container-monitor", id]);
    match attach {
        Some(stream) => {
            command
                .arg("--attach")
                .stdin(Stdio::from(OwnedFd::from(stream)));
        }
        None => {
            command.stdin(Stdio::null());
        }
    }
    command.stdout(Stdio::null()).stderr(Stdio::from(log));
    // Held until the monitor's pid is recorded: a monitor dying at once is noticed, and an
    // earlier run's exit is cleared so that no waiter mistakes it for this run's.
    let launch = containers.launch(id)?;
    let child = command
        .spawn()
        .with_context(|| format!("cannot start the monitor {}", exe.display()))?;
    launch.record_monitor(child.id())?;
    Ok(())
}

/// How a start attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    Running,
    /// Never ran: the exit code Docker gives (125, 126, 127) and why.
    Failed {
        code: i32,
        message: String,
    },
    /// Ran and already exited.
    Exited {
        code: i32,
    },
}

/// Waits until the monitor reports the container running, failed or exited.
pub fn wait_started(containers: &Containers, id: &str) -> Result<Started> {
    let timeout = vm::agent_timeout() + Duration::from_secs(30);
    let started =
        containers.wait_until(id, Some(timeout), |found| match &found?.state.lifecycle {
            Lifecycle::Running | Lifecycle::Paused => Some(Started::Running),
            Lifecycle::Exited(Ended {
                code, error: None, ..
            }) => Some(Started::Exited { code: *code }),
            Lifecycle::Created {
                failed: Some(ended),
            }
            | Lifecycle::Exited(ended) => Some(Started::Failed {
                code: ended.code,
                message: ended.error.clone().unwrap_or_default(),
            }),
            Lifecycle::Created { failed: None } => None,
        })?;
    started.with_context(|| format!("container {id} did not start within {timeout:?}"))
}

/// Waits until no monitor runs for the container (or the container is gone); returns whether
/// that happened within `timeout`.
pub fn wait_monitor_gone(containers: &Containers, id: &str, timeout: Duration) -> Result<bool> {
    let gone = containers.wait_until(id, Some(timeout), |found| match found {
        None => Some(()),
        Some(container) => (!container.state.monitor_alive()).then_some(()),
    })?;
    Ok(gone.is_some())
}

/// Waits until the container is no longer running; returns whether it stopped in time.
pub fn wait_stopped(containers: &Containers, id: &str, timeout: Duration) -> Result<bool> {
    let stopped = containers.wait_until(id, Some(timeout), |found| match found {
        None => Some(()),
        Some(container) => (container.state.status() != Status::Running).then_some(()),
    })?;
    Ok(stopped.is_some())
}

/// Connects to the agent of a running container.
pub async fn connect(containers: &Containers, id: &str) -> Result<AgentSession> {
    let path = containers.layout().vsock_path(id);
    AgentSession::connect(&path, Duration::from_secs(10), || None)
        .await
        .with_context(|| format!("cannot reach the agent of container {id}"))
}

const SIGNALS: &[(&str, u32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// Parses a signal as Docker does: `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(number) = text.parse::<u32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
        bail!("invalid signal: {text}");
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
        .with_context(|| format!("invalid signal: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert_eq!(parse_signal("2").unwrap(), 2);
        for bad in ["0", "65", "SIGNOPE", ""] {
            let error = parse_signal(bad).unwrap_err().to_string();
            assert!(error.contains("invalid signal"), "{error}");
        }
    }
}
