//! Unix socket paths longer than `sun_path` allows: a socket deep under a long state root (a run
//! directory named by a full 64-character ID) is reached through its parent directory's
//! descriptor, `/proc/self/fd/<N>/<name>`, which fits whatever the real path's length.
//!
//! Every bind and connect of a socket under a run directory goes through [`SocketPath`] (or the
//! [`bind`] and [`connect`] helpers built on it), so one place knows the limit and the trick.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// The longest socket path `bind` and `connect` take: `sun_path` is 108 bytes with its NUL.
pub const SUN_PATH_MAX: usize = 107;

/// A path to use for binding or connecting to the socket at a given path: the path itself when
/// it fits `sun_path`, else `/proc/self/fd/<N>/<name>` with `N` the parent directory, held open
/// (`O_PATH`) for as long as this value lives. Keep it alive across the bind or connect call.
#[derive(Debug)]
pub struct SocketPath {
    usable: PathBuf,
    _dir: Option<OwnedFd>,
}

impl SocketPath {
    /// A usable path for the socket at `path`. Fails when the parent directory cannot be
    /// opened, or when even the short form is too long (a file name of more than about 85 bytes).
    pub fn new(path: &Path) -> io::Result<Self> {
        if path.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(Self {
                usable: path.to_owned(),
                _dir: None,
            });
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(too_long(path));
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let dir = rustix::fs::open(
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut usable = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        usable.push(name);
        if usable.as_os_str().as_bytes().len() > SUN_PATH_MAX {
            return Err(too_long(path));
        }
        Ok(Self {
            usable,
            _dir: Some(dir),
        })
    }

    /// The path to hand to `bind` or `connect` while `self` lives.
    pub fn as_path(&self) -> &Path {
        &self.usable
    }
}

fn too_long(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "socket name of {} is too long for a Unix socket address ({SUN_PATH_MAX} bytes)",
            path.display()
        ),
    )
}

/// Binds a listening socket at `path`, however long.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let short = SocketPath::new(path)?;
    UnixListener::bind(short.as_path())
}

/// Connects to the socket at `path`, however long.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    let short = SocketPath::new(path)?;
    UnixStream::connect(short.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A directory whose path is longer than any socket address.
    fn deep_dir(root: &Path) -> PathBuf {
        let dir = root.join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(dir.as_os_str().len() > 110);
        dir
    }

    #[test]
    fn a_socket_under_a_long_path_is_bound_and_reached() {
        let tmp = tempfile::tempdir().unwrap();
        let path = deep_dir(tmp.path()).join("vsock");
        let listener = bind(&path).unwrap();
        assert!(path.exists(), "the socket is in the real directory");
        let mut client = connect(&path).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn a_short_path_is_used_as_it_is() {
        let short = SocketPath::new(Path::new("/run/rvm/abc/vsock")).unwrap();
        assert_eq!(short.as_path(), Path::new("/run/rvm/abc/vsock"));
    }

    #[test]
    fn a_name_too_long_for_even_the_short_form_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = deep_dir(tmp.path()).join("n".repeat(100));
        let err = SocketPath::new(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let path = Path::new("/nonexistent")
            .join("x".repeat(120))
            .join("vsock");
        assert_eq!(
            SocketPath::new(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
