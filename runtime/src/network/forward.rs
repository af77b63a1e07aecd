//! What may cross the host between the bridge and everything else, as Docker's forward rules
//! do it, in the `forward` chain of the `ip rvm` table, plus the cloud metadata block.
//!
//! rvm turns `ip_forward` on, so without a policy any host that can route to 10.88.0.0/16 (a
//! neighbour on the LAN that adds a route via this host) reaches every port of every container,
//! published or not. The chain admits towards `rvm0` only:
//! - replies and related ICMP of connections the containers opened (`ct state`);
//! - connections rvm's own DNAT made, i.e. published ports (`ct status dnat`);
//! - traffic between two containers when the host bridges through netfilter (`br_netfilter`);
//!
//! and drops the rest. Guests going out (NAT to the uplink) are not restricted by it.
//! The chain's policy is accept, so rvm judges only traffic to its own bridge and never what
//! other software forwards; a drop here is final whatever other tables say.
//!
//! Cloud metadata: a guest is the tenant's, and the instance metadata service hands out the
//! host's cloud credentials to anything that can reach it. Unless `RVM_CLOUD_METADATA=allow`,
//! every packet from `rvm0` to the link-local range (169.254.169.254 of AWS, GCP, Azure,
//! OpenStack, Oracle, DigitalOcean; 169.254.170.2 of ECS) or to Alibaba's 100.100.100.200 is
//! dropped before routing, whether routed or addressed to the host. The set
//! `cloud_metadata` holds those destinations; it is filled or emptied on each container start,
//! so the setting is host-wide and the last started container's front end decides it.

use thiserror::Error;

use super::BRIDGE;

/// The chain holding the forward policy.
pub const FORWARD: &str = "forward";
/// The set of destinations kept from guests.
pub const METADATA_SET: &str = "cloud_metadata";
/// The set's elements when metadata is blocked.
pub const METADATA_ADDRESSES: &str = "100.100.100.200, 169.254.0.0/16";
/// What an `nft list` of a blocking set shows (and an empty set does not).
pub const METADATA_MARK: &str = "169.254.0.0/16";
/// The environment variable choosing the metadata policy.
pub const METADATA_ENV: &str = "RVM_CLOUD_METADATA";

#[derive(Debug, Error)]
#[error("{METADATA_ENV}={0:?} is not a metadata policy: use \"block\" (the default) or \"allow\"")]
pub struct PolicyError(String);

/// Whether guests may reach the cloud's instance metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataPolicy {
    Block,
    Allow,
}

impl MetadataPolicy {
    /// The policy named by `value` (the environment variable's content, if set).
    pub fn parse(value: Option<&str>) -> Result<Self, PolicyError> {
        match value.map(str::trim) {
            None | Some("") | Some("block") => Ok(Self::Block),
            Some("allow") => Ok(Self::Allow),
            Some(other) => Err(PolicyError(other.to_owned())),
        }
    }

    /// The policy of this process's environment.
    pub fn from_env() -> Result<Self, PolicyError> {
        Self::parse(std::env::var(METADATA_ENV).ok().as_deref())
    }
}

/// The forward chain (see the module's doc).
pub fn forward_chain() -> String {
    format!(
        "    chain {FORWARD} {{
        type filter hook forward priority filter; policy accept;
        oifname \"{BRIDGE}\" ct state established,related accept
        oifname \"{BRIDGE}\" ct status dnat accept
        oifname \"{BRIDGE}\" iifname \"{BRIDGE}\" accept
        oifname \"{BRIDGE}\" drop
    }}
"
    )
}

/// The set of metadata destinations, filled or not by `policy`.
pub fn metadata_set(policy: MetadataPolicy) -> String {
    let elements = match policy {
        MetadataPolicy::Block => format!(" elements = {{ {METADATA_ADDRESSES} }};"),
        MetadataPolicy::Allow => String::new(),
    };
    format!("    set {METADATA_SET} {{ type ipv4_addr; flags interval;{elements} }}\n")
}

/// The guard chain's rule that drops what guests send to the set.
pub fn metadata_rule() -> String {
    format!("iifname \"{BRIDGE}\" ip daddr @{METADATA_SET} drop")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_defaults_to_block_and_refuses_unknown_words() {
        assert_eq!(MetadataPolicy::parse(None).unwrap(), MetadataPolicy::Block);
        assert_eq!(
            MetadataPolicy::parse(Some("allow")).unwrap(),
            MetadataPolicy::Allow
        );
        let err = MetadataPolicy::parse(Some("yes")).unwrap_err().to_string();
        assert!(err.contains("RVM_CLOUD_METADATA=\"yes\""), "{err}");
    }

    #[test]
    fn only_dnat_and_replies_go_to_the_bridge() {
        let chain = forward_chain();
        let rules: Vec<&str> = chain.lines().map(str::trim).collect();
        assert_eq!(
            rules[2],
            "oifname \"rvm0\" ct state established,related accept"
        );
        assert_eq!(rules[3], "oifname \"rvm0\" ct status dnat accept");
        assert_eq!(rules[5], "oifname \"rvm0\" drop");
    }
}
