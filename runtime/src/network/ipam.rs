//! Address management: one IPv4 address of the bridge subnet per container, and its published
//! ports, recorded in `<root>/network/allocations.json` under an exclusive lock and replaced
//! atomically, so that a crash never loses or doubles an allocation. Released on `rm`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::ports::PortMapping;
use super::{GATEWAY, PREFIX};
use crate::host::private;
use crate::sandbox::files::{write_atomic, Lock};

#[derive(Debug, Error)]
pub enum IpamError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{} is corrupt: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no free address left in the rvm0 subnet {}", super::subnet())]
    Exhausted,
    #[error("Bind for {port} failed: port is already allocated (container {owner})")]
    PortTaken { port: String, owner: String },
}

/// What one container holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The container's port forwards are installed in nftables (so removing them is ours to do).
    #[serde(default)]
    pub forwarded: bool,
}

/// The allocations under one state root, by container ID.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
}

type Table = BTreeMap<String, Allocation>;

impl Ipam {
    /// The allocations of the state root `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("network"),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join("allocations.json")
    }

    /// Runs `change` on the table under the lock and writes it back if it returned true.
    fn with_table<T>(
        &self,
        change: impl FnOnce(&mut Table) -> Result<(T, bool), IpamError>,
    ) -> Result<T, IpamError> {
        private::create_dir_all(&self.dir).map_err(|source| IpamError::Io {
            action: "create",
            path: self.dir.clone(),
            source,
        })?;
        let lock_path = self.dir.join("allocations.lock");
        let _lock = Lock::exclusive(&lock_path).map_err(|source| IpamError::Io {
            action: "lock",
            path: lock_path.clone(),
            source,
        })?;
        let file = self.file();
        let mut table: Table = match fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| IpamError::Corrupt {
                path: file.clone(),
                source,
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Table::new(),
            Err(source) => {
                return Err(IpamError::Io {
                    action: "read",
                    path: file,
                    source,
                })
            }
        };
        let (result, changed) = change(&mut table)?;
        if changed {
            let bytes = serde_json::to_vec_pretty(&table).map_err(|source| IpamError::Corrupt {
                path: file.clone(),
                source,
            })?;
            write_atomic(&file, &bytes).map_err(|source| IpamError::Io {
                action: "write",
                path: file,
                source,
            })?;
        }
        Ok(result)
    }

    /// Gives container `id` a free address and records its published ports; a host port that
    /// another container of this root publishes is refused. Asking again returns the same address.
    pub fn allocate(&self, id: &str, ports: &[PortMapping]) -> Result<Ipv4Addr, IpamError> {
        self.with_table(|table| {
            if let Some(existing) = table.get(id) {
                return Ok((existing.ip, false));
            }
            for (owner, allocation) in table.iter() {
                for port in ports {
                    if allocation.ports.iter().any(|p| p.conflicts_with(port)) {
                        return Err(IpamError::PortTaken {
                            port: format!("{}:{}", port.host_ip, port.host_port),
                            owner: crate::sandbox::id::short(owner).to_owned(),
                        });
                    }
                }
            }
            let ip = first_free(table).ok_or(IpamError::Exhausted)?;
            table.insert(
                id.to_owned(),
                Allocation {
                    ip,
                    ports: ports.to_vec(),
                    forwarded: false,
                },
            );
            Ok((ip, true))
        })
    }

    /// The allocation of container `id`, if any.
    pub fn get(&self, id: &str) -> Result<Option<Allocation>, IpamError> {
        self.with_table(|table| Ok((table.get(id).cloned(), false)))
    }

    /// Records whether the forwards of `id` are installed; returns the previous value.
    pub fn set_forwarded(&self, id: &str, forwarded: bool) -> Result<bool, IpamError> {
        self.with_table(|table| match table.get_mut(id) {
            Some(allocation) => {
                let before = allocation.forwarded;
                allocation.forwarded = forwarded;
                Ok((before, before != forwarded))
            }
            None => Ok((false, false)),
        })
    }

    /// Frees the address and ports of `id`; returns what it held.
    pub fn release(&self, id: &str) -> Result<Option<Allocation>, IpamError> {
        self.with_table(|table| {
            let removed = table.remove(id);
            let changed = removed.is_some();
            Ok((removed, changed))
        })
    }

    /// Every allocation, by container ID.
    pub fn list(&self) -> Result<BTreeMap<String, Allocation>, IpamError> {
        self.with_table(|table| Ok((table.clone(), false)))
    }
}

/// The lowest address of the subnet that is neither the network, the gateway, the broadcast
/// address nor taken.
fn first_free(table: &Table) -> Option<Ipv4Addr> {
    let mask = u32::MAX << (32 - u32::from(PREFIX));
    let network = u32::from(GATEWAY) & mask;
    let broadcast = network | !mask;
    let taken: std::collections::BTreeSet<Ipv4Addr> = table.values().map(|a| a.ip).collect();
    (network + 1..broadcast)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != GATEWAY && !taken.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_addresses_and_reuses_released_ones() {
        let root = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(root.path());
        let a = ipam.allocate("a", &[]).unwrap();
        let b = ipam.allocate("b", &[]).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 88, 0, 3));
        assert_eq!(ipam.allocate("a", &[]).unwrap(), a);
        assert_eq!(ipam.release("a").unwrap().unwrap().ip, a);
        assert!(ipam.release("a").unwrap().is_none());
        assert_eq!(ipam.allocate("c", &[]).unwrap(), a);
        // A fresh view of the same root sees the same table.
        assert_eq!(Ipam::new(root.path()).get("b").unwrap().unwrap().ip, b);
    }

    #[test]
    fn refuses_a_host_port_published_by_another_container() {
        let root = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(root.path());
        let web = PortMapping::parse("8080:80").unwrap();
        ipam.allocate("web", &[web]).unwrap();
        let again = PortMapping::parse("127.0.0.1:8080:81").unwrap();
        let err = ipam.allocate("other", &[again]).unwrap_err();
        assert!(
            err.to_string().contains("port is already allocated"),
            "{err}"
        );
        assert!(ipam.get("other").unwrap().is_none());
        ipam.allocate("other", &[PortMapping::parse("8081:80").unwrap()])
            .unwrap();
    }

    #[test]
    fn forwarded_flag_reports_the_previous_value() {
        let root = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(root.path());
        ipam.allocate("a", &[]).unwrap();
        assert!(!ipam.set_forwarded("a", true).unwrap());
        assert!(ipam.set_forwarded("a", false).unwrap());
        assert!(!ipam.set_forwarded("missing", true).unwrap());
    }
}
