//! Replays the committed seed corpus of each fuzz target (`fuzz/seeds/<target>/`) through the
//! very functions the fuzzer drives, so `cargo test` on stable covers them.
//!
//! The seeds are written by `RVM_WRITE_SEEDS=1 cargo test -p rvm-protocol --test fuzz_seeds`, and
//! checked against their writers on every run.

#[path = "../../tests/fixtures/seeds.rs"]
mod seeds;

use std::fs;
use std::path::{Path, PathBuf};

use rvm_protocol::agent::*;
use rvm_protocol::fuzzing;
use rvm_protocol::messages::{encode_agent_request, AgentRequest};
use rvm_protocol::ttrpc::proto::{
    MessageHeader, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_DATA, MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
};

fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

/// Feeds every seed of `target` to `run`; returns how many there were.
fn replay(target: &str, run: fn(&[u8])) -> std::io::Result<usize> {
    let mut count = 0;
    for entry in fs::read_dir(seed_dir(target))? {
        let path = entry?.path();
        println!("{}", path.display());
        run(&fs::read(&path)?);
        count += 1;
    }
    Ok(count)
}

#[test]
fn replay_frame_header_seeds() {
    assert!(replay("frame_header", fuzzing::frame_header).unwrap() >= 5);
}

#[test]
fn replay_request_decode_seeds() {
    assert!(
        replay("request_decode", fuzzing::request_decode).unwrap() >= AgentRequest::METHODS.len()
    );
}

/// A frame header of stream 1 as ttrpc encodes it.
fn header(length: u32, type_: u8) -> Vec<u8> {
    Vec::from(MessageHeader {
        length,
        stream_id: 1,
        type_,
        flags: 0,
    })
}

fn frame_header_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // MESSAGE_LENGTH_MAX is 4 MiB, well within a u32.
    let max = MESSAGE_LENGTH_MAX as u32;
    vec![
        ("zero-length", header(0, MESSAGE_TYPE_DATA)),
        ("max-length", header(max, MESSAGE_TYPE_REQUEST)),
        ("oversize", header(max + 1, MESSAGE_TYPE_REQUEST)),
        ("truncated", header(16, MESSAGE_TYPE_RESPONSE)[..7].to_vec()),
        ("unknown-type", header(0, 0x7f)),
    ]
}

