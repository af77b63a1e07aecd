//! A VM's network, from wiring to undoing: a TAP on the host bridge `rvm0` with its port
//! forwards (`rvm run`), or a TAP in a pod's network namespace that takes over the interface CNI
//! made there (the shim); then the guest's side of it, the agent's ConfigureNetwork request.

use std::path::{Path, PathBuf};

use rvm_protocol::agent::ConfigureNetworkRequest;

use super::VmError;
use crate::network::endpoint::{self, Endpoint};
use crate::network::podnet::{self, POD_TAP};

/// How a VM reaches the network.
#[derive(Debug, Clone, Default)]
pub enum VmNetwork {
    /// Loopback only.
    #[default]
    None,
    /// A TAP on the host bridge with the endpoint's address and published ports.
    Bridge(Endpoint),
    /// The pod's network namespace (made by CNI), whose interface the VM takes over, with the
    /// pod's resolv.conf and hosts file when it has them.
    Pod {
        netns: PathBuf,
        resolv_conf: Option<String>,
        hosts: Option<String>,
    },
}

/// The network as wired for one VM: what the VMM is started with, what the guest is told, and
/// what to undo.
#[derive(Debug, Default)]
pub(super) struct Wired {
    /// `--net tap=NAME,mac=MAC`.
    pub(super) vmm_arg: Option<String>,
    /// The namespace the VMM must start in.
    pub(super) netns: Option<PathBuf>,
    /// The guest's configuration, sent once the agent answers.
    pub(super) guest: Option<ConfigureNetworkRequest>,
    undo: Undo,
}

#[derive(Debug, Default)]
enum Undo {
    #[default]
    Nothing,
    Bridge {
        root: PathBuf,
        id: String,
        endpoint: Endpoint,
    },
    Pod(PathBuf),
}

/// Wires `network` for VM `id` of the state under `root`; `hostname` is the guest's.
pub(super) async fn wire(
    root: &Path,
    id: &str,
    network: &VmNetwork,
    hostname: &str,
) -> Result<Wired, VmError> {
    match network {
        VmNetwork::None => Ok(Wired::default()),
        VmNetwork::Bridge(endpoint) => {
            endpoint::attach(root, id, endpoint).await?;
            Ok(Wired {
                vmm_arg: Some(endpoint.vmm_arg()),
                netns: None,
                guest: Some(endpoint::configure_request(endpoint, hostname)),
                undo: Undo::Bridge {
                    root: root.to_owned(),
                    id: id.to_owned(),
                    endpoint: endpoint.clone(),
                },
            })
        }
        VmNetwork::Pod {
            netns,
            resolv_conf,
            hosts,
        } => {
            let path = netns.clone();
            // Blocking netlink work in the namespace, off the async workers.
            let interface = tokio::task::spawn_blocking(move || podnet::connect(&path))
                .await
                .map_err(|e| VmError::Task(format!("pod network setup: {e}")))??;
            Ok(Wired {
                vmm_arg: Some(format!("tap={POD_TAP},mac={}", interface.mac)),
                netns: Some(netns.clone()),
                guest: Some(interface.configure_request(
                    hostname,
                    resolv_conf.as_deref(),
                    hosts.as_deref(),
                )),
                undo: Undo::Pod(netns.clone()),
            })
        }
    }
}

impl Wired {
    /// Undoes the wiring; errors are logged (the namespace may be gone already).
    pub(super) async fn unwire(&self) {
        match &self.undo {
            Undo::Nothing => {}
            Undo::Bridge { root, id, endpoint } => endpoint::detach(root, id, endpoint),
            Undo::Pod(netns) => {
                let netns = netns.clone();
                let _ = tokio::task::spawn_blocking(move || podnet::disconnect(&netns)).await;
            }
        }
    }
}
