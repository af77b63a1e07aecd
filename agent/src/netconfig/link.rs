//! Configures the guest's interfaces through netlink (rtnetlink): the link found by its MAC
//! (named as the host asked), its MTU, up, its addresses, and the routes (a default route via
//! the bridge). IPv4 only, as the host's bridge is.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use rvm_protocol::agent::{ConfigureNetworkRequest, Interface, Route};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("netlink: cannot {action} {target}: {source}")]
    Netlink {
        action: &'static str,
        target: String,
        source: rtnetlink::Error,
    },
    #[error("no interface with MAC {mac} or name {name}")]
    NoLink { mac: String, name: String },
    #[error("invalid {what} {text:?}")]
    Invalid { what: &'static str, text: String },
}

/// Applies the interfaces and routes of `request`.
pub async fn apply(request: &ConfigureNetworkRequest) -> Result<(), LinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Connect)?;
    let task = tokio::spawn(connection);
    let result = apply_with(&handle, request).await;
    task.abort();
    result
}

async fn apply_with(handle: &Handle, request: &ConfigureNetworkRequest) -> Result<(), LinkError> {
    for interface in &request.interfaces {
        configure_interface(handle, interface).await?;
    }
    for route in &request.routes {
        add_route(handle, route).await?;
    }
    Ok(())
}

fn exists(error: &rtnetlink::Error) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

fn parse_mac(text: &str) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16).ok())
        .collect::<Option<_>>()?;
    (bytes.len() == 6).then_some(bytes)
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

/// The link with MAC `mac`, else the one named `name`: (index, current name).
async fn find_link(handle: &Handle, mac: &str, name: &str) -> Result<(u32, String), LinkError> {
    let wanted = parse_mac(mac);
    let mut links = handle.link().get().execute();
    let mut by_name = None;
    while let Some(link) = links
        .try_next()
        .await
        .map_err(|source| LinkError::Netlink {
            action: "list",
            target: "links".to_owned(),
            source,
        })?
    {
        let current = link_name(&link).unwrap_or_default().to_owned();
        let mac_matches = link.attributes.iter().any(|a| match a {
            LinkAttribute::Address(bytes) => Some(bytes) == wanted.as_ref(),
            _ => false,
        });
        if mac_matches {
            return Ok((link.header.index, current));
        }
        if !name.is_empty() && current == name {
            by_name = Some((link.header.index, current));
        }
    }
    by_name.ok_or_else(|| LinkError::NoLink {
        mac: mac.to_owned(),
        name: name.to_owned(),
    })
}

async fn configure_interface(handle: &Handle, interface: &Interface) -> Result<(), LinkError> {
    let (index, current) = find_link(handle, &interface.mac, &interface.name).await?;
    let netlink = |action: &'static str| {
        let target = current.clone();
        move |source| LinkError::Netlink {
            action,
            target,
            source,
        }
    };
    let mut message = LinkUnspec::new_with_index(index);
    if !interface.name.is_empty() && interface.name != current {
        message = message.name(interface.name.clone());
    }
    if interface.mtu > 0 {
        message = message.mtu(interface.mtu);
    }
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .map_err(netlink("rename or set the MTU of"))?;
    for cidr in &interface.addresses {
        let (ip, prefix) = parse_cidr(cidr)?;
        match handle.address().add(index, ip, prefix).execute().await {
            Err(error) if !exists(&error) => return Err(netlink("add an address to")(error)),
            _ => {}
        }
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink("bring up"))?;
    tracing::info!(link = %interface.name, addresses = ?interface.addresses, "interface configured");
    Ok(())
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), LinkError> {
    let invalid = || LinkError::Invalid {
        what: "address",
        text: text.to_owned(),
    };
    let (ip, prefix) = text.split_once('/').ok_or_else(invalid)?;
    let ip: IpAddr = ip.parse().map_err(|_| invalid())?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(invalid());
    }
    Ok((ip, prefix))
}

async fn add_route(handle: &Handle, route: &Route) -> Result<(), LinkError> {
    let invalid = |what, text: &str| LinkError::Invalid {
        what,
        text: text.to_owned(),
    };
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new();
    if !route.destination.is_empty() {
        match parse_cidr(&route.destination)? {
            (IpAddr::V4(ip), prefix) => builder = builder.destination_prefix(ip, prefix),
            _ => return Err(invalid("IPv4 route destination", &route.destination)),
        }
    }
    if !route.gateway.is_empty() {
        let gateway: Ipv4Addr = route
            .gateway
            .parse()
            .map_err(|_| invalid("IPv4 gateway", &route.gateway))?;
        builder = builder.gateway(gateway);
    }
    if !route.device.is_empty() {
        let (index, _) = find_link(handle, "", &route.device).await?;
        builder = builder.output_interface(index);
    }
    if !route.source.is_empty() {
        let source: Ipv4Addr = route
            .source
            .parse()
            .map_err(|_| invalid("IPv4 source", &route.source))?;
        builder = builder.pref_source(source);
    }
    match handle.route().add(builder.build()).execute().await {
        Err(error) if !exists(&error) => Err(LinkError::Netlink {
            action: "add the route to",
            target: if route.destination.is_empty() {
                "default".to_owned()
            } else {
                route.destination.clone()
            },
            source: error,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_macs_and_cidrs() {
        assert_eq!(
            parse_mac("02:ab:cd:ef:01:23"),
            Some(vec![2, 0xab, 0xcd, 0xef, 1, 0x23])
        );
        assert_eq!(parse_mac("02:ab"), None);
        assert_eq!(
            parse_cidr("10.88.0.2/16").unwrap(),
            ("10.88.0.2".parse().unwrap(), 16)
        );
        assert!(parse_cidr("10.88.0.2").is_err());
        assert!(parse_cidr("10.88.0.2/33").is_err());
    }
}
