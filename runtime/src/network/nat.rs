//! NAT through nftables, in a table of rvm's own (`ip rvm`) so that nothing else on the host is
//! touched and `nft delete table ip rvm` undoes it all: masquerade of the containers' traffic
//! to the uplink, and published ports as elements of two DNAT maps (one keyed by protocol and
//! port for `0.0.0.0`, one also by the host address), so that a port is added or removed
//! without rule handles, and a port already taken is refused by the kernel (`create element`).
//!
//! The table also guards the host's loopback: `rvm0` has `route_localnet` (published ports on
//! 127.0.0.1 are forwarded through it), which would also let a guest that controls its network
//! stack send packets to 127.0.0.0/8 and reach the host's localhost-only services (the
//! CVE-2020-8558 class). Every packet arriving from the bridge with a loopback destination or
//! source is dropped before routing, in the `guard` chain at raw priority; the replies of
//! published-port connections are addressed to the bridge's own address and pass.
//!
//! The `nft` binary applies the scripts: the `nftables` crate drives that same binary through
//! JSON, and a script of four chains reads more plainly than its JSON.

use std::io::Write;
use std::process::{Command, Stdio};

use thiserror::Error;

use super::forward::{self, MetadataPolicy, PolicyError};
use super::ports::PortMapping;
use super::{subnet, BRIDGE};

/// The table holding all of rvm's rules.
pub const TABLE: &str = "rvm";

#[derive(Debug, Error)]
pub enum NatError {
    #[error("cannot run nft (is nftables installed?): {0}")]
    Spawn(std::io::Error),
    #[error("nft refused {what}: {message}")]
    Refused { what: String, message: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The table: DNAT of published ports in prerouting (from outside) and output (from the host
/// itself, 127.0.0.1 included), masquerade of the subnet towards the uplink and of loopback
/// sources towards the bridge (which has `route_localnet` for that); the loopback and metadata
/// guard and the forward policy of [`forward`].
pub fn table_script(policy: MetadataPolicy) -> String {
    let dnat = "fib daddr type local meta l4proto { tcp, udp } dnat ip to";
    format!(
        "table ip {TABLE} {{
{metadata}{guard}{forward}    map fwd_any {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}
    map fwd_ip {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        {dnat} ip daddr . meta l4proto . th dport map @fwd_ip
        {dnat} meta l4proto . th dport map @fwd_any
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        {dnat} ip daddr . meta l4proto . th dport map @fwd_ip
        {dnat} meta l4proto . th dport map @fwd_any
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != \"{BRIDGE}\" masquerade
        ip saddr 127.0.0.0/8 oifname \"{BRIDGE}\" masquerade
    }}
}}
",
        subnet = subnet(),
        metadata = forward::metadata_set(policy),
        guard = guard_chain(),
        forward = forward::forward_chain(),
    )
}

/// The chain that keeps guests off the host's loopback (see the module's doc) and, through the
/// set of [`forward`], off the cloud metadata service.
const GUARD: &str = "guard";

fn guard_chain() -> String {
    format!(
        "    chain {GUARD} {{
        type filter hook prerouting priority -300; policy accept;
        iifname \"{BRIDGE}\" ip daddr 127.0.0.0/8 drop
        iifname \"{BRIDGE}\" ip saddr 127.0.0.0/8 drop
        {metadata}
    }}
",
        metadata = forward::metadata_rule()
    )
}

/// Creates the table unless it exists, and brings an existing one to what this version wants:
/// a table made by an older rvm gets the chains and set it lacks, and the metadata set gets
/// the content `policy` asks for. One `nft list` when nothing is to be done. The caller holds
/// the host-wide network lock, so two containers starting at once do not both add the chains.
pub fn ensure_table(policy: MetadataPolicy) -> Result<(), NatError> {
    let Some(listing) = list(&["table", "ip", TABLE])? else {
        return apply(&table_script(policy), "the rvm nftables table");
    };
    let script = upgrade_script(&listing, policy);
    if script.is_empty() {
        return Ok(());
    }
    apply(&script, "the update of the rvm nftables table")
}

