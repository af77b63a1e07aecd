//! A pod's network namespace, as CNI left it, joined to the pod's VM: the pod's interface
//! (normally `eth0` of a veth pair) with its MAC, MTU, addresses and routes is read; a TAP is
//! created beside it; and tc redirects frames between the two (an ingress qdisc on each: on the
//! interface a match-all u32 filter with a mirred egress redirect to the TAP, on the TAP the
//! anti-spoofing filters of [`super::podguard`], which redirect only the pod's own frames), as
//! Kata's "tcfilter" model does. The VMM, started inside the namespace, opens the TAP; the guest's eth0 takes the interface's
//! MAC, addresses, routes and MTU, so the pod's address answers from inside the VM.
//!
//! All of it runs on a short-lived thread that joins the namespace (setns affects only the
//! calling thread), with a netlink connection opened there.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::packet_route::tc::TcHandle;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use thiserror::Error;

use rvm_protocol::agent::{ConfigureNetworkRequest, Dns, HostEntry, Interface, Route};

use super::dns::ResolvConf;
use super::podguard::{self, PodGuardError};
use super::tap::{self, TapError};

/// The TAP's name inside the pod's namespace (each pod has its own namespace).
pub const POD_TAP: &str = "tap0_rvm";
/// tc's handle of the ingress qdisc (`ffff:`).
const INGRESS_PARENT: u32 = 0xffff_0000;
/// ETH_P_ALL, in network byte order as tc expects the protocol.
const ALL_PROTOCOLS: u16 = (libc::ETH_P_ALL as u16).to_be();
/// The main routing table.
const MAIN_TABLE: u8 = 254;

#[derive(Debug, Error)]
pub enum PodNetError {
    #[error("cannot open network namespace {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Enter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start a runtime for netlink: {0}")]
    Runtime(std::io::Error),
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("netlink: cannot {action}: {source}")]
    Netlink {
        action: String,
        source: rtnetlink::Error,
    },
    #[error("network namespace {} has no interface besides lo (did CNI run?)", path.display())]
    NoInterface { path: PathBuf },
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Guard(#[from] PodGuardError),
    #[error("the thread working in network namespace {} panicked", path.display())]
    Thread { path: PathBuf },
}

/// A route of the pod's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRoute {
    /// CIDR; empty for the default route.
    pub destination: String,
    /// Empty for a directly connected route.
    pub gateway: String,
}

/// What the guest's eth0 takes over from the pod's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// CIDRs, e.g. `10.99.0.5/24`.
    pub addresses: Vec<String>,
    pub routes: Vec<PodRoute>,
}

impl PodInterface {
    /// The ConfigureNetwork request that gives the guest's eth0 this interface's identity,
    /// with the pod's hostname and, when the pod has them (CRI writes both), its resolv.conf
    /// and hosts file.
    pub fn configure_request(
        &self,
        hostname: &str,
        resolv_conf: Option<&str>,
        hosts: Option<&str>,
    ) -> ConfigureNetworkRequest {
        let dns = resolv_conf.map(ResolvConf::parse).map(|resolv| Dns {
            servers: resolv.nameservers,
            searches: resolv.searches,
            options: resolv.options,
            ..Default::default()
        });
        ConfigureNetworkRequest {
            interfaces: vec![Interface {
                name: "eth0".to_owned(),
                mac: self.mac.clone(),
                mtu: self.mtu,
                addresses: self.addresses.clone(),
                ..Default::default()
            }],
            routes: self
                .routes
                .iter()
                .map(|route| Route {
                    destination: route.destination.clone(),
                    gateway: route.gateway.clone(),
                    device: "eth0".to_owned(),
                    ..Default::default()
                })
                .collect(),
            dns: dns.into(),
            hostname: hostname.to_owned(),
            hosts: hosts.map(parse_hosts).unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// The entries of a hosts file (`IP NAME...` lines; comments and blank lines skipped).
fn parse_hosts(text: &str) -> Vec<HostEntry> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let ip = words.next()?;
            let names: Vec<String> = words.map(str::to_owned).collect();
            (!names.is_empty()).then(|| HostEntry {
                ip: ip.to_owned(),
                names,
                ..Default::default()
            })
        })
        .collect()
}

