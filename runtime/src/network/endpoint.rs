//! A container's place on the bridge and its lifecycle: reserved when the container is created
//! (address and published ports recorded under the state root), attached when its VM starts
//! (bridge, NAT table, TAP, port forwards), detached when the VM ends (TAP and forwards gone),
//! released on `rm`. Detaching and releasing are idempotent, so `rm` of a container whose
//! monitor died cleans up what it left.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::Path;

use rvm_protocol::agent::{ConfigureNetworkRequest, Dns, HostEntry, Interface, Route};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::bridge::{self, BridgeError};
use super::dns;
use super::forward::MetadataPolicy;
use super::guard;
use super::ipam::{Ipam, IpamError};
use super::nat::{self, NatError};
use super::ports::{PortMapping, Protocol};
use super::tap::{self, TapError};
use super::{GATEWAY, MTU, PREFIX};
use crate::sandbox::files::Lock;

/// Serialises the host-global set-up (bridge, nftables table) between rvm processes.
const HOST_LOCK: &str = "/run/rvm.network.lock";

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Nat(#[from] NatError),
    #[error("Bind for {address} failed: port is already allocated ({source})")]
    PortInUse {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot lock {HOST_LOCK}: {0}")]
    Lock(std::io::Error),
}

/// A container's interface on the bridge, fixed at create time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub tap: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

impl Endpoint {
    /// `tap=NAME,mac=MAC` for `rvm-vmm --net`.
    pub fn vmm_arg(&self) -> String {
        format!("tap={},mac={}", self.tap, self.mac)
    }

    /// The published ports as `docker ps` shows them.
    pub fn ports_text(&self) -> String {
        self.ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Refuses a host port some host socket is bound to.
fn check_host_ports(ports: &[PortMapping]) -> Result<(), NetworkError> {
    for port in ports {
        let address = SocketAddrV4::new(port.host_ip, port.host_port);
        let probe = match port.protocol {
            Protocol::Tcp => TcpListener::bind(address).map(drop),
            Protocol::Udp => UdpSocket::bind(address).map(drop),
        };
        if let Err(source) = probe {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                return Err(NetworkError::PortInUse {
                    address: address.to_string(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Reserves an address and the published ports for container `id` under the state `root`.
pub fn reserve(root: &Path, id: &str, ports: &[PortMapping]) -> Result<Endpoint, NetworkError> {
    check_host_ports(ports)?;
    let ip = Ipam::new(root).allocate(id, ports)?;
    Ok(Endpoint {
        ip,
        prefix: PREFIX,
        gateway: GATEWAY,
        mac: tap::mac_address(id),
        tap: tap::tap_name(id),
        ports: ports.to_vec(),
    })
}

/// Wires the container's VM to the bridge before it boots: the bridge and NAT table (created
/// on first use), its TAP, its port forwards. On failure nothing of it is left behind.
pub async fn attach(root: &Path, id: &str, endpoint: &Endpoint) -> Result<(), NetworkError> {
    let result = attach_inner(root, id, endpoint).await;
    if result.is_err() {
        detach(root, id, endpoint);
    }
    result
}

async fn attach_inner(root: &Path, id: &str, endpoint: &Endpoint) -> Result<(), NetworkError> {
    let handle = bridge::connect()?;
    {
        let _lock = Lock::exclusive(Path::new(HOST_LOCK)).map_err(NetworkError::Lock)?;
        let bridge_index = bridge::ensure_bridge(&handle).await?;
        nat::ensure_table(MetadataPolicy::from_env().map_err(NatError::from)?)?;
        guard::ensure_table()?;
        // Before the TAP exists: its first frame is already judged.
        guard::allow(&endpoint.tap, &endpoint.mac, endpoint.ip)?;
        tap::create(&endpoint.tap)?;
        bridge::attach(&handle, &endpoint.tap, bridge_index).await?;
    }
    check_host_ports(&endpoint.ports)?;
    nat::add_forwards(&endpoint.ports, endpoint.ip)?;
    Ipam::new(root).set_forwarded(id, true)?;
    tracing::info!(ip = %endpoint.ip, tap = %endpoint.tap, ports = %endpoint.ports_text(), "network attached");
    Ok(())
}

/// Takes the VM off the bridge: deletes its TAP and its port forwards (only if this container
/// installed them: the port may belong to another container by now). Errors are logged.
pub fn detach(root: &Path, id: &str, endpoint: &Endpoint) {
    if let Err(err) = tap::delete(&endpoint.tap) {
        tracing::warn!(%err, "cannot delete the container's TAP");
    }
    guard::forget(&endpoint.tap, &endpoint.mac, endpoint.ip);
    match Ipam::new(root).set_forwarded(id, false) {
        Ok(true) => nat::remove_forwards(&endpoint.ports, endpoint.ip),
        Ok(false) => {}
        Err(err) => tracing::warn!(%err, "cannot read the container's port forwards"),
    }
}

/// Detaches the container and frees its address and ports (`rm`).
pub fn release(root: &Path, id: &str, endpoint: &Endpoint) -> Result<(), NetworkError> {
    detach(root, id, endpoint);
    Ipam::new(root).release(id)?;
    Ok(())
}

/// The ConfigureNetwork request for the agent: eth0 with the address, a default route via the
/// bridge, the host's DNS (see [`dns`]) and the hosts entries Docker writes.
pub fn configure_request(endpoint: &Endpoint, hostname: &str) -> ConfigureNetworkRequest {
    let resolv = dns::container_resolv_conf();
    let mut hosts = vec![
        host_entry("127.0.0.1", &["localhost"]),
        host_entry("::1", &["localhost", "ip6-localhost", "ip6-loopback"]),
    ];
    if !hostname.is_empty() {
        hosts.push(host_entry(&endpoint.ip.to_string(), &[hostname]));
    }
    ConfigureNetworkRequest {
        interfaces: vec![Interface {
            name: "eth0".to_owned(),
            mac: endpoint.mac.clone(),
            mtu: MTU,
            addresses: vec![format!("{}/{}", endpoint.ip, endpoint.prefix)],
            ..Default::default()
        }],
        routes: vec![Route {
            destination: String::new(),
            gateway: endpoint.gateway.to_string(),
            device: "eth0".to_owned(),
            ..Default::default()
        }],
        dns: Some(Dns {
            servers: resolv.nameservers,
            searches: resolv.searches,
            options: resolv.options,
            ..Default::default()
        })
        .into(),
        hostname: hostname.to_owned(),
        hosts,
        ..Default::default()
    }
}

fn host_entry(ip: &str, names: &[&str]) -> HostEntry {
    HostEntry {
        ip: ip.to_owned(),
        names: names.iter().map(|name| (*name).to_owned()).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_gives_a_stable_tap_and_mac() {
        let root = tempfile::tempdir().unwrap();
        let id = "abcdef0123456789abcdef";
        let endpoint = reserve(root.path(), id, &[]).unwrap();
        assert_eq!(endpoint.ip, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(
            endpoint.vmm_arg(),
            "tap=rvmabcdef012345,mac=02:ab:cd:ef:01:23"
        );
        let request = configure_request(&endpoint, "web");
        assert_eq!(request.interfaces[0].addresses, ["10.88.0.2/16"]);
        assert_eq!(request.routes[0].gateway, "10.88.0.1");
        assert_eq!(request.hosts[2].names, ["web"]);
    }

    #[test]
    fn a_bound_host_port_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mapping = PortMapping::parse(&format!("127.0.0.1:{port}:80")).unwrap();
        let err = check_host_ports(&[mapping]).unwrap_err();
        assert!(
            err.to_string().contains("port is already allocated"),
            "{err}"
        );
    }
}
