//! The host side of virtio-net: an existing TAP interface opened through `/dev/net/tun` with a
//! 12-byte virtio-net header on every frame (`IFF_VNET_HDR`), non-blocking.
//!
//! rvm-vmm attaches to a TAP the caller created (`ip tuntap add mode tap name NAME`, or the
//! runtime through netlink) and configured; it never creates one: a missing interface is an
//! error, so a typo cannot silently give the guest a detached, unconfigured TAP.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::frame::VNET_HDR_LEN;

/// Offload: the TAP may hand us frames with partial checksums.
pub const TUN_F_CSUM: u32 = libc::TUN_F_CSUM;
/// Offload: TCP segmentation over IPv4.
pub const TUN_F_TSO4: u32 = libc::TUN_F_TSO4;
/// Offload: TCP segmentation over IPv6.
pub const TUN_F_TSO6: u32 = libc::TUN_F_TSO6;

/// Why a TAP could not be opened or set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// No network interface by that name in our network namespace.
    #[error(
        "--net tap={0}: no such network interface in this network namespace (create the TAP first)"
    )]
    Missing(String),
    /// The name cannot be a kernel interface name.
    #[error("--net tap={0}: not a valid interface name")]
    BadName(String),
    /// `/dev/net/tun` cannot be opened.
    #[error("--net tap={name}: cannot open /dev/net/tun: {source}")]
    OpenTun {
        /// TAP name.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The kernel refused to attach us to the interface (not a TAP, multi-queue, or owned by
    /// someone else).
    #[error("--net tap={name}: cannot attach to the TAP: {source}")]
    Attach {
        /// TAP name.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// A TAP ioctl failed.
    #[error("--net tap={name}: {what}: {source}")]
    Ioctl {
        /// TAP name.
        name: String,
        /// Which setting.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// An open, non-blocking TAP queue.
#[derive(Debug)]
pub struct Tap {
    name: String,
    fd: OwnedFd,
}

impl Tap {
    /// Attaches to the existing TAP `name` with `IFF_NO_PI | IFF_VNET_HDR`, a 12-byte vnet
    /// header and no offloads yet (the guest's negotiated features set them later).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let c_name = CString::new(name).map_err(|_| TapError::BadName(name.into()))?;
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(TapError::BadName(name.into()));
        }
        // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call, which
        // only reads it.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            return Err(TapError::Missing(name.into()));
        }
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|source| TapError::OpenTun {
                name: name.into(),
                source,
            })?;
        // SAFETY: an all-zero `ifreq` is a valid value (a name of NULs and zero flags).
        let mut ifreq: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifreq.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        ifreq.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, and `ifreq` is one that lives
        // for the whole call; `file` is an open /dev/net/tun descriptor.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifreq) };
        if rc < 0 {
            return Err(TapError::Attach {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            name: name.into(),
            fd: file.into(),
        };
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which points to `hdr_len`
        // for the whole call.
        let rc = unsafe { libc::ioctl(tap.fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        tap.check(rc, "setting the vnet header size")?;
        tap.set_offload(0)?;
        Ok(tap)
    }

    /// Wraps a descriptor that behaves like a TAP (one frame per read or write): a socket pair
    /// in tests.
    pub fn from_fd(name: &str, fd: OwnedFd) -> Tap {
        Tap {
            name: name.into(),
            fd,
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tells the kernel which offloads (`TUN_F_*`) frames it hands us may use: those the guest
    /// accepted.
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        self.check(rc, "setting offloads")
    }

    fn check(&self, rc: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if rc < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Reads one frame (vnet header included) into `buf`; `WouldBlock` when none is queued.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Writes one frame gathered from `iovecs`.
    ///
    /// # Safety
    /// Every iovec must describe memory valid for reads for the whole call (guest memory
    /// that stays mapped while the device runs).
    pub unsafe fn write_frame(&self, iovecs: &[libc::iovec]) -> io::Result<usize> {
        let count = libc::c_int::try_from(iovecs.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the caller guarantees the iovecs point to readable memory; `iovecs` itself
        // is a valid array of `count` entries.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iovecs.as_ptr(), count) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_names_the_flag() {
        let err = Tap::open("rvmnosuch0").unwrap_err().to_string();
        assert!(err.contains("--net tap=rvmnosuch0"), "{err}");
        assert!(err.contains("no such network interface"), "{err}");
        assert!(matches!(
            Tap::open("a-name-longer-than-15"),
            Err(TapError::BadName(_))
        ));
        assert!(matches!(Tap::open("a\0b"), Err(TapError::BadName(_))));
    }
}
