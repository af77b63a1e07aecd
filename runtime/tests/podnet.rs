//! The pod network join against a real network namespace, as CNI's bridge plugin leaves one: a
//! veth end named eth0 with an address and a default route. Needs root and iproute2 (`ip`,
//! `tc`): without them the tests fail under CI and are skipped elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/fixtures/prerequisite.rs"]
mod prerequisite;

use std::path::PathBuf;
use std::process::Command;

use rvm_runtime::network::podnet::{self, POD_TAP};

/// A network namespace with a veth pair (host end `vrvmtN`, pod end `eth0`), removed on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create(name: &str) -> Self {
        let ns = Namespace {
            name: name.to_owned(),
        };
        let host = format!("v{name}");
        ip(&["netns", "add", name]);
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", name,
        ]);
        ns.exec(&[
            "ip",
            "link",
            "set",
            "eth0",
            "address",
            "0a:58:0a:63:00:05",
            "mtu",
            "1450",
            "up",
        ]);
        ns.exec(&["ip", "addr", "add", "10.99.0.5/24", "dev", "eth0"]);
        ns.exec(&["ip", "route", "add", "default", "via", "10.99.0.1"]);
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("v{}", self.name)])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the test may run: root, `ip` and `tc` (see `prerequisite`).
fn can_run() -> bool {
    use prerequisite::{missing_root, missing_tool, prerequisite};
    prerequisite(
        missing_root("joining a pod's network namespace")
            .or_else(|| missing_tool("ip", "iproute2"))
            .or_else(|| missing_tool("tc", "iproute2")),
    )
}

#[test]
fn joins_the_pod_interface_to_a_tap_and_undoes_it() {
    if !can_run() {
        return;
    }
    let ns = Namespace::create(&format!("rvmt{}", std::process::id()));
    let interface = podnet::connect(&ns.path()).unwrap();
    assert_eq!(interface.name, "eth0");
    assert_eq!(interface.mac, "0a:58:0a:63:00:05");
    assert_eq!(interface.mtu, 1450);
    assert_eq!(interface.addresses, ["10.99.0.5/24"]);
    assert!(
        interface
            .routes
            .iter()
            .any(|r| r.destination.is_empty() && r.gateway == "10.99.0.1"),
        "{:?}",
        interface.routes
    );
    let tap = ns.exec(&["ip", "-o", "link", "show", POD_TAP]);
    assert!(tap.contains("mtu 1450") && tap.contains("UP"), "{tap}");
    // The pod's interface redirects everything (protocol all) to the TAP; the TAP only what
    // carries the pod's MAC and address (10.99.0.5 is 0a630005), and its namespace routes on
    // nothing else.
    let from_eth0 = ns.exec(&["tc", "filter", "show", "dev", "eth0", "ingress"]);
    assert!(from_eth0.contains("protocol all"), "{from_eth0}");
    assert!(
        from_eth0.contains(&format!("Egress Redirect to device {POD_TAP}")),
        "{from_eth0}"
    );
    let from_tap = ns.exec(&["tc", "filter", "show", "dev", POD_TAP, "ingress"]);
    assert!(
        from_tap.contains("Egress Redirect to device eth0"),
        "{from_tap}"
    );
    assert!(
        from_tap.contains("match 0a630005/ffffffff at 12"),
        "{from_tap}"
    );
    assert!(
        from_tap.contains("match 0a580a63/ffffffff at -8"),
        "{from_tap}"
    );
    let forwarding = ns.exec(&[
        "cat",
        &format!("/proc/sys/net/ipv4/conf/{POD_TAP}/forwarding"),
    ]);
    assert_eq!(forwarding.trim(), "0");
    let rp_filter = ns.exec(&[
        "cat",
        &format!("/proc/sys/net/ipv4/conf/{POD_TAP}/rp_filter"),
    ]);
    assert_eq!(rp_filter.trim(), "1");

    podnet::disconnect(&ns.path());
    let links = ns.exec(&["ip", "-o", "link", "show"]);
    assert!(!links.contains(POD_TAP), "{links}");
    let qdiscs = ns.exec(&["tc", "qdisc", "show", "dev", "eth0"]);
    assert!(!qdiscs.contains("ingress"), "{qdiscs}");
}

#[test]
fn a_namespace_without_an_interface_is_refused() {
    if !can_run() {
        return;
    }
    let name = format!("rvme{}", std::process::id());
    ip(&["netns", "add", &name]);
    let ns = Namespace { name };
    let err = podnet::connect(&ns.path()).unwrap_err();
    assert!(err.to_string().contains("no interface besides lo"), "{err}");
    let missing = podnet::connect(std::path::Path::new("/var/run/netns/rvm-missing")).unwrap_err();
    assert!(missing.to_string().contains("rvm-missing"), "{missing}");
}
