//! A process's stdio through containerd's FIFOs: opening them (which waits for containerd's
//! end) and handing them to the runtime's copy loops (`rvm_runtime::vm::stdio`): the agent's
//! output streams into the stdout/stderr FIFOs, the stdin FIFO into the process's stdin.

use std::fs::OpenOptions;
use std::path::PathBuf;

use rvm_runtime::sandbox::agent::AgentSession;
use rvm_runtime::sandbox::log::Stream;
use rvm_runtime::vm::stdio::{copy_input, copy_output, Discard, Writer};
use tokio::task::JoinHandle;

/// The FIFO paths containerd gave for a process; empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Opens a FIFO in a blocking thread: opening waits for the other end, which containerd opens
/// on its own schedule.
async fn open_fifo(path: PathBuf, write: bool) -> Option<tokio::fs::File> {
    let shown = path.display().to_string();
    let opened = tokio::task::spawn_blocking(move || {
        OpenOptions::new().read(!write).write(write).open(&path)
    })
    .await;
    match opened {
        Ok(Ok(file)) => Some(tokio::fs::File::from_std(file)),
        Ok(Err(err)) => {
            tracing::warn!(fifo = %shown, %err, "cannot open stdio FIFO");
            None
        }
        Err(err) => {
            tracing::warn!(fifo = %shown, %err, "stdio FIFO opener failed");
            None
        }
    }
}

/// Copies one output stream of the process to the FIFO at `path` until the stream ends.
/// Without a path (or a FIFO that cannot be opened) the output is still read, and dropped.
async fn pump_output(
    session: AgentSession,
    container: String,
    exec: String,
    stream: Stream,
    path: String,
) {
    let fifo = if path.is_empty() {
        None
    } else {
        open_fifo(PathBuf::from(&path), true).await
    };
    match fifo {
        Some(file) => copy_output(session, container, exec, stream, Writer(file)).await,
        None => copy_output(session, container, exec, stream, Discard).await,
    }
}

/// Copies the stdin FIFO to the process; its end closes the process's stdin.
async fn pump_input(session: AgentSession, container: String, exec: String, path: String) {
    match open_fifo(PathBuf::from(&path), false).await {
        Some(fifo) => copy_input(session, container, exec, fifo).await,
        None => {
            let _ = session.close_stdin(&container, &exec).await;
        }
    }
}

/// Starts the copies of a started process; the returned tasks end with the output streams.
pub fn start(
    session: &AgentSession,
    container: &str,
    exec: &str,
    paths: &StdioPaths,
) -> Vec<JoinHandle<()>> {
    if !paths.stdin.is_empty() {
        tokio::spawn(pump_input(
            session.clone(),
            container.to_owned(),
            exec.to_owned(),
            paths.stdin.clone(),
        ));
    }
    [
        (Stream::Stdout, paths.stdout.clone()),
        (Stream::Stderr, paths.stderr.clone()),
    ]
    .into_iter()
    .map(|(stream, path)| {
        tokio::spawn(pump_output(
            session.clone(),
            container.to_owned(),
            exec.to_owned(),
            stream,
            path,
        ))
    })
    .collect()
}
