//! `rvm port CONTAINER [PRIVATE_PORT[/PROTO]]`: the running container's published ports, as
//! Docker prints them (`80/tcp -> 0.0.0.0:8080`, or only `0.0.0.0:8080` for one given port).

use anyhow::{bail, Context, Result};
use clap::Args;
use rvm_runtime::network::{PortMapping, Protocol};
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::Status;

use super::common::{report, EXIT_FAILED};
use super::container;

#[derive(Debug, Args)]
pub struct PortArgs {
    container: String,
    /// A container port, with /tcp (the default) or /udp
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    private_port: Option<String>,
}

pub fn main(layout: &Layout, args: PortArgs) -> i32 {
    match port(layout, &args) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            0
        }
        Err(err) => report(&err, EXIT_FAILED),
    }
}

fn port(layout: &Layout, args: &PortArgs) -> Result<Vec<String>> {
    let containers = container::open(layout)?;
    let found = container::find(&containers, &args.container)?;
    let filter = args
        .private_port
        .as_deref()
        .map(parse_private)
        .transpose()?;
    // Ports are published while the container runs (as Docker's bindings are).
    let published = match (&found.config.endpoint, found.state.status()) {
        (Some(endpoint), Status::Running) => endpoint.ports.as_slice(),
        _ => &[],
    };
    lines(published, filter, &args.container)
}

/// `80`, `80/tcp` or `53/udp`.
fn parse_private(text: &str) -> Result<(u16, Protocol)> {
    let (number, protocol) = match text.split_once('/') {
        None => (text, Protocol::Tcp),
        Some((number, "tcp")) => (number, Protocol::Tcp),
        Some((number, "udp")) => (number, Protocol::Udp),
        Some((_, other)) => bail!("invalid protocol {other:?} in {text:?}: tcp or udp"),
    };
    let number = number
        .parse::<u16>()
        .ok()
        .filter(|n| *n != 0)
        .with_context(|| format!("invalid port {text:?}: a number from 1 to 65535"))?;
    Ok((number, protocol))
}

/// Docker's lines for `published`, all of them or those of one container port.
fn lines(
    published: &[PortMapping],
    filter: Option<(u16, Protocol)>,
    name: &str,
) -> Result<Vec<String>> {
    let host = |p: &PortMapping| format!("{}:{}", p.host_ip, p.host_port);
    let Some((number, protocol)) = filter else {
        return Ok(published
            .iter()
            .map(|p| {
                let private = format!("{}/{}", p.container_port, p.protocol.as_str());
                format!("{private} -> {}", host(p))
            })
            .collect());
    };
    let found: Vec<String> = published
        .iter()
        .filter(|p| p.container_port == number && p.protocol == protocol)
        .map(host)
        .collect();
    if found.is_empty() {
        bail!(
            "No public port '{number}/{}' published for {name}",
            protocol.as_str()
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Vec<PortMapping> {
        ["8080:80", "127.0.0.1:5353:53/udp", "8443:443"]
            .iter()
            .map(|text| PortMapping::parse(text).unwrap())
            .collect()
    }

    #[test]
    fn every_published_port_as_docker_prints_it() {
        assert_eq!(
            lines(&published(), None, "web").unwrap(),
            [
                "80/tcp -> 0.0.0.0:8080",
                "53/udp -> 127.0.0.1:5353",
                "443/tcp -> 0.0.0.0:8443"
            ]
        );
        assert!(lines(&[], None, "web").unwrap().is_empty());
    }

    #[test]
    fn one_private_port() {
        let one = |text| lines(&published(), Some(parse_private(text).unwrap()), "web");
        assert_eq!(one("80").unwrap(), ["0.0.0.0:8080"]);
        assert_eq!(one("53/udp").unwrap(), ["127.0.0.1:5353"]);
        let error = one("53").unwrap_err().to_string();
        assert_eq!(error, "No public port '53/tcp' published for web");
    }

    #[test]
    fn bad_private_ports_are_named() {
        for bad in ["0", "65536", "http", "80/sctp", ""] {
            let error = parse_private(bad).unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
    }
}
