//! Resource limits (setrlimit) of a container process.

use oci_spec::runtime::{PosixRlimit, PosixRlimitType};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("set rlimit {name} to soft {soft} hard {hard}: {source}")]
pub struct RlimitError {
    name: String,
    soft: u64,
    hard: u64,
    source: std::io::Error,
}

fn resource(kind: PosixRlimitType) -> Option<libc::__rlimit_resource_t> {
    use PosixRlimitType::*;
    Some(match kind {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// Applies each rlimit of the spec.
pub fn apply(rlimits: &[PosixRlimit]) -> Result<(), RlimitError> {
    for limit in rlimits {
        let name = format!("{:?}", limit.typ());
        let Some(resource) = resource(limit.typ()) else {
            return Err(RlimitError {
                name,
                soft: limit.soft(),
                hard: limit.hard(),
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            });
        };
        let value = libc::rlimit {
            rlim_cur: limit.soft(),
            rlim_max: limit.hard(),
        };
        // SAFETY: setrlimit reads one rlimit struct that lives for the whole call.
        if unsafe { libc::setrlimit(resource, &value) } != 0 {
            return Err(RlimitError {
                name,
                soft: limit.soft(),
                hard: limit.hard(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}
