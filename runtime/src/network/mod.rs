//! Bridge networking of containers (Docker's default `--network bridge`): the host bridge
//! `rvm0` with NAT to the uplink, addresses handed out per container, a TAP per VM on the
//! bridge, and published ports forwarded by nftables.
//!
//! The subnet is 10.88.0.0/16 with the bridge at 10.88.0.1 (the range podman's default network
//! uses, clear of Docker's 172.17.0.0/16). The bridge and the nftables table `ip rvm` are
//! host-global; address allocations live under the state root.

pub mod bridge;
pub mod dns;
pub mod endpoint;
pub mod forward;
pub mod guard;
pub mod ipam;
pub mod nat;
pub mod podguard;
pub mod podnet;
pub mod ports;
pub mod tap;

use std::net::Ipv4Addr;

pub use endpoint::{Endpoint, NetworkError};
pub use ports::{PortMapping, Protocol};

/// The host bridge every networked container's TAP is attached to.
pub const BRIDGE: &str = "rvm0";
/// The bridge's address: the containers' gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// The prefix length of the containers' subnet.
pub const PREFIX: u8 = 16;
/// The MTU of the bridge, the TAPs and the guests' eth0.
pub const MTU: u32 = 1500;

/// The containers' subnet as `a.b.c.d/len`.
pub fn subnet() -> String {
    let mask = u32::MAX << (32 - u32::from(PREFIX));
    let network = Ipv4Addr::from(u32::from(GATEWAY) & mask);
    format!("{network}/{PREFIX}")
}
