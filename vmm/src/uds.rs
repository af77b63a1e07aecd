//! Unix socket files of the VMM (the vsock's and the host API's): bound at start-up with a
//! non-blocking listener, replacing a stale socket file that nobody listens on any more (left
//! by a VMM that was killed), never anything else; connected to by the host side of the API.
//! Paths longer than `sun_path` are reached through the parent directory's descriptor
//! (`/proc/self/fd/<N>/<name>`). Also who may talk to the VMM over them: root and the VMM's own
//! user ([`AllowedPeers`]).
//!
//! The VMM never removes its socket files when it ends: the seccomp filter forbids `unlink`,
//! and the runtime removes the directory they live in.

use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// `struct sockaddr_un`'s path room, NUL excluded.
pub const MAX_SOCKET_PATH: usize = 107;

/// `/proc/self/fd/<N>/`, with room for any descriptor number: what a long path's file name is
/// appended to.
const FD_PREFIX_ROOM: usize = "/proc/self/fd/".len() + 10 + 1;

/// Longest file name of a socket whose path is longer than [`MAX_SOCKET_PATH`].
pub const MAX_SOCKET_NAME: usize = MAX_SOCKET_PATH - FD_PREFIX_ROOM;

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something else than a stale socket is at the path.
    #[error("exists and is in use or not a socket")]
    InUse,
    /// Removing the stale socket, binding or configuring the listener failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Whether a socket can be bound or connected at `path`: the path fits `sun_path`, or its file
/// name fits it after `/proc/self/fd/<N>/`.
pub fn fits(path: &Path) -> bool {
    path.as_os_str().len() <= MAX_SOCKET_PATH
        || path
            .file_name()
            .is_some_and(|name| name.len() <= MAX_SOCKET_NAME)
}

/// Calls `f` with a path to `path` that fits `sun_path`: `path` itself when it fits, else
/// `/proc/self/fd/<N>/<file name>` with N the parent directory opened with O_PATH, which stays
/// open for the call.
fn with_address<T>(path: &Path, f: impl FnOnce(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return f(path);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "a socket path must name a file",
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(parent)?;
    let mut short = OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
    short.push(name);
    if short.as_bytes().len() > MAX_SOCKET_PATH {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("the socket's file name is longer than {MAX_SOCKET_NAME} bytes"),
        ));
    }
    let result = f(&PathBuf::from(short));
    drop(dir);
    result
}

/// Connects to the Unix socket at `path`, however long the path.
pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    with_address(path, |address| UnixStream::connect(address))
}

/// Binds a non-blocking listener at `path`, however long the path.
pub fn bind(path: &Path) -> Result<UnixListener, BindError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let stale = meta.file_type().is_socket()
            && matches!(connect(path), Err(e) if e.kind() == ErrorKind::ConnectionRefused);
        if !stale {
            return Err(BindError::InUse);
        }
        std::fs::remove_file(path)?;
    }
    let listener = with_address(path, |address| UnixListener::bind(address))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The users whose processes may use the VMM's sockets: root and the user the VMM runs as
/// (its effective uid, read when this value is made, before the seccomp filter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedPeers {
    own_uid: u32,
}

impl AllowedPeers {
    /// Root and this process's effective user.
    pub fn of_this_process() -> AllowedPeers {
        // SAFETY: geteuid takes no argument, touches no memory and cannot fail.
        let own_uid = unsafe { libc::geteuid() };
        AllowedPeers { own_uid }
    }

    /// Root and `own_uid` (for tests).
    pub fn with_own_uid(own_uid: u32) -> AllowedPeers {
        AllowedPeers { own_uid }
    }

    /// Whether a peer running as `uid` may talk to the VMM.
    pub fn allows_uid(&self, uid: u32) -> bool {
        uid == 0 || uid == self.own_uid
    }

    /// Whether the peer of the accepted `stream` may talk to the VMM (SO_PEERCRED); logs a
    /// warning naming the peer's uid (or why it is unknown) when it may not. `what` names the
    /// socket in the warning.
    pub fn allows(&self, stream: &UnixStream, what: &str) -> bool {
        match peer_uid(stream) {
            Ok(uid) if self.allows_uid(uid) => true,
            Ok(uid) => {
                tracing::warn!(
                    uid,
                    "{what}: dropping a connection from uid {uid} (only root and uid {} may connect)",
                    self.own_uid
                );
                false
            }
            Err(e) => {
                tracing::warn!("{what}: dropping a connection whose peer is unknown: {e}");
                false
            }
        }
    }
}

/// The uid of the process at the other end of `stream`, as the kernel recorded it when it
/// connected (SO_PEERCRED).
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes, the size of `cred`, into `cred`, which
    // lives for the call; `len` is a valid socklen_t the kernel updates. The descriptor is
    // owned by `stream`, open for the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "SO_PEERCRED returned a short ucred",
        ));
    }
    Ok(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_own_user_are_allowed() {
        let peers = AllowedPeers::with_own_uid(1000);
        assert!(peers.allows_uid(0));
        assert!(peers.allows_uid(1000));
        assert!(!peers.allows_uid(1001));
        assert!(!peers.allows_uid(65534));
        let root = AllowedPeers::with_own_uid(0);
        assert!(root.allows_uid(0) && !root.allows_uid(1000));
    }

    #[test]
    fn peer_credentials_are_read() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(peer_uid(&ours).unwrap(), euid);
        assert!(AllowedPeers::of_this_process().allows(&ours, "test"));
        // A peer of another user (here: any uid but root's and ours) is refused.
        let other = if euid == 4242 { 4243 } else { 4242 };
        let strict = AllowedPeers { own_uid: other };
        assert_eq!(strict.allows(&ours, "test"), euid == 0);
    }

    #[test]
    fn accepted_connections_carry_the_client_uid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = bind(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let (accepted, _) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        // SAFETY: geteuid has no preconditions.
        assert_eq!(peer_uid(&accepted).unwrap(), unsafe { libc::geteuid() });
    }

    #[test]
    fn long_paths_are_bound_and_connected_through_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("api.sock");
        assert!(path.as_os_str().len() > MAX_SOCKET_PATH && fits(&path));
        let listener = bind(&path).unwrap();
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket());
        let _client = connect(&path).unwrap();
        // Still in use while the listener lives; stale (and replaced) once it is gone.
        assert!(matches!(bind(&path), Err(BindError::InUse)));
        drop(listener);
        let _again = bind(&path).unwrap();

        // `fits` is conservative (room for any descriptor number); a name that does not fit
        // even after a short `/proc/self/fd/<N>/` is refused by bind.
        assert!(!fits(&deep.join("n".repeat(MAX_SOCKET_NAME + 1))));
        let long_name = deep.join("n".repeat(100));
        assert!(
            matches!(bind(&long_name), Err(BindError::Io(e)) if e.kind() == ErrorKind::InvalidInput)
        );
    }
}
