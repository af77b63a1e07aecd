//! The host bridge `rvm0`, created on first use through netlink (rtnetlink): the gateway
//! address, up, IPv4 forwarding on, and `route_localnet` so that ports published on
//! 127.0.0.1 can be forwarded to containers; and the attaching of a TAP to it.

use std::fs;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use thiserror::Error;

use super::{BRIDGE, GATEWAY, MTU, PREFIX};

const EEXIST: i32 = libc::EEXIST;

#[derive(Debug, Error)]
pub enum BridgeError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("netlink: cannot {action} {link}: {source}")]
    Netlink {
        action: &'static str,
        link: String,
        source: rtnetlink::Error,
    },
    #[error("link {0} not found")]
    NoLink(String),
    #[error("cannot set {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
}

/// A netlink connection, its task running on the current tokio runtime.
pub fn connect() -> Result<Handle, BridgeError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(BridgeError::Connect)?;
    tokio::spawn(connection);
    Ok(handle)
}

fn exists(error: &rtnetlink::Error) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(message) if message.raw_code() == -EEXIST)
}

/// The index of link `name`, if it exists.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, BridgeError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        // A name that matches nothing is reported as ENODEV.
        Err(rtnetlink::Error::NetlinkError(message)) if message.raw_code() == -libc::ENODEV => {
            Ok(None)
        }
        Err(source) => Err(BridgeError::Netlink {
            action: "look up",
            link: name.to_owned(),
            source,
        }),
    }
}

/// Creates `rvm0` unless it exists, gives it the gateway address, brings it up and turns on
/// forwarding. Returns the bridge's index.
pub async fn ensure_bridge(handle: &Handle) -> Result<u32, BridgeError> {
    let netlink = |action| {
        move |source| BridgeError::Netlink {
            action,
            link: BRIDGE.to_owned(),
            source,
        }
    };
    if link_index(handle, BRIDGE).await?.is_none() {
        let add = handle
            .link()
            .add(LinkBridge::new(BRIDGE).mtu(MTU).build())
            .execute()
            .await;
        match add {
            Err(error) if !exists(&error) => return Err(netlink("create")(error)),
            _ => {}
        }
    }
    let index = link_index(handle, BRIDGE)
        .await?
        .ok_or_else(|| BridgeError::NoLink(BRIDGE.to_owned()))?;
    let add = handle
        .address()
        .add(index, IpAddr::V4(GATEWAY), PREFIX)
        .execute()
        .await;
    match add {
        Err(error) if !exists(&error) => return Err(netlink("add the gateway address to")(error)),
        _ => {}
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink("bring up"))?;
    sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    sysctl(
        &format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"),
        "1",
    )?;
    // Guests get no IPv6 (the bridge guard drops it): nothing on the bridge may configure the
    // host's routes through router advertisements. A host without IPv6 has no such file.
    let accept_ra = format!("/proc/sys/net/ipv6/conf/{BRIDGE}/accept_ra");
    if std::path::Path::new(&accept_ra).exists() {
        sysctl(&accept_ra, "0")?;
    }
    Ok(index)
}

/// Puts the link `name` on the bridge `bridge` and brings it up.
pub async fn attach(handle: &Handle, name: &str, bridge: u32) -> Result<(), BridgeError> {
    let index = link_index(handle, name)
        .await?
        .ok_or_else(|| BridgeError::NoLink(name.to_owned()))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge)
                .mtu(MTU)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|source| BridgeError::Netlink {
            action: "attach to rvm0",
            link: name.to_owned(),
            source,
        })
}

fn sysctl(path: &str, value: &str) -> Result<(), BridgeError> {
    if fs::read_to_string(path).is_ok_and(|current| current.trim() == value) {
        return Ok(());
    }
    fs::write(path, value).map_err(|source| BridgeError::Sysctl {
        path: path.to_owned(),
        source,
    })
}