/// Reads the pod's interface in namespace `netns` and joins it to a new TAP [`POD_TAP`]
/// there. Undone by [`disconnect`] (or by the namespace's removal).
pub fn connect(netns: &Path) -> Result<PodInterface, PodNetError> {
    in_namespace(netns, |handle| async move {
        let interface = pod_link(&handle).await?;
        let Some((index, link)) = interface else {
            return Err(PodNetError::NoInterface {
                path: netns.to_owned(),
            });
        };
        let read = read_interface(&handle, index, link).await?;
        tap::create(POD_TAP)?;
        let tap = link_index(&handle, POD_TAP)
            .await?
            .ok_or_else(|| PodNetError::NoInterface {
                path: netns.to_owned(),
            })?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(tap).mtu(read.mtu).up().build())
            .execute()
            .await
            .map_err(netlink(format!("bring up {POD_TAP}")))?;
        redirect(&handle, index, tap, &read.name).await?;
        // The way out of the VM: only what carries the pod's own MAC and addresses.
        podguard::apply(POD_TAP, &read.name, &read.mac, &read.addresses)?;
        tracing::info!(interface = %read.name, mac = %read.mac, addresses = ?read.addresses, "pod network joined to {POD_TAP}");
        Ok(read)
    })
}

/// Removes the TAP and the pod interface's ingress qdisc (its filters go with it). Errors are
/// logged: the namespace may already be gone, which removes everything anyway.
pub fn disconnect(netns: &Path) {
    if !netns.exists() {
        return;
    }
    let result = in_namespace(netns, |handle| async move {
        if let Some((index, _)) = pod_link(&handle).await? {
            let mut request = handle.qdisc().del(index as i32);
            request.message_mut().header.parent = TcHandle::INGRESS;
            let _ = request.execute().await;
        }
        tap::delete(POD_TAP)?;
        Ok(())
    });
    if let Err(err) = result {
        tracing::warn!(netns = %netns.display(), %err, "cannot undo the pod network's TAP");
    }
}

/// Runs `work` with a netlink handle on a thread inside namespace `netns`.
fn in_namespace<T, F, Fut>(netns: &Path, work: F) -> Result<T, PodNetError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, PodNetError>>,
{
    let namespace = File::open(netns).map_err(|source| PodNetError::Open {
        path: netns.to_owned(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(&namespace).map_err(|source| PodNetError::Enter {
                    path: netns.to_owned(),
                    source,
                })?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(PodNetError::Runtime)?;
                runtime.block_on(async {
                    let (connection, handle, _) =
                        rtnetlink::new_connection().map_err(PodNetError::Connect)?;
                    tokio::spawn(connection);
                    work(handle).await
                })
            })
            .join()
            .map_err(|_| PodNetError::Thread {
                path: netns.to_owned(),
            })?
    })
}

/// Moves the calling thread into the network namespace `namespace`.
fn enter(namespace: &File) -> std::io::Result<()> {
    // SAFETY: setns reads only its two integer arguments; `namespace` is an open file for the
    // whole call, and a file that is not a network namespace makes it fail with EINVAL.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn netlink(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> PodNetError {
    let action = action.into();
    move |source| PodNetError::Netlink { action, source }
}

/// The pod's interface: the first link that is neither loopback nor our TAP.
async fn pod_link(handle: &Handle) -> Result<Option<(u32, LinkMessage)>, PodNetError> {
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await.map_err(netlink("list links"))? {
        let name = link_name(&link).unwrap_or_default();
        if link.header.link_layer_type != LinkLayerType::Loopback && name != POD_TAP {
            return Ok(Some((link.header.index, link)));
        }
    }
    Ok(None)
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, PodNetError> {
    let mut links = handle.link().get().execute();
    while let Some(link) = links.try_next().await.map_err(netlink("list links"))? {
        if link_name(&link).as_deref() == Some(name) {
            return Ok(Some(link.header.index));
        }
    }
    Ok(None)
}

/// The interface's name, MAC, MTU, global addresses and IPv4 routes of the main table.
async fn read_interface(
    handle: &Handle,
    index: u32,
    link: LinkMessage,
) -> Result<PodInterface, PodNetError> {
    let name = link_name(&link).unwrap_or_default();
    let mut mac = String::new();
    let mut mtu = 0;
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::Address(bytes) => mac = format_mac(bytes),
            LinkAttribute::Mtu(value) => mtu = *value,
            _ => {}
        }
    }
    let mut addresses = Vec::new();
    let mut found = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(message) = found
        .try_next()
        .await
        .map_err(netlink(format!("list the addresses of {name}")))?
    {
        addresses.extend(global_address(&message));
    }
    let mut routes = Vec::new();
    let mut found = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(message) = found.try_next().await.map_err(netlink("list the routes"))? {
        routes.extend(pod_route(&message, index));
    }
    Ok(PodInterface {
        name,
        mac,
        mtu,
        addresses,
        routes,
    })
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `ip/prefix` of an address of universe scope (not link-local).
fn global_address(message: &AddressMessage) -> Option<String> {
    if message.header.scope != AddressScope::Universe {
        return None;
    }
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            AddressAttribute::Address(ip) => Some(format!("{ip}/{}", message.header.prefix_len)),
            _ => None,
        })
}

