//! A process's stdio through the agent, the one copy loop every front end uses: output read
//! from the agent (ReadStdout/ReadStderr long polls) goes into an [`OutputSink`] (the monitor's
//! log and attached client, the shim's FIFOs, `rvm exec`'s terminal); a reader's bytes go to
//! WriteStdin and its end becomes CloseStdin.
//!
//! A sink that fails stops receiving, but the stream is still read to its end: the agent holds
//! output the host has not read, and a process whose output nobody reads would block on a full
//! pipe in the guest.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::sandbox::agent::AgentSession;
use crate::sandbox::log::Stream;

/// Read size for a process's stdin.
const STDIN_CHUNK: usize = 64 << 10;

/// Where one output stream of a process goes.
pub trait OutputSink: Send + 'static {
    /// Takes the stream's next bytes; an error means the sink is gone and gets no more.
    fn write(&mut self, data: Vec<u8>) -> impl Future<Output = io::Result<()>> + Send;

    /// The stream has ended.
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A sink that writes (and flushes) into an async writer: a FIFO, a terminal.
#[derive(Debug)]
pub struct Writer<W>(pub W);

impl<W: AsyncWrite + Unpin + Send + 'static> OutputSink for Writer<W> {
    async fn write(&mut self, data: Vec<u8>) -> io::Result<()> {
        self.0.write_all(&data).await?;
        self.0.flush().await
    }

    async fn finish(&mut self) {
        let _ = self.0.flush().await;
    }
}

/// A sink that drops everything: the stream is read only so that the process never blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl OutputSink for Discard {
    async fn write(&mut self, _data: Vec<u8>) -> io::Result<()> {
        Ok(())
    }
}

/// Copies one output stream of process `exec` (`""`: the init) of `container` into `sink`
/// until the stream ends.
pub async fn copy_output(
    session: AgentSession,
    container: String,
    exec: String,
    stream: Stream,
    mut sink: impl OutputSink,
) {
    let mut open = true;
    loop {
        match session.read(stream, &container, &exec).await {
            Ok(Some(data)) => {
                if open {
                    if let Err(err) = sink.write(data).await {
                        tracing::warn!(?stream, %err, "the output's reader is gone; output dropped");
                        open = false;
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
    if open {
        sink.finish().await;
    }
}

/// [`copy_output`] in a task of its own.
pub fn spawn_output(
    session: &AgentSession,
    container: &str,
    exec: &str,
    stream: Stream,
    sink: impl OutputSink,
) -> JoinHandle<()> {
    tokio::spawn(copy_output(
        session.clone(),
        container.to_owned(),
        exec.to_owned(),
        stream,
        sink,
    ))
}

/// Copies `input` to the process's stdin until it ends, then closes the process's stdin.
pub async fn copy_input(
    session: AgentSession,
    container: String,
    exec: String,
    mut input: impl AsyncRead + Unpin,
) {
    let mut buffer = vec![0u8; STDIN_CHUNK];
    loop {
        match input.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => {
                if let Err(err) = session.write_stdin(&container, &exec, &buffer[..n]).await {
                    tracing::warn!(%err, "cannot write the process's stdin");
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot read the process's input");
                break;
            }
        }
    }
    if let Err(err) = session.close_stdin(&container, &exec).await {
        tracing::debug!(%err, "CloseStdin failed (the process may have exited)");
    }
}
