//! Capability sets of a container process: the spec's, or Docker's default set.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;
use thiserror::Error;

/// Docker's default capabilities (moby's `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

#[derive(Debug, Error)]
pub enum CapabilityError {
    #[error("unknown capability {0:?}")]
    Unknown(String),
    #[error("set the {set} capabilities: {source}")]
    Set {
        set: &'static str,
        source: caps::errors::CapsError,
    },
}

/// The five sets to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilitySets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

impl CapabilitySets {
    /// Docker's default: the default set bounding, effective and permitted; none inheritable or
    /// ambient.
    pub fn docker_default() -> Self {
        let set: CapsHashSet = DOCKER_DEFAULT.iter().copied().collect();
        Self {
            bounding: set.clone(),
            effective: set.clone(),
            permitted: set,
            inheritable: HashSet::new(),
            ambient: HashSet::new(),
        }
    }

    /// The spec's sets; a missing set is empty, a missing object is Docker's default.
    pub fn from_spec(spec: Option<&LinuxCapabilities>) -> Result<Self, CapabilityError> {
        let Some(spec) = spec else {
            return Ok(Self::docker_default());
        };
        let convert = |set: &Option<oci_spec::runtime::Capabilities>| -> Result<CapsHashSet, CapabilityError> {
            set.iter()
                .flatten()
                .map(|cap| {
                    let name = serde_json::to_string(cap).unwrap_or_default();
                    let name = name.trim_matches('"');
                    Capability::from_str(name).map_err(|_| CapabilityError::Unknown(name.to_owned()))
                })
                .collect()
        };
        Ok(Self {
            bounding: convert(spec.bounding())?,
            effective: convert(spec.effective())?,
            permitted: convert(spec.permitted())?,
            inheritable: convert(spec.inheritable())?,
            ambient: convert(spec.ambient())?,
        })
    }
}

/// Drops every capability outside `bounding` from the bounding set. Needs CAP_SETPCAP, so it
/// runs before the uid changes.
pub fn drop_bounding(sets: &CapabilitySets) -> Result<(), CapabilityError> {
    for cap in caps::all() {
        if !sets.bounding.contains(&cap)
            && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false)
        {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapabilityError::Set {
                set: "bounding",
                source,
            })?;
        }
    }
    Ok(())
}

/// Sets the permitted, inheritable, effective and ambient sets (after the uid change).
pub fn apply(sets: &CapabilitySets) -> Result<(), CapabilityError> {
    let set = |which: CapSet, name: &'static str, value: &CapsHashSet| {
        caps::set(None, which, value).map_err(|source| CapabilityError::Set { set: name, source })
    };
    // Effective must stay within permitted, so it is set after permitted shrinks... and
    // permitted may only shrink, so set effective to the intersection first.
    let effective: CapsHashSet = sets
        .effective
        .intersection(&sets.permitted)
        .copied()
        .collect();
    set(CapSet::Effective, "effective", &effective)?;
    set(CapSet::Permitted, "permitted", &sets.permitted)?;
    set(CapSet::Inheritable, "inheritable", &sets.inheritable)?;
    caps::clear(None, CapSet::Ambient).map_err(|source| CapabilityError::Set {
        set: "ambient",
        source,
    })?;
    for cap in &sets.ambient {
        caps::raise(None, CapSet::Ambient, *cap).map_err(|source| CapabilityError::Set {
            set: "ambient",
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_dockers_without_sys_admin() {
        let sets = CapabilitySets::from_spec(None).unwrap();
        assert!(sets.bounding.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(!sets.bounding.contains(&Capability::CAP_SYS_ADMIN));
        assert_eq!(sets.bounding.len(), 14);
    }

    #[test]
    fn spec_sets_are_converted() {
        let spec: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_KILL","CAP_CHOWN"],"effective":["CAP_KILL"]}"#,
        )
        .unwrap();
        let sets = CapabilitySets::from_spec(Some(&spec)).unwrap();
        assert_eq!(sets.bounding.len(), 2);
        assert!(sets.effective.contains(&Capability::CAP_KILL));
        assert!(sets.permitted.is_empty());
    }
}