/// A main-table route through interface `index` that the guest must add itself: not the
/// kernel's own subnet route (the guest's kernel makes that from the address).
fn pod_route(message: &RouteMessage, index: u32) -> Option<PodRoute> {
    if message.header.protocol == RouteProtocol::Kernel {
        return None;
    }
    let mut table = u32::from(message.header.table);
    let mut destination = None;
    let mut gateway = String::new();
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(value) => table = *value,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = ip.to_string(),
            RouteAttribute::Oif(value) => oif = Some(*value),
            _ => {}
        }
    }
    if table != u32::from(MAIN_TABLE) || oif != Some(index) {
        return None;
    }
    let destination = match destination {
        Some(ip) => format!(
            "{}/{}",
            IpAddr::V4(ip),
            message.header.destination_prefix_length
        ),
        None => String::new(),
    };
    Some(PodRoute {
        destination,
        gateway,
    })
}

/// Every frame arriving on `from` leaves through `to`: an ingress qdisc on `from` and a
/// match-all u32 filter with a mirred egress redirect.
async fn redirect(handle: &Handle, from: u32, to: u32, name: &str) -> Result<(), PodNetError> {
    handle
        .qdisc()
        .add(from as i32)
        .ingress()
        .execute()
        .await
        .map_err(netlink(format!("add an ingress qdisc to {name}")))?;
    handle
        .traffic_filter(from as i32)
        .add()
        .parent(INGRESS_PARENT)
        .protocol(ALL_PROTOCOLS)
        .redirect(to)
        .map_err(netlink(format!("build the redirect filter of {name}")))?
        .execute()
        .await
        .map_err(netlink(format!("add the redirect filter to {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_colon_separated_hex() {
        assert_eq!(
            format_mac(&[0x0a, 0x58, 0, 1, 0xfe, 0xff]),
            "0a:58:00:01:fe:ff"
        );
    }

    #[test]
    fn hosts_files_become_entries() {
        let entries = parse_hosts(
            "# a comment\n127.0.0.1 localhost\n\n::1 localhost ip6-localhost # x\n10.0.0.1\n",
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].ip, "::1");
        assert_eq!(entries[1].names, ["localhost", "ip6-localhost"]);
    }

    #[test]
    fn the_guest_takes_the_interface_identity() {
        let interface = PodInterface {
            name: "eth0".into(),
            mac: "0a:58:0a:63:00:05".into(),
            mtu: 1450,
            addresses: vec!["10.99.0.5/24".into()],
            routes: vec![PodRoute {
                destination: String::new(),
                gateway: "10.99.0.1".into(),
            }],
        };
        let request = interface.configure_request("pod", Some("nameserver 10.0.0.2\n"), None);
        assert_eq!(request.interfaces[0].mac, "0a:58:0a:63:00:05");
        assert_eq!(request.interfaces[0].mtu, 1450);
        assert_eq!(request.routes[0].gateway, "10.99.0.1");
        assert_eq!(request.dns.servers, ["10.0.0.2"]);
        assert_eq!(request.hostname, "pod");
    }

    #[test]
    fn protocol_is_eth_p_all_in_network_order() {
        assert_eq!(ALL_PROTOCOLS.to_ne_bytes(), [0x00, 0x03]);
    }
}
