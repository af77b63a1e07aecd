//! The host side of the API, for the runtime and the shim: connects to a VMM's `--api` socket,
//! sends ATTACH (with the image's descriptor as SCM_RIGHTS on the same message) and DETACH
//! requests and reads their replies.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::protocol::{self, ProtocolError, MAX_REPLY};

/// How long a reply may take before the client gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket cannot be reached.
    #[error("cannot connect to the VMM's API socket {path}: {source}")]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The serial cannot be sent (checked before sending, as the VMM would).
    #[error("{0}")]
    Serial(ProtocolError),
    /// Sending or receiving failed (or timed out).
    #[error("talking to the VMM's API: {0}")]
    Io(#[from] std::io::Error),
    /// The VMM closed the connection without a reply.
    #[error("the VMM closed its API connection without replying")]
    Closed,
    /// The VMM refused the request; its reason.
    #[error("the VMM refused: {0}")]
    Refused(String),
    /// A reply that is not what the protocol says.
    #[error("unexpected reply from the VMM's API: {0:?}")]
    BadReply(String),
}

/// A connection to a VMM's API socket; requests on it are answered in order.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    replies: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the socket at `socket` (a path longer than `sun_path` is reached through
    /// its directory).
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = crate::uds::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let replies = BufReader::new(stream.try_clone()?);
        Ok(Client { stream, replies })
    }

    /// Attaches `image` (opened for reading) to disk slot `slot` with `serial`; returns its
    /// capacity in 512-byte sectors.
    pub fn attach(
        &mut self,
        slot: u32,
        serial: &str,
        image: &impl AsFd,
    ) -> Result<u64, ClientError> {
        protocol::check_serial(serial.as_bytes()).map_err(ClientError::Serial)?;
        let line = format!("ATTACH {slot} {serial}\n");
        let sent = self
            .stream
            .send_with_fd(line.as_bytes(), image.as_fd().as_raw_fd())
            .map_err(|e| ClientError::Io(e.into()))?;
        // A short send leaves the rest of the line, which needs no descriptor.
        if let Some(rest) = line.as_bytes().get(sent..) {
            self.stream.write_all(rest)?;
        }
        let reply = self.reply()?;
        match reply.split(' ').collect::<Vec<_>>()[..] {
            ["OK", n, sectors] if n == slot.to_string() => sectors
                .parse()
                .map_err(|_| ClientError::BadReply(reply.clone())),
            _ => Err(ClientError::BadReply(reply)),
        }
    }

    /// Empties disk slot `slot`.
    pub fn detach(&mut self, slot: u32) -> Result<(), ClientError> {
        self.stream
            .write_all(format!("DETACH {slot}\n").as_bytes())?;
        let reply = self.reply()?;
        if reply == protocol::detached(slot) {
            Ok(())
        } else {
            Err(ClientError::BadReply(reply))
        }
    }

    /// Reads one reply line; an `ERR` reply is [`ClientError::Refused`].
    fn reply(&mut self) -> Result<String, ClientError> {
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_REPLY + 1).unwrap_or(u64::MAX);
        (&mut self.replies)
            .take(limit)
            .read_until(b'\n', &mut line)?;
        if line.pop() != Some(b'\n') {
            return Err(if line.is_empty() {
                ClientError::Closed
            } else {
                ClientError::BadReply(String::from_utf8_lossy(&line).into_owned())
            });
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        match line.strip_prefix("ERR ") {
            Some(reason) => Err(ClientError::Refused(reason.to_string())),
            None => Ok(line),
        }
    }
}

/// Connects to `socket` and attaches `image` to disk slot `slot` with `serial`; returns its
/// capacity in sectors.
pub fn attach(
    socket: &Path,
    slot: u32,
    serial: &str,
    image: &impl AsFd,
) -> Result<u64, ClientError> {
    Client::connect(socket)?.attach(slot, serial, image)
}

/// Connects to `socket` and empties disk slot `slot`.
pub fn detach(socket: &Path, slot: u32) -> Result<(), ClientError> {
    Client::connect(socket)?.detach(slot)
}
