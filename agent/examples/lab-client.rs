//! The host side of the agent's lab test (agent/tests/lab-agent.sh): connects to the agent of a
//! VM over AF_VSOCK, runs the container scenarios against its layer and scratch disks, then
//! sends Shutdown. Prints "ok NAME" per scenario; a failed one panics with what was wrong.
//!
//!   lab-client CID LAYER_SERIAL SCRATCH_SERIAL

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/scenarios.rs"]
mod scenarios;

use std::time::{Duration, Instant};

use common::*;
use rvm_protocol::agent::ShutdownRequest;
use rvm_protocol::agent_ttrpc::AgentClient;
use rvm_protocol::client::handshake;
use rvm_protocol::ttrpc::r#async::Client;

const CONNECT: Duration = Duration::from_secs(180);

async fn connect(cid: u32) -> AgentClient {
    let address = format!("vsock://{cid}:{}", rvm_protocol::ports::AGENT_PORT);
    let started = Instant::now();
    loop {
        match Client::connect(&address).await {
            Ok(client) => {
                let client = AgentClient::new(client);
                if handshake(&client, "lab-client", Duration::from_secs(10))
                    .await
                    .is_ok()
                {
                    println!(
                        "connected to {address} after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    return client;
                }
            }
            Err(error) => {
                assert!(
                    started.elapsed() < CONNECT,
                    "no agent on {address} within {CONNECT:?}: {error}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cid, layer, scratch] = args.as_slice() else {
        panic!("usage: lab-client CID LAYER_SERIAL SCRATCH_SERIAL");
    };
    let client = connect(cid.parse().expect("CID is a number")).await;
    let rootfs = Rootfs::Disks {
        layers: vec![layer.clone()],
        scratch: scratch.clone(),
    };
    macro_rules! scenario {
        ($name:ident) => {
            scenarios::$name(&client, &rootfs).await;
            println!("ok {}", stringify!($name));
        };
    }
    scenario!(echo_hello);
    scenario!(exit_code);
    scenario!(not_found_is_127);
    scenario!(not_executable_is_126);
    scenario!(user_cwd_env);
    scenario!(bad_specs_are_refused);
    scenario!(isolation);
    scenario!(exec_signal_list);
    scenario!(spec_seccomp_profile);
    scenario!(oom_is_reported);
    client
        .shutdown(ctx(), &ShutdownRequest::default())
        .await
        .unwrap();
    println!("ok shutdown sent");
}
