//! Ending the VM: sync the disks, then reboot. The guest kernel runs with `reboot=k`, so the
//! reboot resets the machine through the i8042 and the VMM exits 0.

use nix::sys::reboot::{reboot, RebootMode};

/// What Shutdown does in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerMode {
    /// PID 1 of a VM: sync and reboot.
    RebootVm,
    /// A native test server: sync and exit the process with status 0.
    ExitProcess,
}

/// Syncs the filesystems and ends the VM (or the process). Never returns.
pub fn power_off(mode: PowerMode) -> ! {
    nix::unistd::sync();
    match mode {
        PowerMode::RebootVm => {
            tracing::info!("rebooting to end the VM");
            let error = reboot(RebootMode::RB_AUTOBOOT);
            tracing::error!(?error, "reboot failed; exiting PID 1 instead");
            std::process::exit(1)
        }
        PowerMode::ExitProcess => {
            tracing::info!("shutdown requested; exiting");
            std::process::exit(0)
        }
    }
}
