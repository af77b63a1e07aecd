//! The container's `/etc/resolv.conf` and `/etc/hosts`, as Docker writes them: the host's
//! resolv.conf, except that nameservers on loopback (systemd-resolved's 127.0.0.53, a local
//! dnsmasq) cannot be reached from the VM, so they are replaced by the upstream servers
//! systemd-resolved lists in `/run/systemd/resolve/resolv.conf` or, failing that, by public
//! resolvers (8.8.8.8, 8.8.4.4: Docker's own fallback).

use std::fs;
use std::net::IpAddr;
use std::path::Path;

/// Docker's fallback nameservers.
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// The nameservers, search domains and options for a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_owned)),
                Some("search") | Some("domain") => {
                    conf.searches = words.map(str::to_owned).collect()
                }
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// Drops nameservers a VM cannot reach (loopback) and IPv6 ones (the bridge is IPv4 only).
    fn reachable(mut self) -> Self {
        self.nameservers.retain(
            |server| matches!(server.parse::<IpAddr>(), Ok(IpAddr::V4(ip)) if !ip.is_loopback()),
        );
        self
    }
}

/// The container's resolv.conf, from the host's `/etc/resolv.conf` (see the module doc).
pub fn container_resolv_conf() -> ResolvConf {
    resolv_conf_from(
        Path::new("/etc/resolv.conf"),
        Path::new("/run/systemd/resolve/resolv.conf"),
    )
}

fn resolv_conf_from(host: &Path, resolved_upstream: &Path) -> ResolvConf {
    let host = ResolvConf::parse(&fs::read_to_string(host).unwrap_or_default());
    let mut conf = host.clone().reachable();
    if conf.nameservers.is_empty() {
        let upstream =
            ResolvConf::parse(&fs::read_to_string(resolved_upstream).unwrap_or_default())
                .reachable();
        conf.nameservers = upstream.nameservers;
    }
    if conf.nameservers.is_empty() {
        conf.nameservers = FALLBACK_NAMESERVERS.map(str::to_owned).to_vec();
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameserver_falls_back_to_resolved_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("resolv.conf");
        let upstream = dir.path().join("upstream.conf");
        fs::write(&host, "nameserver 127.0.0.53\nsearch lan\noptions edns0\n").unwrap();
        fs::write(&upstream, "nameserver 192.168.1.1\nnameserver ::1\n").unwrap();
        let conf = resolv_conf_from(&host, &upstream);
        assert_eq!(conf.nameservers, ["192.168.1.1"]);
        assert_eq!(conf.searches, ["lan"]);
        assert_eq!(conf.options, ["edns0"]);
    }

    #[test]
    fn no_usable_nameserver_falls_back_to_public_ones() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("resolv.conf");
        fs::write(&host, "nameserver 127.0.0.1\n").unwrap();
        let conf = resolv_conf_from(&host, &dir.path().join("missing"));
        assert_eq!(conf.nameservers, FALLBACK_NAMESERVERS);
    }

    #[test]
    fn host_nameservers_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("resolv.conf");
        fs::write(&host, "nameserver 10.0.0.2\n").unwrap();
        let conf = resolv_conf_from(&host, &dir.path().join("missing"));
        assert_eq!(conf.nameservers, ["10.0.0.2"]);
    }
}
