//! A container's TAP: a persistent TAP device (`rvm` + 12 characters of the container ID, the
//! 15 an interface name allows) that the VMM attaches to by name, and its MAC address, derived
//! from the container ID so it stays the same across restarts. Created and deleted with the
//! TUNSETIFF/TUNSETPERSIST ioctls: netlink cannot create TUN/TAP devices.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun for TAP {name}: {source}")]
    OpenTun { name: String, source: io::Error },
    #[error("{request} on TAP {name}: {source}")]
    Ioctl {
        request: &'static str,
        name: String,
        source: io::Error,
    },
}

/// The TAP name of container `id`.
pub fn tap_name(id: &str) -> String {
    format!("rvm{}", id.get(..12).unwrap_or(id))
}

/// The MAC of container `id`'s interface: locally administered unicast (`02:`), then the
/// first five bytes of the ID (hex).
pub fn mac_address(id: &str) -> String {
    let mut bytes = [0x02u8, 0, 0, 0, 0, 0];
    for (i, slot) in bytes.iter_mut().skip(1).enumerate() {
        *slot = id
            .get(i * 2..i * 2 + 2)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .unwrap_or(0);
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The TUN/TAP control device's path and numbers (misc major 10, minor 200).
const TUN_PATH: &str = "/dev/net/tun";
const TUN_MAJOR: u32 = 10;
const TUN_MINOR: u32 = 200;

/// Makes /dev/net/tun where no udev made it (a minimal host, the lab): opening the node then
/// loads the tun module by its device number. Errors surface when the node is opened.
fn ensure_tun_node() {
    if std::path::Path::new(TUN_PATH).exists() {
        return;
    }
    tracing::debug!("{TUN_PATH} is missing; creating it");
    let _ = std::fs::create_dir_all("/dev/net");
    let path = c"/dev/net/tun";
    let device = libc::makedev(TUN_MAJOR, TUN_MINOR);
    // SAFETY: `path` is a NUL-terminated string that outlives the call; mknod reads nothing else.
    let _ = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, device) };
}

/// Opens /dev/net/tun bound to the TAP `name` (created if missing).
fn bind(name: &str, flags: libc::c_int) -> Result<File, TapError> {
    ensure_tun_node();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_PATH)
        .map_err(|source| TapError::OpenTun {
            name: name.to_owned(),
            source,
        })?;
    // SAFETY: an all-zero `ifreq` is a valid value (a name of NULs and zero flags).
    let mut ifreq: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in ifreq
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    ifreq.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `ifreq` lives for the whole call
    // and `file` is an open /dev/net/tun descriptor.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifreq) };
    if rc < 0 {
        return Err(TapError::Ioctl {
            request: "TUNSETIFF",
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(file)
}

fn set_persist(file: &File, name: &str, persist: bool) -> Result<(), TapError> {
    let value = libc::c_ulong::from(persist);
    // SAFETY: TUNSETPERSIST takes its argument by value; `file` is bound to the TAP.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETPERSIST, value) };
    if rc < 0 {
        return Err(TapError::Ioctl {
            request: "TUNSETPERSIST",
            name: name.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Creates the persistent TAP `name` (or keeps the existing one), with the flags the VMM opens
/// it with.
pub fn create(name: &str) -> Result<(), TapError> {
    let file = bind(name, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR)?;
    set_persist(&file, name, true)
}

/// Deletes the TAP `name`; a TAP that does not exist is fine.
pub fn delete(name: &str) -> Result<(), TapError> {
    let index_name = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: `index_name` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::if_nametoindex(index_name.as_ptr()) } == 0 {
        return Ok(());
    }
    let file = bind(name, libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR)?;
    // Without the persist flag the device goes away with its last descriptor, this one.
    set_persist(&file, name, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_an_interface_name() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(tap_name(id), "rvm0123456789ab");
        assert!(tap_name(id).len() < libc::IFNAMSIZ);
    }

    #[test]
    fn mac_is_local_unicast_and_stable() {
        let id = "0123456789abcdef";
        assert_eq!(mac_address(id), "02:01:23:45:67:89");
        assert_eq!(mac_address(id), mac_address(id));
    }
}
