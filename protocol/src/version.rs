//! The protocol version and the handshake rule: both ends must speak the same major version.

use thiserror::Error;

use crate::generated::agent::{VersionRequest, VersionResponse};

/// Bumped for changes an older peer cannot understand (removed or re-typed fields or RPCs).
pub const PROTOCOL_MAJOR: u32 = 1;
/// Bumped for additions an older peer can ignore (new fields, new RPCs).
pub const PROTOCOL_MINOR: u32 = 5;

/// A protocol version as exchanged by the `Version` RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolVersion {
    pub major: u32,
    pub minor: u32,
}

/// The version this build speaks.
pub const LOCAL: ProtocolVersion = ProtocolVersion {
    major: PROTOCOL_MAJOR,
    minor: PROTOCOL_MINOR,
};

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl From<&VersionRequest> for ProtocolVersion {
    fn from(request: &VersionRequest) -> Self {
        Self {
            major: request.protocol_major,
            minor: request.protocol_minor,
        }
    }
}

impl From<&VersionResponse> for ProtocolVersion {
    fn from(response: &VersionResponse) -> Self {
        Self {
            major: response.protocol_major,
            minor: response.protocol_minor,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VersionError {
    #[error(
        "protocol version mismatch: the peer speaks {remote}, we speak {local}; the major \
         versions differ, so the host's rvm and the guest's rvm-agent must come from the same \
         release"
    )]
    MajorMismatch {
        local: ProtocolVersion,
        remote: ProtocolVersion,
    },
}

/// Accepts a peer of the same major version, whatever its minor version.
pub fn check_compatible(remote: ProtocolVersion) -> Result<(), VersionError> {
    if remote.major == PROTOCOL_MAJOR {
        Ok(())
    } else {
        Err(VersionError::MajorMismatch {
            local: LOCAL,
            remote,
        })
    }
}

/// The host's opening request, carrying this build's version.
pub fn version_request(host_version: &str) -> VersionRequest {
    VersionRequest {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        host_version: host_version.to_owned(),
        ..Default::default()
    }
}

/// The agent's answer, carrying this build's version.
pub fn version_response(agent_version: &str) -> VersionResponse {
    VersionResponse {
        protocol_major: PROTOCOL_MAJOR,
        protocol_minor: PROTOCOL_MINOR,
        agent_version: agent_version.to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_version_is_compatible() {
        assert_eq!(check_compatible(LOCAL), Ok(()));
    }

    #[test]
    fn other_minor_is_compatible() {
        let newer = ProtocolVersion {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR + 7,
        };
        assert_eq!(check_compatible(newer), Ok(()));
    }

    #[test]
    fn other_major_is_refused_with_both_versions_named() {
        let remote = ProtocolVersion {
            major: PROTOCOL_MAJOR + 1,
            minor: 0,
        };
        let error = check_compatible(remote).unwrap_err();
        assert_eq!(
            error,
            VersionError::MajorMismatch {
                local: LOCAL,
                remote
            }
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("peer speaks {remote}")),
            "{message}"
        );
        assert!(message.contains(&format!("we speak {LOCAL}")), "{message}");
    }

    #[test]
    fn older_major_is_refused() {
        let remote = ProtocolVersion { major: 0, minor: 9 };
        assert!(check_compatible(remote).is_err());
    }

    #[test]
    fn request_and_response_carry_local_version() {
        assert_eq!(ProtocolVersion::from(&version_request("h")), LOCAL);
        assert_eq!(ProtocolVersion::from(&version_response("a")), LOCAL);
    }
}