/// What must be added to an existing table, given its `nft list` text, so that it has the
/// guard and forward chains, the metadata set and rule, and the set's content `policy` asks
/// for. Empty when the table is as wanted.
pub fn upgrade_script(listing: &str, policy: MetadataPolicy) -> String {
    let has = |text: &str| listing.contains(text);
    let mut body = String::new();
    let mut after = String::new();
    if !has(&format!("set {} ", forward::METADATA_SET)) {
        body.push_str(&forward::metadata_set(MetadataPolicy::Allow));
    }
    if !has(&format!("chain {GUARD} ")) {
        body.push_str(&guard_chain());
    } else if !has(&format!("@{}", forward::METADATA_SET)) {
        after.push_str(&format!(
            "add rule ip {TABLE} {GUARD} {}\n",
            forward::metadata_rule()
        ));
    }
    if !has(&format!("chain {} ", forward::FORWARD)) {
        body.push_str(&forward::forward_chain());
    }
    let blocked = has(forward::METADATA_MARK);
    match policy {
        MetadataPolicy::Block if !blocked => after.push_str(&format!(
            "add element ip {TABLE} {} {{ {} }}\n",
            forward::METADATA_SET,
            forward::METADATA_ADDRESSES
        )),
        MetadataPolicy::Allow if blocked => {
            after.push_str(&format!("flush set ip {TABLE} {}\n", forward::METADATA_SET))
        }
        _ => {}
    }
    if body.is_empty() {
        return after;
    }
    format!("table ip {TABLE} {{\n{body}}}\n{after}")
}

/// Whether `nft list OBJECT...` finds the object.
pub(super) fn exists(object: &[&str]) -> Result<bool, NatError> {
    Ok(list(object)?.is_some())
}

/// What `nft list OBJECT...` prints, or None when there is no such object.
fn list(object: &[&str]) -> Result<Option<String>, NatError> {
    let output = Command::new("nft")
        .arg("list")
        .args(object)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(NatError::Spawn)?;
    Ok(output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// The map element of a published port: its map, key and value.
fn element(port: &PortMapping, container: std::net::Ipv4Addr) -> (String, String) {
    let proto = port.protocol.as_str();
    let value = format!("{container} . {}", port.container_port);
    if port.host_ip.is_unspecified() {
        (
            "fwd_any".to_owned(),
            format!("{proto} . {} : {value}", port.host_port),
        )
    } else {
        (
            "fwd_ip".to_owned(),
            format!("{} . {proto} . {} : {value}", port.host_ip, port.host_port),
        )
    }
}

/// Adds the forwards of a container's published ports, all or none; a host port another
/// container already forwards is refused.
pub fn add_forwards(ports: &[PortMapping], container: std::net::Ipv4Addr) -> Result<(), NatError> {
    if ports.is_empty() {
        return Ok(());
    }
    let mut script = String::new();
    for port in ports {
        let (map, element) = element(port, container);
        script.push_str(&format!(
            "create element ip {TABLE} {map} {{ {element} }}\n"
        ));
    }
    apply(&script, "the published ports").map_err(|err| match err {
        NatError::Refused { message, .. } if message.contains("File exists") => NatError::Refused {
            what: "the published ports".to_owned(),
            message: "port is already allocated".to_owned(),
        },
        other => other,
    })
}

/// Removes the forwards of a container's published ports; ones already gone are skipped.
pub fn remove_forwards(ports: &[PortMapping], container: std::net::Ipv4Addr) {
    for port in ports {
        let (map, element) = element(port, container);
        let key = element.split(" : ").next().unwrap_or_default();
        let script = format!("delete element ip {TABLE} {map} {{ {key} }}\n");
        if let Err(err) = apply(&script, &format!("removing the forward of {port}")) {
            tracing::debug!(%err, "forward already gone");
        }
    }
}

/// Runs `nft -f -` on `script`.
pub(super) fn apply(script: &str, what: &str) -> Result<(), NatError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NatError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NatError::Spawn)?;
    }
    let output = child.wait_with_output().map_err(NatError::Spawn)?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr
        .lines()
        .find(|line| line.contains("Error:"))
        .unwrap_or_else(|| stderr.lines().next().unwrap_or("failed"))
        .trim()
        .to_owned();
    Err(NatError::Refused {
        what: what.to_owned(),
        message,
    })
}

