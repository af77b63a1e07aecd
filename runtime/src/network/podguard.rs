//! Anti-spoofing for a pod's VM: what leaves the guest through the pod's TAP reaches the pod's
//! CNI interface only if it carries the identity CNI gave the pod. The guest kernel is the
//! tenant's (a container with NET_ADMIN, or any path to guest root, sets any MAC or address),
//! and the CNI bridge behind the interface would otherwise carry forged ARP and IP to the other
//! pods and the node (the CVE-2020-13401 class), as rvm0's `bridge rvm` table prevents for
//! `rvm run`.
//!
//! tc on the TAP's ingress, in the pod's namespace, before any frame is redirected: u32
//! filters (the classifier every kernel with tc has; flower and matchall are often modules or
//! absent) pass IPv4 with the pod's MAC and one of its addresses as the source, ARP with them as
//! the sender, and, when CNI gave the pod IPv6, IPv6 from its MAC with one of its addresses, or
//! neighbour discovery from a link-local or the unspecified source (so no router advertisement
//! or redirect, which hosts take only from link-local sources); a last filter that matches
//! everything drops the rest. Each passing filter redirects to the pod's interface (mirred), as
//! the unguarded match-all redirect did. The `tc` binary (iproute2) applies them in one batch:
//! its command line is u32's documented interface. The kernel needs u32 and mirred; without
//! them the pod does not start, naming tc's complaint. What no filter redirects is never routed
//! on by the pod's namespace either (see [`apply`]). shim/tests/lab-cri.sh spoofs from a pod
//! container with NET_ADMIN against them; runtime/tests/podnet.rs checks they are in place.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PodGuardError {
    #[error("cannot run tc (is iproute2 installed?): {0}")]
    Spawn(std::io::Error),
    #[error("tc refused the anti-spoofing filters of {tap}: {message}")]
    Refused { tap: String, message: String },
    #[error("the pod's address {0:?} is not an IP address with a prefix")]
    BadAddress(String),
    #[error("the pod's MAC {0:?} is not six hex bytes separated by ':'")]
    BadMac(String),
    #[error("cannot set {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
}

