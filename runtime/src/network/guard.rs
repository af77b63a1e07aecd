//! Anti-spoofing on the bridge: a VM's TAP may only send what rvm gave it. The guest kernel is
//! the tenant's (NET_ADMIN, a privileged container or any path to guest root controls it), so
//! every frame from a TAP is checked in an nftables table of rvm's own, `bridge rvm`, before the
//! bridge forwards it or hands it to the host:
//! - IPv4 only with the TAP's own MAC as the Ethernet source and its own address as the source;
//! - ARP only with that MAC and address as the sender (no answering for the gateway or for a
//!   neighbour, no gratuitous ARP for an address that is not its own);
//! - everything else is dropped: IPv6 (rvm gives guests none, so router advertisements,
//!   redirects and neighbour spoofing go with it), VLAN tags, other Ethernet types.
//!
//! The allowed (TAP, MAC, address) triples are elements of one set, added when a container's
//! TAP is wired and removed when it is unwired, so no rule is ever edited by handle.

use std::net::Ipv4Addr;

use super::nat::{apply, exists, NatError};
use super::BRIDGE;

/// The table (family bridge) and its set of allowed senders.
pub const TABLE: &str = "rvm";
const SET: &str = "senders";

/// The table: frames entering the bridge from a container TAP (named `rvm` + 12 hex digits;
/// the bridge `rvm0` itself and other ports are not ours to judge) go through `from_vm`.
pub fn table_script() -> String {
    format!(
        "table bridge {TABLE} {{
    set {SET} {{ type ifname . ether_addr . ipv4_addr; }}
    chain prerouting {{
        type filter hook prerouting priority -200; policy accept;
        iifname \"rvm*\" iifname != \"{BRIDGE}\" jump from_vm
    }}
    chain from_vm {{
        ether type ip iifname . ether saddr . ip saddr @{SET} accept
        ether type arp iifname . ether saddr . arp saddr ip @{SET} iifname . arp saddr ether . arp saddr ip @{SET} accept
        drop
    }}
}}
"
    )
}

/// Creates the table unless it exists (the caller holds the host-wide network lock).
pub fn ensure_table() -> Result<(), NatError> {
    if exists(&["table", "bridge", TABLE])? {
        return Ok(());
    }
    apply(&table_script(), "the rvm bridge guard table")
}

fn element(tap: &str, mac: &str, ip: Ipv4Addr) -> String {
    format!("{tap} . {mac} . {ip}")
}

/// Lets `tap` send as `mac` and `ip`, and as nothing else.
pub fn allow(tap: &str, mac: &str, ip: Ipv4Addr) -> Result<(), NatError> {
    let script = format!(
        "add element bridge {TABLE} {SET} {{ {} }}\n",
        element(tap, mac, ip)
    );
    apply(&script, &format!("the guard of {tap}"))
}

/// Forgets what `tap` may send; an element already gone is fine.
pub fn forget(tap: &str, mac: &str, ip: Ipv4Addr) {
    let script = format!(
        "delete element bridge {TABLE} {SET} {{ {} }}\n",
        element(tap, mac, ip)
    );
    if let Err(err) = apply(&script, &format!("removing the guard of {tap}")) {
        tracing::debug!(%err, "guard element already gone");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_assigned_sender_passes() {
        let script = table_script();
        assert!(script.contains("ether type ip iifname . ether saddr . ip saddr @senders accept"));
        assert!(script.contains("iifname . arp saddr ether . arp saddr ip @senders accept"));
        // The last rule of from_vm drops whatever was not accepted.
        let from_vm = script.split("chain from_vm").nth(1).unwrap();
        assert_eq!(from_vm.lines().rev().nth(2).unwrap().trim(), "drop");
    }

    #[test]
    fn elements_name_tap_mac_and_address() {
        assert_eq!(
            element(
                "rvm0123456789ab",
                "02:01:23:45:67:89",
                Ipv4Addr::new(10, 88, 0, 2)
            ),
            "rvm0123456789ab . 02:01:23:45:67:89 . 10.88.0.2"
        );
    }

    /// nft itself judges the table and an element (`--check` changes nothing on the host).
    #[test]
    fn nft_accepts_the_table_and_an_element() {
        let script = format!(
            "{}add element bridge {TABLE} {SET} {{ {} }}\n",
            table_script(),
            element(
                "rvm0123456789ab",
                "02:01:23:45:67:89",
                Ipv4Addr::new(10, 88, 0, 2)
            )
        );
        super::super::nat::nft_check(&script);
    }
}
