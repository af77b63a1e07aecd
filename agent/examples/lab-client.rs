//! The host side of the agent's lab test (agent/tests/lab-agent.sh): connects to the agent of a
//! VM, either over AF_VSOCK (QEMU's vhost-vsock) or through rvm-vmm's hybrid vsock socket, runs
//! the container scenarios against its layer and scratch disks, then sends Shutdown. Prints
//! "ok NAME" per scenario; a failed one panics with what was wrong.
//!
//!   lab-client (CID | UDS_PATH) LAYER_SERIAL SCRATCH_SERIAL

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/scenarios.rs"]
mod scenarios;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use rvm_protocol::agent::ShutdownRequest;
use rvm_protocol::agent_ttrpc::AgentClient;
use rvm_protocol::client::{connect_agent, handshake};
use rvm_protocol::ttrpc::r#async::Client;

const CONNECT: Duration = Duration::from_secs(180);
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Where the agent is: a guest CID for AF_VSOCK, or the path of rvm-vmm's vsock socket.
enum Target {
    Vsock(u32),
    Hybrid(PathBuf),
}

impl Target {
    fn parse(arg: &str) -> Self {
        match arg.parse() {
            Ok(cid) => Self::Vsock(cid),
            Err(_) => Self::Hybrid(PathBuf::from(arg)),
        }
    }

    async fn try_connect(&self) -> Result<AgentClient, String> {
        match self {
            Self::Vsock(cid) => {
                let address = format!("vsock://{cid}:{}", rvm_protocol::ports::AGENT_PORT);
                Client::connect(&address)
                    .await
                    .map(AgentClient::new)
                    .map_err(|e| e.to_string())
            }
            Self::Hybrid(path) => connect_agent(path, HANDSHAKE)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vsock(cid) => write!(f, "vsock cid {cid}"),
            Self::Hybrid(path) => write!(f, "hybrid vsock {}", path.display()),
        }
    }
}

/// Retries until the agent answers the version handshake: the guest boots meanwhile.
async fn connect(target: &Target) -> AgentClient {
    let started = Instant::now();
    loop {
        let error = match target.try_connect().await {
            Ok(client) => match handshake(&client, "lab-client", HANDSHAKE).await {
                Ok(_) => {
                    println!(
                        "connected to the agent ({target}) after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    return client;
                }
                Err(error) => error.to_string(),
            },
            Err(error) => error,
        };
        assert!(
            started.elapsed() < CONNECT,
            "no agent on {target} within {CONNECT:?}: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, layer, scratch] = args.as_slice() else {
        panic!("usage: lab-client (CID | UDS_PATH) LAYER_SERIAL SCRATCH_SERIAL");
    };
    let client = connect(&Target::parse(target)).await;
    let rootfs = Rootfs::Disks {
        layers: vec![layer.clone()],
        scratch: scratch.clone(),
    };
    macro_rules! scenario {
        ($name:ident) => {
            let started = Instant::now();
            scenarios::$name(&client, &rootfs).await;
            println!(
                "ok {} ({:.1} s)",
                stringify!($name),
                started.elapsed().as_secs_f64()
            );
        };
    }
    // Every scenario, lab-only ones included, in the shared list's order.
    scenarios::every_scenario!(scenario, scenario);
    client
        .shutdown(ctx(), &ShutdownRequest::default())
        .await
        .unwrap();
    println!("ok shutdown sent");
}
