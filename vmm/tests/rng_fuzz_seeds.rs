//! Replays the committed seed corpus of the `virtio_rng` fuzz target
//! (`fuzz/corpus/virtio_rng/`) through the function the fuzzer drives.
//!
//! The seeds are written by `cargo test -p rvm-vmm --test rng_fuzz_seeds -- --ignored`.

use std::fs;
use std::path::{Path, PathBuf};

use rvm_vmm::devices::virtio::rng::fuzzing::{virtio_rng, DATA_ADDR, TABLE_BYTES};

const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/virtio_rng")
}

#[test]
fn replay_virtio_rng_seeds() {
    let mut count = 0;
    for entry in fs::read_dir(seed_dir()).unwrap() {
        let path = entry.unwrap().path();
        println!("{}", path.display());
        virtio_rng(&fs::read(&path).unwrap());
        count += 1;
    }
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

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
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

#[test]
#[ignore = "writes the seed corpus; run by hand after changing the input layout"]
fn write_seeds() {
    fs::create_dir_all(seed_dir()).unwrap();
    for (name, data) in seeds() {
        fs::write(seed_dir().join(name), data).unwrap();
    }
}
