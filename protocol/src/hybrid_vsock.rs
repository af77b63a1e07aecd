//! The host side of the VMM's hybrid vsock: reaching a guest port through the VMM's Unix socket.
//!
//! The convention of Firecracker and Cloud Hypervisor: connect to the socket given to the VMM
//! with `--vsock cid=N,uds=PATH`, write `CONNECT <port>\n`, read `OK <host port>\n`. From then on
//! the Unix stream carries the guest connection's bytes. The number after `OK` is the VMM's
//! host-side port for the connection, not the guest port, so only its form is checked.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The longest reply accepted, newline excluded: `OK ` and a u32 fit with room to spare.
pub const MAX_REPLY_LEN: usize = 32;

#[derive(Debug, Error)]
pub enum HybridVsockError {
    #[error("cannot connect to the VMM's vsock socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot send CONNECT {port} to the VMM's vsock socket {path}: {source}")]
    Send {
        path: PathBuf,
        port: u32,
        source: std::io::Error,
    },
    #[error("cannot read the reply to CONNECT {port} from {path}: {source}")]
    Receive {
        path: PathBuf,
        port: u32,
        source: std::io::Error,
    },
    #[error("{path} closed the connection before answering CONNECT {port} (is anything listening on guest port {port}?)")]
    Closed { path: PathBuf, port: u32 },
    #[error("reply of {path} to CONNECT {port} is longer than {MAX_REPLY_LEN} bytes")]
    ReplyTooLong { path: PathBuf, port: u32 },
    #[error("{path} answered CONNECT {port} with {reply:?}, expected \"OK <port>\"")]
    Refused {
        path: PathBuf,
        port: u32,
        reply: String,
    },
    #[error("no answer from {path} to CONNECT {port} within {timeout:?}")]
    Timeout {
        path: PathBuf,
        port: u32,
        timeout: Duration,
    },
}

/// Connects to guest `port` through the VMM socket at `uds_path`; the whole handshake must end
/// within `timeout`. Returns the stream, positioned at the first byte from the guest.
pub async fn connect(
    uds_path: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, HybridVsockError> {
    tokio::time::timeout(timeout, handshake(uds_path, port))
        .await
        .map_err(|_| HybridVsockError::Timeout {
            path: uds_path.to_owned(),
            port,
            timeout,
        })?
}

async fn handshake(uds_path: &Path, port: u32) -> Result<UnixStream, HybridVsockError> {
    let path = || uds_path.to_owned();
    let mut stream =
        UnixStream::connect(uds_path)
            .await
            .map_err(|source| HybridVsockError::Connect {
                path: path(),
                source,
            })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| HybridVsockError::Send {
            path: path(),
            port,
            source,
        })?;
    let reply = read_reply(&mut stream, uds_path, port).await?;
    if is_ok_reply(&reply) {
        Ok(stream)
    } else {
        Err(HybridVsockError::Refused {
            path: path(),
            port,
            reply: String::from_utf8_lossy(&reply).into_owned(),
        })
    }
}

/// Reads up to the newline one byte at a time: whatever follows it belongs to the guest.
async fn read_reply(
    stream: &mut UnixStream,
    uds_path: &Path,
    port: u32,
) -> Result<Vec<u8>, HybridVsockError> {
    let mut reply = Vec::with_capacity(MAX_REPLY_LEN);
    loop {
        let byte = stream
            .read_u8()
            .await
            .map_err(|source| match source.kind() {
                // A VMM closing with our CONNECT line unread makes the kernel send a reset.
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => HybridVsockError::Closed {
                    path: uds_path.to_owned(),
                    port,
                },
                _ => HybridVsockError::Receive {
                    path: uds_path.to_owned(),
                    port,
                    source,
                },
            })?;
        if byte == b'\n' {
            return Ok(reply);
        }
        if reply.len() == MAX_REPLY_LEN {
            return Err(HybridVsockError::ReplyTooLong {
                path: uds_path.to_owned(),
                port,
            });
        }
        reply.push(byte);
    }
}

fn is_ok_reply(reply: &[u8]) -> bool {
    std::str::from_utf8(reply)
        .ok()
        .and_then(|reply| reply.strip_prefix("OK "))
        .is_some_and(|number| number.parse::<u32>().is_ok())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A stand-in for the VMM's vsock device: accepts one connection, checks the CONNECT line
    /// and answers with `reply`, then sends `greeting` as if from the guest.
    async fn fake_vmm(
        reply: &'static [u8],
        greeting: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            assert_eq!(line, "CONNECT 1024\n");
            stream.get_mut().write_all(reply).await.unwrap();
            stream.get_mut().write_all(greeting).await.unwrap();
            // Keep the connection open until the client is done with it.
            let _ = stream.read_line(&mut line).await;
        });
        (dir, path)
    }

    #[tokio::test]
    async fn handshake_succeeds_and_keeps_guest_bytes() {
        let (_dir, path) = fake_vmm(b"OK 1073741824\n", b"hello").await;
        let mut stream = connect(&path, 1024, TIMEOUT).await.unwrap();
        let mut greeting = [0; 5];
        stream.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"hello");
    }

    #[tokio::test]
    async fn wrong_reply_is_refused() {
        let (_dir, path) = fake_vmm(b"ERR no listener\n", b"").await;
        let error = connect(&path, 1024, TIMEOUT).await.unwrap_err();
        assert!(
            matches!(error, HybridVsockError::Refused { ref reply, .. } if reply == "ERR no listener"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn reply_without_number_is_refused() {
        let (_dir, path) = fake_vmm(b"OK \n", b"").await;
        let error = connect(&path, 1024, TIMEOUT).await.unwrap_err();
        assert!(matches!(error, HybridVsockError::Refused { .. }), "{error}");
    }

    #[tokio::test]
    async fn over_long_reply_is_refused() {
        let (_dir, path) = fake_vmm(&[b'O'; 4096], b"").await;
        let error = connect(&path, 1024, TIMEOUT).await.unwrap_err();
        assert!(
            matches!(error, HybridVsockError::ReplyTooLong { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn closed_before_reply_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            drop(stream);
        });
        let error = connect(&path, 1024, TIMEOUT).await.unwrap_err();
        assert!(matches!(error, HybridVsockError::Closed { .. }), "{error}");
    }

    #[tokio::test]
    async fn silent_vmm_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock.sock");
        // Bound but never accepting nor answering: the connect succeeds, the reply never comes.
        let _listener = UnixListener::bind(&path).unwrap();
        let timeout = Duration::from_millis(100);
        let error = connect(&path, 1024, timeout).await.unwrap_err();
        assert!(matches!(error, HybridVsockError::Timeout { .. }), "{error}");
        assert!(error.to_string().contains("100ms"), "{error}");
    }

    #[tokio::test]
    async fn missing_socket_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let error = connect(&path, 1024, TIMEOUT).await.unwrap_err();
        assert!(matches!(error, HybridVsockError::Connect { .. }), "{error}");
        assert!(error.to_string().contains("absent.sock"), "{error}");
    }
}