/// The `tc -batch` commands that pass what carries the pod's identity from `tap` and redirect what passes to `interface`, for a pod
/// with MAC `mac` and addresses `addresses` (CIDRs as CNI set them).
pub fn batch(
    tap: &str,
    interface: &str,
    mac: &str,
    addresses: &[String],
) -> Result<String, PodGuardError> {
    let ips = addresses
        .iter()
        .map(|cidr| {
            cidr.split('/')
                .next()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .ok_or_else(|| PodGuardError::BadAddress(cidr.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (mac_high, mac_low) = mac_words(mac)?;
    let filter = |prio: u32, protocol: &str| {
        format!("filter add dev {tap} parent ffff: prio {prio} protocol {protocol} u32")
    };
    // The Ethernet source: 8 to 3 bytes before the network header, where u32 starts.
    let from_mac = format!(
        "match u32 0x{mac_high:08x} 0xffffffff at -8 match u16 0x{mac_low:04x} 0xffff at -4"
    );
    let pass = format!("action mirred egress redirect dev {interface}");
    let mut lines = vec![format!("qdisc add dev {tap} ingress")];
    for ip in &ips {
        let IpAddr::V4(v4) = ip else { continue };
        let [a, b, c, d] = v4.octets();
        lines.push(format!(
            "{} match ip src {v4}/32 {from_mac} {pass}",
            filter(1, "ip")
        ));
        // ARP: sender MAC at 8, sender IP at 14 (u32 keys are 32-bit aligned, hence u16s).
        lines.push(format!(
            "{} {from_mac} match u32 0x{mac_high:08x} 0xffffffff at 8 match u16 0x{mac_low:04x} 0xffff at 12 \
             match u16 0x{:04x} 0xffff at 14 match u16 0x{:04x} 0xffff at 16 {pass}",
            filter(2, "arp"),
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([c, d]),
        ));
    }
    let v6: Vec<String> = ips
        .iter()
        .filter(|ip| ip.is_ipv6())
        .map(|ip| format!("{ip}/128"))
        .collect();
    if !v6.is_empty() {
        // Link-local and unspecified sources only for neighbour discovery (solicitations 135,
        // advertisements 136, ICMPv6 right after the fixed header): never router
        // advertisements or redirects, which hosts accept only from link-local sources.
        for (source, icmp_type) in [("fe80::/10", 135), ("fe80::/10", 136), ("::/128", 135)] {
            lines.push(format!(
                "{} match ip6 src {source} match ip6 protocol 58 0xff match u8 {icmp_type} 0xff at 40 {from_mac} {pass}",
                filter(3, "ipv6")
            ));
        }
        for source in &v6 {
            lines.push(format!(
                "{} match ip6 src {source} {from_mac} {pass}",
                filter(4, "ipv6")
            ));
        }
    }
    Ok(lines.join("\n") + "\n")
}

/// The `tc` command (without `tc`) of the last filter: whatever no filter passed is dropped.
pub fn drop_rest(tap: &str) -> String {
    format!("filter add dev {tap} parent ffff: prio 9 protocol all u32 match u32 0 0 action drop")
}

/// A MAC's first four bytes and last two, as u32 matches them.
fn mac_words(mac: &str) -> Result<(u32, u16), PodGuardError> {
    let bytes = mac
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()
        .filter(|bytes| bytes.len() == 6)
        .ok_or_else(|| PodGuardError::BadMac(mac.to_owned()))?;
    Ok((
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u16::from_be_bytes([bytes[4], bytes[5]]),
    ))
}

/// Guards `tap`, in the calling thread's network namespace: the pod's own frames are
/// redirected to `interface` ([`batch`]), the rest dropped ([`drop_rest`]). A frame that no filter
/// redirects stays in the pod's namespace, whose stack must not route it on: the TAP gets
/// forwarding 0 and strict reverse-path filtering, and no IPv6. Those settings are what holds
/// where the kernel lacks gact (the drop action; some minimal host kernels), which is warned.
pub fn apply(
    tap: &str,
    interface: &str,
    mac: &str,
    addresses: &[String],
) -> Result<(), PodGuardError> {
    confine_stack(tap)?;
    tc(tap, &batch(tap, interface, mac, addresses)?)?;
    if let Err(err) = tc(tap, &drop_rest(tap)) {
        tracing::warn!(%err, "frames of the pod's VM that carry another identity stay in the pod's namespace instead of being dropped by tc");
    }
    Ok(())
}

/// The sysctls of [`apply`] on `tap`, in the calling thread's namespace (`/proc/sys/net` is the
/// opener's namespace).
fn confine_stack(tap: &str) -> Result<(), PodGuardError> {
    let settings = [
        (format!("/proc/sys/net/ipv4/conf/{tap}/forwarding"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{tap}/rp_filter"), "1"),
        (format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), "1"),
    ];
    for (path, value) in settings {
        match std::fs::write(&path, value) {
            Ok(()) => {}
            // A kernel without IPv6 has no such file, and no IPv6 to route.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && path.contains("ipv6") => {}
            Err(source) => return Err(PodGuardError::Sysctl { path, source }),
        }
    }
    Ok(())
}

/// Runs `tc -batch -` on `script`.
fn tc(tap: &str, script: &str) -> Result<(), PodGuardError> {
    let mut child = Command::new("tc")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(PodGuardError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(PodGuardError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(PodGuardError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    Err(PodGuardError::Refused {
        tap: tap.to_owned(),
        message: String::from_utf8_lossy(&output.stderr)
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: &str = "0a:58:0a:63:00:05";

    #[test]
    fn ipv4_pods_pass_only_their_own_ip_and_arp() {
        let script = batch("tap0_rvm", "eth0", MAC, &["10.99.0.5/24".to_owned()]).unwrap();
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "qdisc add dev tap0_rvm ingress");
        let mac = "match u32 0x0a580a63 0xffffffff at -8 match u16 0x0005 0xffff at -4";
        assert_eq!(
            lines[1],
            format!("filter add dev tap0_rvm parent ffff: prio 1 protocol ip u32 match ip src 10.99.0.5/32 {mac} action mirred egress redirect dev eth0")
        );
        assert!(
            lines[2].starts_with("filter add dev tap0_rvm parent ffff: prio 2 protocol arp u32")
        );
        assert!(lines[2].contains(mac));
        // Sender MAC and sender IP 10.99.0.5 = 0x0a63 0x0005.
        assert!(
            lines[2].contains("match u32 0x0a580a63 0xffffffff at 8 match u16 0x0005 0xffff at 12")
        );
        assert!(lines[2].contains("match u16 0x0a63 0xffff at 14 match u16 0x0005 0xffff at 16"));
        assert_eq!(
            drop_rest("tap0_rvm"),
            "filter add dev tap0_rvm parent ffff: prio 9 protocol all u32 match u32 0 0 action drop"
        );
        assert!(!script.contains("ipv6"), "no IPv6 for an IPv4-only pod");
    }

    #[test]
    fn ipv6_pods_get_neighbour_discovery_but_no_router_advertisements() {
        let script = batch(
            "tap0_rvm",
            "eth0",
            MAC,
            &["10.99.0.5/24".to_owned(), "fd00::5/64".to_owned()],
        )
        .unwrap();
        assert!(script.contains("match ip6 src fd00::5/128 match u32"));
        let link_local: Vec<&str> = script.lines().filter(|l| l.contains("fe80::/10")).collect();
        assert_eq!(link_local.len(), 2);
        assert!(link_local
            .iter()
            .all(|l| l.contains("match ip6 protocol 58 0xff")));
        assert!(
            !script.contains(" 134 0xff"),
            "no router advertisement passes"
        );
    }

    #[test]
    fn bad_addresses_and_macs_are_named() {
        let err = batch("tap0_rvm", "eth0", MAC, &["nonsense".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("\"nonsense\""), "{err}");
        let err = batch("tap0_rvm", "eth0", "0a:58", &[]).unwrap_err();
        assert!(err.to_string().contains("\"0a:58\""), "{err}");
    }
}
