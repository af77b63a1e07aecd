//! Brings up the loopback link with the SIOCSIFFLAGS ioctl (no `ip` binary in the guest).

use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("open a socket for interface ioctls: {0}")]
    Socket(nix::Error),
    #[error("{request} on interface {interface}: {source}")]
    Ioctl {
        request: &'static str,
        interface: String,
        source: io::Error,
    },
}

/// Sets IFF_UP on `lo`.
pub fn bring_up_loopback() -> Result<(), NetworkError> {
    set_link_up("lo")
}

/// Sets IFF_UP (and keeps the other flags) on the interface `name`.
pub fn set_link_up(name: &str) -> Result<(), NetworkError> {
    let socket = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(NetworkError::Socket)?;
    // SAFETY: ifreq is a plain C struct (names and a union of integers); all-zero is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    let ioctl_error = |request: &'static str| NetworkError::Ioctl {
        request,
        interface: name.to_owned(),
        source: io::Error::last_os_error(),
    };
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `request`, which is a
    // valid, exclusively borrowed ifreq for the duration of the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(ioctl_error("SIOCGIFFLAGS"));
    }
    // SAFETY: the kernel has just filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and flags from `request`, a valid ifreq.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(ioctl_error("SIOCSIFFLAGS"));
    }
    Ok(())
}
