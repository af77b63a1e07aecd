//! Published ports (`-p [IP:]HOST:CONTAINER[/tcp|udp]`): parsing and Docker's way of showing
//! them (`0.0.0.0:8080->80/tcp`).

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid port mapping {text:?}: {reason}")]
pub struct PortError {
    pub text: String,
    pub reason: String,
}

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port: traffic to `host_ip:host_port` (any local address when `host_ip` is
/// 0.0.0.0) goes to the container's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// Parses `-p` text: `HOST:CONTAINER`, `IP:HOST:CONTAINER`, each with an optional
    /// `/tcp` or `/udp`.
    pub fn parse(text: &str) -> Result<Self, PortError> {
        let error = |reason: &str| PortError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return Err(error("the protocol must be tcp or udp")),
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [host, container] => (Ipv4Addr::UNSPECIFIED, *host, *container),
            [ip, host, container] => {
                let ip = if ip.is_empty() {
                    Ipv4Addr::UNSPECIFIED
                } else {
                    ip.parse()
                        .map_err(|_| error("the host IP must be an IPv4 address"))?
                };
                (ip, *host, *container)
            }
            [_] => {
                return Err(error(
                    "a host port is needed (HOST:CONTAINER); rvm does not pick random ports",
                ))
            }
            _ => return Err(error("expected [IP:]HOST:CONTAINER[/tcp|udp]")),
        };
        let port = |text: &str, which: &str| {
            text.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| error(&format!("the {which} port must be 1-65535")))
        };
        Ok(Self {
            host_ip,
            host_port: port(host_port, "host")?,
            container_port: port(container_port, "container")?,
            protocol,
        })
    }

    /// Whether both mappings want the same host port (a wildcard IP overlaps every address).
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip,
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!(p.to_string(), "0.0.0.0:8080->80/tcp");
        let p = PortMapping::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:5353->53/udp");
        assert_eq!(
            PortMapping::parse(":81:80/tcp").unwrap().host_ip,
            Ipv4Addr::UNSPECIFIED
        );
    }

    #[test]
    fn refuses_bad_mappings() {
        for bad in [
            "80",
            "0:80",
            "8080:70000",
            "a:80",
            "8080:80/sctp",
            "x:1:2",
            "1:2:3:4",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn wildcard_conflicts_with_any_address() {
        let any = PortMapping::parse("8080:80").unwrap();
        let local = PortMapping::parse("127.0.0.1:8080:81").unwrap();
        let other = PortMapping::parse("127.0.0.2:8080:81").unwrap();
        let udp = PortMapping::parse("8080:80/udp").unwrap();
        assert!(any.conflicts_with(&local));
        assert!(!local.conflicts_with(&other));
        assert!(!any.conflicts_with(&udp));
    }
}
