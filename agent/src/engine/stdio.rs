//! A process's stdio on the agent side: pipes or a pty, output buffered for the host's
//! ReadStdout/ReadStderr long polls, stdin written on WriteStdin.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{openpty, Winsize};
use nix::unistd::pipe2;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// Output kept per stream before the agent stops reading from the process (which then blocks on
/// a full pipe until the host reads).
const MAX_BUFFERED: usize = 8 << 20;
const READ_CHUNK: usize = 64 << 10;

#[derive(Debug, Default)]
struct OutputState {
    data: VecDeque<u8>,
    eof: bool,
}

/// One output stream's buffer.
#[derive(Debug, Default)]
pub struct OutputBuffer {
    state: Mutex<OutputState>,
    readable: Notify,
    drained: Notify,
    eof_delivered: AtomicBool,
}

impl OutputBuffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutputState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A stream that has already ended (stderr of a terminal process).
    pub fn ended() -> Arc<Self> {
        let buffer = Self::default();
        buffer.lock().eof = true;
        Arc::new(buffer)
    }

    fn push(&self, bytes: &[u8]) {
        self.lock().data.extend(bytes);
        self.readable.notify_waiters();
    }

    fn close(&self) {
        self.lock().eof = true;
        self.readable.notify_waiters();
    }

    fn is_full(&self) -> bool {
        self.lock().data.len() >= MAX_BUFFERED
    }

    /// Waits for output: up to `max` bytes, or `(empty, true)` once the stream has ended.
    pub async fn read(&self, max: usize) -> (Vec<u8>, bool) {
        let max = max.max(1);
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if !state.data.is_empty() {
                    let n = max.min(state.data.len());
                    let chunk: Vec<u8> = state.data.drain(..n).collect();
                    drop(state);
                    self.drained.notify_waiters();
                    return (chunk, false);
                }
                if state.eof {
                    self.eof_delivered.store(true, Ordering::SeqCst);
                    return (Vec::new(), true);
                }
            }
            notified.await;
        }
    }

    /// The host has been told the stream ended.
    pub fn finished(&self) -> bool {
        self.eof_delivered.load(Ordering::SeqCst)
    }
}

/// Registers `fd` with the tokio reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor that it closes only when dropped, and its
    // as_raw_fd always returns that same descriptor; the AsyncFd owns it from here on.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Copies `fd` into `buffer` until end of file (or EIO, a pty whose other side closed).
fn pump(fd: OwnedFd, buffer: Arc<OutputBuffer>) -> io::Result<()> {
    set_nonblocking(&fd)?;
    let fd = register(fd)?;
    tokio::spawn(async move {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            while buffer.is_full() {
                let drained = buffer.drained.notified();
                if !buffer.is_full() {
                    break;
                }
                drained.await;
            }
            let Ok(mut guard) = fd.readable().await else {
                break;
            };
            let result = guard.try_io(|inner| {
                nix::unistd::read(inner.get_ref(), &mut chunk).map_err(io::Error::from)
            });
            match result {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => buffer.push(&chunk[..n]),
                Err(_would_block) => continue,
            }
        }
        buffer.close();
    });
    Ok(())
}

/// The writable end of a process's stdin.
#[derive(Debug)]
pub struct StdinWriter {
    fd: tokio::sync::Mutex<Option<AsyncFd<OwnedFd>>>,
}

impl StdinWriter {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(Self {
            fd: tokio::sync::Mutex::new(Some(register(fd)?)),
        })
    }

    /// Writes some of `data`, waiting until the process can take at least one byte.
    pub async fn write(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let slot = self.fd.lock().await;
        let Some(fd) = slot.as_ref() else {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed"));
        };
        loop {
            let mut guard = fd.writable().await?;
            match guard
                .try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(io::Error::from))
            {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Closes stdin: the process reads end of file.
    pub async fn close(&self) {
        self.fd.lock().await.take();
    }
}

/// The agent's side of a process's stdio.
#[derive(Debug)]
pub struct ProcessStdio {
    pub stdin: Option<StdinWriter>,
    pub stdout: Arc<OutputBuffer>,
    pub stderr: Arc<OutputBuffer>,
    /// The pty master, for ResizePty.
    pty: Option<OwnedFd>,
}

/// The process's side: its fds 0, 1, 2.
#[derive(Debug)]
pub struct ChildStdio(pub [OwnedFd; 3]);

fn dev_null() -> io::Result<OwnedFd> {
    Ok(File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

impl ProcessStdio {
    /// Creates pipes (or a pty) and starts copying output into buffers.
    pub fn create(terminal: bool, stdin: bool) -> io::Result<(Self, ChildStdio)> {
        if terminal {
            let pty = openpty(None, None).map_err(io::Error::from)?;
            let master = pty.master;
            let slave = pty.slave;
            let child = ChildStdio([slave.try_clone()?, slave.try_clone()?, slave]);
            let stdin = if stdin {
                Some(StdinWriter::new(master.try_clone()?)?)
            } else {
                None
            };
            let stdout = Arc::new(OutputBuffer::default());
            pump(master.try_clone()?, stdout.clone())?;
            return Ok((
                Self {
                    stdin,
                    stdout,
                    stderr: OutputBuffer::ended(),
                    pty: Some(master),
                },
                child,
            ));
        }
        let (child_in, stdin) = if stdin {
            let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
            (r, Some(StdinWriter::new(w)?))
        } else {
            (dev_null()?, None)
        };
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
        let stdout = Arc::new(OutputBuffer::default());
        let stderr = Arc::new(OutputBuffer::default());
        pump(out_r, stdout.clone())?;
        pump(err_r, stderr.clone())?;
        Ok((
            Self {
                stdin,
                stdout,
                stderr,
                pty: None,
            },
            ChildStdio([child_in, out_w, err_w]),
        ))
    }

    /// Sets the pty's window size; an error for a process without a terminal.
    pub fn resize(&self, rows: u16, columns: u16) -> io::Result<()> {
        let Some(master) = &self.pty else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the process has no terminal",
            ));
        };
        let size = Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize struct that lives for the whole call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Both output streams have been read to their end by the host.
    pub fn finished(&self) -> bool {
        self.stdout.finished() && self.stderr.finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffer_returns_data_then_eof() {
        let buffer = OutputBuffer::default();
        buffer.push(b"hello");
        assert_eq!(buffer.read(3).await, (b"hel".to_vec(), false));
        assert_eq!(buffer.read(10).await, (b"lo".to_vec(), false));
        buffer.close();
        assert_eq!(buffer.read(10).await, (Vec::new(), true));
        assert!(buffer.finished());
    }

    #[tokio::test]
    async fn pipe_output_reaches_the_buffer() {
        let (stdio, child) = ProcessStdio::create(false, true).unwrap();
        let [_, out, _] = child.0;
        nix::unistd::write(&out, b"abc").unwrap();
        drop(out);
        let mut collected = Vec::new();
        loop {
            let (chunk, eof) = stdio.stdout.read(1024).await;
            if eof {
                break;
            }
            collected.extend(chunk);
        }
        assert_eq!(collected, b"abc");
    }
}
