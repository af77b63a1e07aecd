//! The namespaces a pod's container may share with its sandbox container in the VM, as named in
//! `CreateContainerRequest.sandbox_namespaces`. On the wire they stay strings (the names of
//! `/proc/PID/ns/`); the host renders them from [`SharedNamespace`] and the agent parses them
//! back, refusing a name it does not know rather than silently not sharing it.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A namespace of the sandbox a pod's container joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SharedNamespace {
    Ipc,
    Uts,
    Pid,
}

/// A name in `sandbox_namespaces` that is no [`SharedNamespace`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{name:?} is not a namespace a pod's containers share (ipc, uts, pid)")]
pub struct UnknownNamespace {
    pub name: String,
}

impl SharedNamespace {
    /// Every namespace a pod's containers may share.
    pub const ALL: [Self; 3] = [Self::Ipc, Self::Uts, Self::Pid];

    /// The wire name, also the entry's name in `/proc/PID/ns/`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Pid => "pid",
        }
    }
}

impl fmt::Display for SharedNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SharedNamespace {
    type Err = UnknownNamespace;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|namespace| namespace.as_str() == name)
            .ok_or_else(|| UnknownNamespace {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for namespace in SharedNamespace::ALL {
            assert_eq!(namespace.as_str().parse(), Ok(namespace));
            assert_eq!(namespace.to_string(), namespace.as_str());
        }
        assert_eq!("pid".parse(), Ok(SharedNamespace::Pid));
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        for name in ["net", "mnt", "IPC", "", "ipc "] {
            let error = name.parse::<SharedNamespace>().unwrap_err();
            assert_eq!(error.name, name);
            assert!(error.to_string().contains(&format!("{name:?}")), "{error}");
        }
    }
}
