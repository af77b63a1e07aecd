//! Unix socket files the VMM listens on (the vsock's and the host API's): bound at start-up
//! with a non-blocking listener, replacing a stale socket file that nobody listens on any more
//! (left by a VMM that was killed), never anything else.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// `struct sockaddr_un`'s path room, NUL excluded.
pub const MAX_SOCKET_PATH: usize = 107;

/// Why a socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Something else than a stale socket is at the path.
    InUse,
    /// Removing the stale socket, binding or configuring the listener failed.
    Io(std::io::Error),
}

/// Binds a non-blocking listener at `path`.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let stale = meta.file_type().is_socket()
            && matches!(UnixStream::connect(path), Err(e) if e.kind() == ErrorKind::ConnectionRefused);
        if !stale {
            return Err(BindError::InUse);
        }
        std::fs::remove_file(path).map_err(BindError::Io)?;
    }
    let listener = UnixListener::bind(path).map_err(BindError::Io)?;
    listener.set_nonblocking(true).map_err(BindError::Io)?;
    Ok(listener)
}
