//! What the agent hands a helper process (its configuration file, its fds) and the messages the
//! helper sends back on its status pipe, one JSON object per line.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use oci_spec::runtime::{Process, Spec};
use serde::{Deserialize, Serialize};

use super::command::ExecFailure;
use super::device_nodes::DeviceNode;
use super::seccomp::SeccompPolicy;

/// The argument that turns `rvm-agent` into a helper: `rvm-agent __rvm-helper init|exec CONFIG`.
pub const HELPER_ARG: &str = "__rvm-helper";
/// The helper's status pipe (write end).
pub const STATUS_FD: i32 = 3;
/// The container init helper's start pipe (read end): one byte means "exec now".
pub const START_FD: i32 = 4;

/// A container's first process: builds the container's view, then waits for start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    /// The prepared rootfs (the overlay mount) in the agent's namespace.
    pub rootfs: PathBuf,
    pub spec: Spec,
    pub terminal: bool,
    pub seccomp: SeccompPolicy,
    /// Device nodes made in the container beyond the standard ones (`--device`, and the
    /// guest's for `--privileged`).
    #[serde(default)]
    pub devices: Vec<DeviceNode>,
    /// Namespaces to join before anything else (`/proc/PID/ns/NAME` of the pod's sandbox), by
    /// name ("ipc", "uts"); the helper was cloned without new ones of these kinds. A shared pid
    /// namespace is not here: the helper was created in it.
    #[serde(default)]
    pub join: Vec<(String, PathBuf)>,
}

/// A process started in a running container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The container's init process (whose namespaces are joined).
    pub init_pid: i32,
    /// The container's cgroup directory.
    pub cgroup: PathBuf,
    pub process: Process,
    pub terminal: bool,
    pub seccomp: SeccompPolicy,
}

/// A line on the status pipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HelperMessage {
    /// The container is set up and waits for the start byte.
    Ready,
    /// Setting the process up failed; the helper exits.
    SetupFailed { message: String },
    /// The command could not be executed; the process exits with `failure.status`.
    ExecFailed { failure: ExecFailure },
    /// (exec helper) the process runs as `pid` (in the agent's pid namespace) and has executed its
    /// command or reported an ExecFailed before this.
    Started { pid: i32 },
    /// (exec helper) the process ended with this raw wait status.
    Exited { raw_status: i32 },
}

/// Writes one message (a line) to `out`.
pub fn send(out: &mut impl Write, message: &HelperMessage) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Reads the next message; `None` at end of file (the writer exec'd or exited).
pub fn receive(input: &mut impl BufRead) -> io::Result<Option<HelperMessage>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad helper message {line:?}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_lines() {
        let mut buffer = Vec::new();
        let messages = [
            HelperMessage::Ready,
            HelperMessage::ExecFailed {
                failure: ExecFailure {
                    status: 127,
                    message: "exec: \"x\": not found".into(),
                },
            },
            HelperMessage::Exited { raw_status: 256 },
        ];
        for m in &messages {
            send(&mut buffer, m).unwrap();
        }
        let mut reader = io::BufReader::new(&buffer[..]);
        for m in &messages {
            assert_eq!(receive(&mut reader).unwrap().as_ref(), Some(m));
        }
        assert_eq!(receive(&mut reader).unwrap(), None);
    }
}