/// One representative message per RPC, with the fields that shape decoding filled in.
fn sample_requests() -> Vec<AgentRequest> {
    let container_id = "c1".to_owned();
    let exec_id = "e1".to_owned();
    vec![
        AgentRequest::Version(rvm_protocol::version::version_request("rvm 0.1.0")),
        AgentRequest::Ping(PingRequest::default()),
        AgentRequest::ConfigureNetwork(ConfigureNetworkRequest {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: 1500,
                addresses: vec!["10.88.0.2/16".into(), "fd00::2/64".into()],
                ..Default::default()
            }],
            routes: vec![Route {
                gateway: "10.88.0.1".into(),
                device: "eth0".into(),
                ..Default::default()
            }],
            dns: Some(Dns {
                servers: vec!["10.88.0.1".into()],
                searches: vec!["example.test".into()],
                ..Default::default()
            })
            .into(),
            hostname: "box".into(),
            hosts: vec![HostEntry {
                ip: "10.88.0.2".into(),
                names: vec!["box".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        AgentRequest::CreateContainer(CreateContainerRequest {
            container_id: container_id.clone(),
            sandbox_id: container_id.clone(),
            oci_spec_json: br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"}}"#
                .to_vec(),
            layers: vec![LayerDisk {
                serial: "layer0".into(),
                diff_id: format!("sha256:{}", "ab".repeat(32)),
                ..Default::default()
            }],
            scratch_disk_serial: "scratch".into(),
            volumes: vec![VolumeDisk {
                serial: "vol0".into(),
                destination: "/data".into(),
                read_only: true,
                ..Default::default()
            }],
            devices: vec![DeviceDisk {
                serial: "rvm-dev-0".into(),
                path: "/dev/xvdc".into(),
                permissions: "r".into(),
                ..Default::default()
            }],
            terminal: true,
            stdin: true,
            ..Default::default()
        }),
        AgentRequest::StartContainer(StartContainerRequest {
            container_id: container_id.clone(),
            ..Default::default()
        }),
        AgentRequest::Pause(PauseRequest {
            container_id: container_id.clone(),
            ..Default::default()
        }),
        AgentRequest::Resume(ResumeRequest {
            container_id: container_id.clone(),
            ..Default::default()
        }),
        AgentRequest::RemoveContainer(RemoveContainerRequest {
            container_id: container_id.clone(),
            ..Default::default()
        }),
        AgentRequest::ExecProcess(ExecProcessRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            oci_process_json: br#"{"args":["ls","-l"],"cwd":"/","terminal":false}"#.to_vec(),
            stdin: true,
            ..Default::default()
        }),
        AgentRequest::SignalProcess(SignalProcessRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            signal: 9,
            all: true,
            ..Default::default()
        }),
        AgentRequest::WaitProcess(WaitProcessRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            ..Default::default()
        }),
        AgentRequest::ListProcesses(ListProcessesRequest {
            container_id: container_id.clone(),
            ..Default::default()
        }),
        AgentRequest::WriteStdin(WriteStdinRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            data: b"echo hi\n".to_vec(),
            ..Default::default()
        }),
        AgentRequest::CloseStdin(CloseStdinRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            ..Default::default()
        }),
        AgentRequest::ReadStdout(ReadOutputRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            max_bytes: 65536,
            ..Default::default()
        }),
        AgentRequest::ReadStderr(ReadOutputRequest {
            container_id: container_id.clone(),
            max_bytes: 65536,
            ..Default::default()
        }),
        AgentRequest::ResizePty(ResizePtyRequest {
            container_id: container_id.clone(),
            exec_id,
            rows: 24,
            columns: 80,
            ..Default::default()
        }),
        AgentRequest::Stats(StatsRequest {
            container_id: container_id.clone(),
            ..Default::default()
        }),
        AgentRequest::UpdateResources(UpdateResourcesRequest {
            container_id: container_id.clone(),
            oci_resources_json: br#"{"memory":{"limit":268435456},"cpu":{"quota":50000}}"#.to_vec(),
            ..Default::default()
        }),
        AgentRequest::UpdateDirectory(UpdateDirectoryRequest {
            container_id,
            directory: protobuf::MessageField::some(HostDirectory {
                destination: "/etc/config".into(),
                mode: 0o755,
                entries: vec![
                    HostDirectoryEntry {
                        path: "..2026_12_03_12_00_00.2".into(),
                        kind: EntryKind::ENTRY_DIRECTORY.into(),
                        mode: 0o755,
                        ..Default::default()
                    },
                    HostDirectoryEntry {
                        path: "..data".into(),
                        kind: EntryKind::ENTRY_SYMLINK.into(),
                        content: b"..2026_12_03_12_00_00.2".to_vec(),
                        ..Default::default()
                    },
                ],
                pod_subpath: "sub/dir".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        AgentRequest::Shutdown(ShutdownRequest::default()),
    ]
}

/// A seed file: its name and its bytes.
type Seed = (String, Vec<u8>);

/// For each sample: the whole request frame as ttrpc's client encodes it, and the bare message
/// payload.
fn request_decode_seeds() -> Result<Vec<Seed>, Box<dyn std::error::Error>> {
    let mut seeds = Vec::new();
    // ttrpc clients number their streams 1, 3, 5...
    for (sample, stream_id) in sample_requests().iter().zip((1..).step_by(2)) {
        let request = encode_agent_request(sample)?;
        seeds.push((
            format!("frame-{}", sample.method()),
            fuzzing::encode_request_frame(stream_id, &request)?,
        ));
        seeds.push((
            format!("payload-{}", sample.method()),
            sample.encode_payload()?,
        ));
    }
    Ok(seeds)
}

#[test]
fn samples_cover_every_method() {
    let methods: Vec<&str> = sample_requests().iter().map(AgentRequest::method).collect();
    assert_eq!(methods, AgentRequest::METHODS);
}

/// The committed seeds are byte for byte what the writers make, so a change of the protocol
/// cannot leave a stale corpus behind. `RVM_WRITE_SEEDS=1 cargo test -p rvm-protocol --test
/// fuzz_seeds` (re)writes them first.
#[test]
fn committed_seeds_are_what_the_writers_make() {
    let rewrite = "RVM_WRITE_SEEDS=1 cargo test -p rvm-protocol --test fuzz_seeds";
    seeds::check_seeds(&seed_dir("frame_header"), frame_header_seeds(), rewrite);
    seeds::check_seeds(
        &seed_dir("request_decode"),
        request_decode_seeds().unwrap(),
        rewrite,
    );
}
