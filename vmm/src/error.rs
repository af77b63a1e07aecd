//! The crate's top-level error and the exit status each kind of failure maps to.

use crate::api::ServerError;
use crate::config::ConfigError;
use crate::device_manager::DeviceError;
use crate::jail::JailError;
use crate::loader::LoadError;
use crate::machine::MachineError;

/// Exit status for invalid input (flags, files, sizes), like a usage error.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit status for a failure of the VMM or of KVM.
pub const EXIT_FAILURE: u8 = 1;

/// Anything that stops the VMM before the guest does.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The boot files could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A device could not be created.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Building or running the VM failed.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// The API socket could not be set up.
    #[error(transparent)]
    Api(#[from] ServerError),
    /// The jail could not be entered.
    #[error(transparent)]
    Jail(#[from] JailError),
}

impl Error {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => EXIT_BAD_INPUT,
            Error::Load(LoadError::BootParams(_)) => EXIT_FAILURE,
            Error::Load(_) => EXIT_BAD_INPUT,
            Error::Device(DeviceError::Tap(_)) => EXIT_BAD_INPUT,
            Error::Device(DeviceError::Vsock(_)) => EXIT_BAD_INPUT,
            Error::Device(_) | Error::Machine(_) | Error::Jail(_) => EXIT_FAILURE,
            Error::Api(ServerError::Start(_)) => EXIT_FAILURE,
            Error::Api(_) => EXIT_BAD_INPUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_exits_2() {
        assert_eq!(Error::from(ConfigError::Vcpus(0)).exit_code(), 2);
        let stuck = MachineError::Stuck(std::time::Duration::from_secs(1));
        assert_eq!(Error::from(stuck).exit_code(), 1);
        let vsock = crate::devices::virtio::vsock::VsockError::InUse("/v".into());
        assert_eq!(Error::from(DeviceError::from(vsock)).exit_code(), 2);
        assert_eq!(Error::from(ServerError::InUse("/a".into())).exit_code(), 2);
        let start = ServerError::Start(std::io::Error::other("no threads"));
        assert_eq!(Error::from(start).exit_code(), 1);
    }
}
