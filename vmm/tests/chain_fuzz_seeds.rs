//! Replays the committed seed corpora of the one-chain fuzz targets `virtio_vsock` and
//! `virtio_rng` (`fuzz/corpus/<target>/`, input layout of `devices::virtio::fuzz_input`) through
//! the functions the fuzzer drives.
//!
//! The seeds are written by `RVM_WRITE_SEEDS=1 cargo test -p rvm-vmm --test chain_fuzz_seeds`,
//! and checked against their writer on every run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/fixtures/seeds.rs"]
mod seeds;

use std::fs;
use std::path::{Path, PathBuf};

use rvm_vmm::devices::virtio::fuzz_input::{DATA_ADDR, TABLE_BYTES};
use rvm_vmm::devices::virtio::rng::fuzzing::virtio_rng;
use rvm_vmm::devices::virtio::vsock::fuzzing::virtio_vsock;
use rvm_vmm::devices::virtio::vsock::packet::{op, Header, HOST_CID, TYPE_STREAM};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs every seed of `target` through `fuzz`; returns how many there were.
fn replay(target: &str, fuzz: fn(&[u8])) -> usize {
    let mut count = 0;
    for entry in fs::read_dir(seed_dir(target)).unwrap() {
        let path = entry.unwrap().path();
        println!("{}", path.display());
        fuzz(&fs::read(&path).unwrap());
        count += 1;
    }
    count
}

#[test]
fn replay_virtio_vsock_seeds() {
    let count = replay("virtio_vsock", virtio_vsock);
    assert!(count >= 8, "only {count} seeds");
}

#[test]
fn replay_virtio_rng_seeds() {
    let count = replay("virtio_rng", virtio_rng);
    assert!(count >= 8, "only {count} seeds");
}

/// One fuzz input: the head index, descriptors (address, length, flags, next) and memory.
fn input(head: u8, descs: &[(u64, u32, u16, u16)], memory: &[u8]) -> Vec<u8> {
    let mut table = vec![0u8; TABLE_BYTES];
    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
        let d = &mut table[i * 16..i * 16 + 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
    }
    let mut data = vec![head];
    data.extend_from_slice(&table);
    data.extend_from_slice(memory);
    data
}

fn header(op: u16, len: u32) -> [u8; 44] {
    Header {
        src_cid: 3,
        dst_cid: HOST_CID,
        src_port: 1024,
        dst_port: 1 << 30,
        len,
        kind: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 256 * 1024,
        fwd_cnt: 0,
    }
    .to_bytes()
}

fn vsock_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let d = DATA_ADDR;
    let mut rw = header(op::RW, 5).to_vec();
    rw.extend_from_slice(b"hello");
    let request = header(op::REQUEST, 0).to_vec();
    // An indirect table at DATA_ADDR + 0x100 holding a header descriptor.
    let mut indirect = vec![0u8; 0x100];
    indirect.extend_from_slice(&(d).to_le_bytes());
    indirect.extend_from_slice(&44u32.to_le_bytes());
    indirect.extend_from_slice(&[0, 0, 0, 0]);
    indirect[..44].copy_from_slice(&request);
    vec![
        (
            "tx-rw-split",
            input(0, &[(d, 44, NEXT, 1), (d + 44, 5, 0, 0)], &rw),
        ),
        ("tx-rw-one-buffer", input(0, &[(d, 49, 0, 0)], &rw)),
        ("tx-request", input(0, &[(d, 44, 0, 0)], &request)),
        ("rx-buffer", input(0, &[(d, 4096 + 44, WRITE, 0)], &[])),
        (
            "rx-split",
            input(
                0,
                &[(d, 44, WRITE | NEXT, 1), (d + 44, 4096, WRITE, 0)],
                &[],
            ),
        ),
        ("short-header", input(0, &[(d, 20, 0, 0)], &request)),
        (
            "len-mismatch",
            input(0, &[(d, 44, NEXT, 1), (d + 44, 3, 0, 0)], &rw),
        ),
        (
            "oversize",
            input(0, &[(d, 44, 0, 0)], &header(op::RW, 1 << 20)),
        ),
        (
            "writable-in-tx",
            input(0, &[(d, 44, NEXT, 1), (d + 44, 5, WRITE, 0)], &rw),
        ),
        (
            "outside-memory",
            input(0, &[(0xffff_0000_0000, 44, 0, 0)], &[]),
        ),
        ("region-gap", input(0, &[(0x1_fff0, 0x20, 0, 0)], &[])),
        (
            "loop",
            input(0, &[(d, 44, NEXT, 1), (d, 44, NEXT, 0)], &request),
        ),
        (
            "indirect",
            input(0, &[(d + 0x100, 16, INDIRECT, 0)], &indirect),
        ),
        ("bad-head", input(200, &[(d, 44, 0, 0)], &request)),
        ("connect-line", b"\x00CONNECT 1024\n".to_vec()),
    ]
}

/// An indirect table (16-byte descriptors) to place in guest memory at DATA_ADDR.
fn indirect_table(descs: &[(u64, u32, u16, u16)]) -> Vec<u8> {
    let mut table = Vec::new();
    for &(addr, len, flags, next) in descs {
        table.extend_from_slice(&addr.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&flags.to_le_bytes());
        table.extend_from_slice(&next.to_le_bytes());
    }
    table
}

fn rng_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let buf = DATA_ADDR + 0x1000;
    vec![
        ("one-writable", input(0, &[(buf, 64, WRITE, 0)], &[])),
        ("read-only", input(0, &[(buf, 64, 0, 0)], &[])),
        (
            "chain-of-two",
            input(
                0,
                &[(buf, 32, WRITE | NEXT, 1), (buf + 64, 32, WRITE, 0)],
                &[],
            ),
        ),
        (
            "outside-memory",
            input(0, &[(0xffff_0000, 64, WRITE, 0)], &[]),
        ),
        ("huge", input(0, &[(0x1_0000, 0xf_0000, WRITE, 0)], &[])),
        (
            "across-regions",
            input(0, &[(0x1_fff0, 0x40, WRITE, 0)], &[]),
        ),
        (
            "loop",
            input(
                0,
                &[(buf, 8, WRITE | NEXT, 1), (buf, 8, WRITE | NEXT, 0)],
                &[],
            ),
        ),
        ("head-out-of-range", input(200, &[(buf, 64, WRITE, 0)], &[])),
        (
            "indirect",
            input(
                0,
                &[(DATA_ADDR, 32, INDIRECT, 0)],
                &indirect_table(&[(buf, 16, WRITE | NEXT, 1), (buf + 16, 16, WRITE, 0)]),
            ),
        ),
        ("empty", Vec::new()),
    ]
}

/// The committed seeds are byte for byte what the writer makes, so a change of the input layout
/// cannot leave a stale corpus behind. `RVM_WRITE_SEEDS=1 cargo test -p rvm-vmm --test chain_fuzz_seeds` (re)writes them first.
#[test]
fn committed_seeds_are_what_the_writer_makes() {
    let rewrite = "RVM_WRITE_SEEDS=1 cargo test -p rvm-vmm --test chain_fuzz_seeds";
    seeds::check_seeds(&seed_dir("virtio_vsock"), vsock_seeds(), rewrite);
    seeds::check_seeds(&seed_dir("virtio_rng"), rng_seeds(), rewrite);
}
