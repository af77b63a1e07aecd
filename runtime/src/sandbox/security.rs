//! `rvm run --cap-add/--cap-drop/--security-opt/--privileged`: Docker's capability arithmetic on
//! its default set, the security options rvm honours (`seccomp=unconfined`,
//! `no-new-privileges`), and `--privileged`'s every capability.

use std::collections::HashSet;
use std::str::FromStr;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error("invalid capability {0:?}: a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL")]
    BadCapability(String),
    #[error("invalid --security-opt {0:?}: rvm takes seccomp=unconfined and no-new-privileges[=true|false]")]
    BadOption(String),
}

/// Docker's default capability set.
const DEFAULT: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the guest kernel (6.12) knows, for `--cap-add ALL`.
const ALL: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// One `--cap-add`/`--cap-drop` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityName {
    All,
    One(Capability),
}

impl FromStr for CapabilityName {
    type Err = SecurityError;

    /// `NET_ADMIN`, `CAP_NET_ADMIN`, `net_admin` or `ALL`, as Docker takes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let upper = text.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if name == "ALL" {
            return Ok(Self::All);
        }
        Capability::from_str(name)
            .map(Self::One)
            .map_err(|_| SecurityError::BadCapability(text.to_owned()))
    }
}

/// The security flags of `rvm run`/`rvm create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub cap_add: Vec<CapabilityName>,
    pub cap_drop: Vec<CapabilityName>,
    /// `--security-opt seccomp=unconfined`: no seccomp filter.
    pub seccomp_unconfined: bool,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--privileged`: every capability (adds and drops ignored, as Docker does) and no
    /// seccomp filter; the spec adds the rest (devices, paths).
    pub privileged: bool,
}

impl Security {
    /// Applies one `--security-opt` value (`seccomp=unconfined`, `seccomp:unconfined`,
    /// `no-new-privileges`, `no-new-privileges=true|false`).
    pub fn apply_option(&mut self, text: &str) -> Result<(), SecurityError> {
        let bad = || SecurityError::BadOption(text.to_owned());
        let (key, value) = match text.split_once(['=', ':']) {
            Some((key, value)) => (key, Some(value)),
            None => (text, None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => self.seccomp_unconfined = true,
            ("no-new-privileges", None | Some("true")) => self.no_new_privileges = true,
            ("no-new-privileges", Some("false")) => self.no_new_privileges = false,
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Docker's rule: `--privileged` gives every capability whatever is added or dropped;
    /// `--cap-add ALL` every capability less the named drops; otherwise the default set (none
    /// with `--cap-drop ALL`) less the drops, plus the adds.
    pub fn capability_set(&self) -> Capabilities {
        if self.privileged {
            return ALL.into_iter().collect();
        }
        let adds_all = self.cap_add.contains(&CapabilityName::All);
        let drops_all = self.cap_drop.contains(&CapabilityName::All);
        let dropped = |cap: &Capability| self.cap_drop.contains(&CapabilityName::One(*cap));
        let mut set: HashSet<Capability> = if adds_all {
            ALL.into_iter().filter(|cap| !dropped(cap)).collect()
        } else if drops_all {
            HashSet::new()
        } else {
            DEFAULT.into_iter().filter(|cap| !dropped(cap)).collect()
        };
        if !adds_all {
            set.extend(self.cap_add.iter().filter_map(|name| match name {
                CapabilityName::One(cap) => Some(*cap),
                CapabilityName::All => None,
            }));
        }
        set
    }

    /// Whether the container runs without a seccomp filter.
    pub fn seccomp_off(&self) -> bool {
        self.seccomp_unconfined || self.privileged
    }

    /// The process's capabilities: the set bounding, effective and permitted, as Docker's are.
    pub fn linux_capabilities(&self) -> LinuxCapabilities {
        let set = self.capability_set();
        let mut caps = LinuxCapabilities::default();
        caps.set_bounding(Some(set.clone()))
            .set_effective(Some(set.clone()))
            .set_permitted(Some(set))
            .set_inheritable(None)
            .set_ambient(None);
        caps
    }
}

/// Docker's default capabilities as the process object carries them.
pub fn default_capabilities() -> LinuxCapabilities {
    Security::default().linux_capabilities()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(texts: &[&str]) -> Vec<CapabilityName> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn security(add: &[&str], drop: &[&str]) -> Security {
        Security {
            cap_add: names(add),
            cap_drop: names(drop),
            ..Default::default()
        }
    }

    #[test]
    fn capability_names_as_docker_takes_them() {
        for text in ["NET_ADMIN", "CAP_NET_ADMIN", "net_admin", "cap_net_admin"] {
            assert_eq!(
                text.parse::<CapabilityName>(),
                Ok(CapabilityName::One(Capability::NetAdmin))
            );
        }
        assert_eq!("all".parse::<CapabilityName>(), Ok(CapabilityName::All));
        for bad in ["", "NET_ADMINS", "CAP_", "sys admin"] {
            assert_eq!(
                bad.parse::<CapabilityName>(),
                Err(SecurityError::BadCapability(bad.to_owned()))
            );
        }
    }

    #[test]
    fn docker_capability_arithmetic() {
        let default = security(&[], &[]).capability_set();
        assert_eq!(default.len(), 14);
        assert!(!default.contains(&Capability::SysAdmin));
        let added = security(&["SYS_PTRACE"], &["NET_RAW"]).capability_set();
        assert!(added.contains(&Capability::SysPtrace) && !added.contains(&Capability::NetRaw));
        assert_eq!(added.len(), 14);
        let only = security(&["CHOWN"], &["ALL"]).capability_set();
        assert_eq!(only, HashSet::from([Capability::Chown]));
        let all = security(&["ALL"], &["SYS_ADMIN"]).capability_set();
        assert_eq!(all.len(), ALL.len() - 1);
        assert!(!all.contains(&Capability::SysAdmin));
        assert_eq!(ALL.iter().collect::<HashSet<_>>().len(), ALL.len());
    }

    #[test]
    fn privileged_has_every_capability_and_no_seccomp() {
        let privileged = Security {
            privileged: true,
            ..security(&[], &["ALL", "SYS_ADMIN"])
        };
        assert_eq!(privileged.capability_set().len(), ALL.len());
        assert!(privileged.seccomp_off());
        assert!(!Security::default().seccomp_off());
    }

    #[test]
    fn security_options() {
        let mut security = Security::default();
        security.apply_option("seccomp=unconfined").unwrap();
        security.apply_option("no-new-privileges").unwrap();
        assert!(security.seccomp_unconfined && security.no_new_privileges);
        security.apply_option("no-new-privileges=false").unwrap();
        assert!(!security.no_new_privileges);
        security.apply_option("seccomp:unconfined").unwrap();
        for bad in [
            "seccomp=/etc/profile.json",
            "apparmor=unconfined",
            "label=disable",
            "",
        ] {
            assert_eq!(
                security.apply_option(bad),
                Err(SecurityError::BadOption(bad.to_owned()))
            );
        }
    }
}
