//! What PID 1 sets up before serving: the kernel filesystems, cgroup2 with its controllers, the
//! loopback link, and fds 0-2.

pub mod logging;
pub mod mounts;
pub mod network;
pub mod power;
pub mod switch_root;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum InitError {
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
}

/// Prepares the guest as PID 1: mounts, cgroups, `lo`, and marks us child subreaper (a no-op for
/// PID 1, but harmless and keeps the same code path when run as a non-init supervisor).
pub fn init_guest() -> Result<(), InitError> {
    mounts::mount_kernel_filesystems()?;
    mounts::enable_cgroup_controllers()?;
    network::bring_up_loopback()?;
    Ok(())
}

/// Makes sure fds 0, 1 and 2 are open, so that no pipe or socket we create lands on them (the
/// kernel starts init with them closed when the initramfs has no /dev/console).
pub fn ensure_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table; no memory is passed.
        let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
        if !open {
            // The returned fd is the lowest free one, i.e. `fd`; it stays open for our lifetime.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                std::mem::forget(null);
            }
        }
    }
}
