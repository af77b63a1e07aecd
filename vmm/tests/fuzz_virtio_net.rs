//! Replays the committed seed corpus of the `virtio_net` fuzz target
//! (`fuzz/corpus/virtio_net/`) through the function the fuzzer drives, so `cargo test` covers
//! it on stable. The seeds are written by
//! `RVM_WRITE_SEEDS=1 cargo test -p rvm-vmm --test fuzz_virtio_net`, and checked against their
//! writer on every run.

#[path = "../../tests/fixtures/seeds.rs"]
mod seeds;

use std::fs;
use std::path::{Path, PathBuf};

use rvm_vmm::devices::virtio::net::fuzzing::{self, DESC_BYTES, QUEUE_SIZE};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
const DATA: u64 = 0x4000;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/virtio_net")
}

#[test]
fn replay_virtio_net_seeds() {
    let mut count = 0;
    for entry in fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        println!("{}", path.display());
        fuzzing::virtio_net(&fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count >= seeds().len(), "{count} seeds");
}

/// One fuzz input: features selector, receive frame length, descriptors, heads, data.
fn input(selector: u8, rx_len: u16, descs: &[(u64, u32, u16, u16)], heads: &[u16]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(&rx_len.to_le_bytes());
    out.push(u8::try_from(heads.len()).unwrap_or(u8::MAX));
    let mut table = vec![0u8; usize::from(QUEUE_SIZE) * DESC_BYTES];
    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
        let d = &mut table[i * DESC_BYTES..(i + 1) * DESC_BYTES];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
    }
    out.extend_from_slice(&table);
    for head in heads {
        out.extend_from_slice(&head.to_le_bytes());
    }
    // Data at DATA: a GSO TCPv4 vnet header, then a frame.
    let header = [1u8, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0];
    out.extend_from_slice(&header);
    out.extend((0..2000u32).map(|i| i as u8));
    out
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tx-one-buffer", input(0, 0, &[(DATA, 1500, 0, 0)], &[0])),
        (
            "tx-three-buffers",
            input(
                0,
                1500,
                &[
                    (DATA, 12, NEXT, 1),
                    (DATA + 12, 1000, NEXT, 2),
                    (DATA + 0x1000, 500, 0, 0),
                ],
                &[0],
            ),
        ),
        (
            "tx-writable",
            input(
                2,
                60,
                &[(DATA, 64, NEXT, 1), (DATA + 64, 64, WRITE, 0)],
                &[0],
            ),
        ),
        (
            "tx-outside-memory",
            input(
                0,
                60,
                &[(0xffff_f000, 64, 0, 0), (0x3_fff0, 64, 0, 0)],
                &[0, 1],
            ),
        ),
        (
            "tx-oversize",
            input(
                0,
                60,
                &[(DATA, 0x3_0000, NEXT, 1), (DATA, 0x3_0000, 0, 0)],
                &[0],
            ),
        ),
        ("chain-loop", input(0, 60, &[(DATA, 64, NEXT, 0)], &[0, 0])),
        (
            "indirect",
            input(
                1,
                3000,
                &[(DATA + 0x2000, 64, INDIRECT, 0), (DATA, 4096, WRITE, 0)],
                &[0, 1],
            ),
        ),
        (
            "rx-mergeable",
            input(
                0,
                9000,
                &[
                    (DATA, 4096, WRITE, 0),
                    (DATA + 0x1000, 4096, WRITE, 0),
                    (DATA + 0x2000, 4096, WRITE, 0),
                ],
                &[0, 1, 2],
            ),
        ),
        (
            "rx-too-small",
            input(1, 3000, &[(DATA, 1024, WRITE, 0)], &[0]),
        ),
        (
            "rx-max-frame",
            input(
                0,
                u16::MAX,
                &[(DATA, 0x1_0000, WRITE, 0), (DATA, 0x1_0000, WRITE, 0)],
                &[0, 1],
            ),
        ),
        ("empty-queue", input(0, 100, &[], &[])),
        ("bad-head", input(0, 100, &[(DATA, 64, 0, 0)], &[200])),
    ]
}

/// The committed seeds are byte for byte what the writer makes, so a change of the input layout
/// cannot leave a stale corpus behind. `RVM_WRITE_SEEDS=1 cargo test -p rvm-vmm --test fuzz_virtio_net` (re)writes them first.
#[test]
fn committed_seeds_are_what_the_writer_makes() {
    let rewrite = "RVM_WRITE_SEEDS=1 cargo test -p rvm-vmm --test fuzz_virtio_net";
    seeds::check_seeds(&corpus_dir(), seeds(), rewrite);
}
