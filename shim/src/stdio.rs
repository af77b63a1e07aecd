//! A process's stdio through containerd's FIFOs: output read from the agent (ReadStdout,
//! ReadStderr) is written to the stdout/stderr FIFOs, the stdin FIFO is copied to WriteStdin and
//! its end becomes CloseStdin.

use std::fs::OpenOptions;
use std::path::PathBuf;

use rvm_runtime::sandbox::agent::AgentSession;
use rvm_runtime::sandbox::log::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Copies one output stream of the process to `path` until the stream ends. Without a path
/// the output is still read (and dropped) so that the process never blocks on a full pipe.
async fn pump_output(
    session: AgentSession,
    container: String,
    exec: String,
    stream: Stream,
    path: String,
) {
    let mut fifo = if path.is_empty() {
        None
    } else {
        open_fifo(PathBuf::from(&path), true).await
    };
    loop {
        match session.read(stream, &container, &exec).await {
            Ok(Some(data)) => {
                if let Some(file) = fifo.as_mut() {
                    if let Err(err) = file.write_all(&data).await {
                        tracing::warn!(fifo = %path, %err, "stdio FIFO closed; output dropped");
                        fifo = None;
                    }
                }
            }
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(?stream, %err, "output stream ended with an error");
                break;
            }
        }
    }
    if let Some(mut file) = fifo {
        let _ = file.flush().await;
    }
}

/// Copies the stdin FIFO to the process; its end closes the process's stdin.
async fn pump_input(session: AgentSession, container: String, exec: String, path: String) {
    let Some(mut fifo) = open_fifo(PathBuf::from(&path), false).await else {
        let _ = session.close_stdin(&container, &exec).await;
        return;
    };
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        match fifo.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => {
                if let Err(err) = session.write_stdin(&container, &exec, &buffer[..n]).await {
                    tracing::warn!(%err, "cannot write the process's stdin");
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(fifo = %path, %err, "cannot read the stdin FIFO");
                break;
            }
        }
    }
    if let Err(err) = session.close_stdin(&container, &exec).await {
        tracing::debug!(%err, "CloseStdin failed (the process may have exited)");
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