/// Has nft check `script` without applying it, and fails the test naming nft's complaint.
/// tools/install-deps installs nftables; checking needs CAP_NET_ADMIN, as running rvm does.
#[cfg(test)]
pub(super) fn nft_check(script: &str) {
    let mut child = Command::new("nft")
        .args(["--check", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft (tools/install-deps installs nftables)");
    child
        .stdin
        .take()
        .expect("nft's stdin")
        .write_all(script.as_bytes())
        .expect("write the script to nft");
    let output = child.wait_with_output().expect("nft's status");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ports::PortMapping;

    #[test]
    fn elements_go_to_the_map_of_their_address() {
        let ip = std::net::Ipv4Addr::new(10, 88, 0, 2);
        let (map, e) = element(&PortMapping::parse("8080:80").unwrap(), ip);
        assert_eq!(
            (map.as_str(), e.as_str()),
            ("fwd_any", "tcp . 8080 : 10.88.0.2 . 80")
        );
        let (map, e) = element(&PortMapping::parse("127.0.0.1:53:53/udp").unwrap(), ip);
        assert_eq!(
            (map.as_str(), e.as_str()),
            ("fwd_ip", "127.0.0.1 . udp . 53 : 10.88.0.2 . 53")
        );
    }

    #[test]
    fn table_masquerades_the_subnet() {
        assert!(table_script(MetadataPolicy::Block)
            .contains("ip saddr 10.88.0.0/16 oifname != \"rvm0\" masquerade"));
    }

    #[test]
    fn table_drops_loopback_from_the_bridge_before_routing() {
        let script = table_script(MetadataPolicy::Block);
        assert!(script.contains("type filter hook prerouting priority -300;"));
        assert!(script.contains("iifname \"rvm0\" ip daddr 127.0.0.0/8 drop"));
        assert!(script.contains("iifname \"rvm0\" ip saddr 127.0.0.0/8 drop"));
    }

    /// nft itself judges the script (`--check` changes nothing on the host).
    #[test]
    fn nft_accepts_the_table() {
        nft_check(&table_script(MetadataPolicy::Block));
        nft_check(&table_script(MetadataPolicy::Allow));
    }

    #[test]
    fn a_current_table_needs_nothing() {
        for policy in [MetadataPolicy::Block, MetadataPolicy::Allow] {
            assert_eq!(upgrade_script(&table_script(policy), policy), "");
        }
    }

    #[test]
    fn the_policy_fills_or_empties_the_metadata_set() {
        let blocked = table_script(MetadataPolicy::Block);
        assert!(blocked.contains("iifname \"rvm0\" ip daddr @cloud_metadata drop"));
        assert_eq!(
            upgrade_script(&blocked, MetadataPolicy::Allow),
            "flush set ip rvm cloud_metadata\n"
        );
        let allowed = table_script(MetadataPolicy::Allow);
        assert_eq!(
            upgrade_script(&allowed, MetadataPolicy::Block),
            "add element ip rvm cloud_metadata { 100.100.100.200, 169.254.0.0/16 }\n"
        );
    }

    /// Tables of older versions (before the guard chain; with it but before the forward chain
    /// and the metadata set) get what they lack, and nft accepts each upgrade on top of them.
    #[test]
    fn older_tables_get_what_they_lack() {
        let current = table_script(MetadataPolicy::Block);
        let before_forward = current
            .replace(&forward::forward_chain(), "")
            .replace(&forward::metadata_set(MetadataPolicy::Block), "")
            .replace(&format!("        {}\n", forward::metadata_rule()), "");
        let before_guard = before_forward.replace(&guard_chain_without_metadata(), "");
        assert!(!before_forward.contains("cloud_metadata") && !before_guard.contains("guard"));
        for old in [before_forward, before_guard] {
            let upgrade = upgrade_script(&old, MetadataPolicy::Block);
            assert!(upgrade.contains("chain forward {"), "{upgrade}");
            assert!(
                upgrade.contains("ip daddr @cloud_metadata drop"),
                "{upgrade}"
            );
            assert!(
                upgrade.contains("add element ip rvm cloud_metadata"),
                "{upgrade}"
            );
            nft_check(&format!("{old}{upgrade}"));
        }
    }

    fn guard_chain_without_metadata() -> String {
        guard_chain().replace(&format!("        {}\n", forward::metadata_rule()), "")
    }
}
