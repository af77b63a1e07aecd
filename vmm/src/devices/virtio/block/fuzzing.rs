//! The `virtio_block` fuzz target's body, shared by `vmm/fuzz` (cargo-fuzz) and the corpus
//! replay test, so `cargo test` runs the committed seeds through the same code.
//!
//! Input: one flags byte (bit 0: read-only disk, bit 1: EVENT_IDX), then the first bytes of a
//! 64 KiB guest memory made of two regions (so buffers can straddle them), laid out as
//! [`DESC_TABLE`], [`AVAIL_RING`], [`USED_RING`] of a [`QUEUE_SIZE`]-entry queue and free space
//! for headers and data. Every available chain is parsed (checking the parser's promises) and
//! then run through the device's queue processing against a 16 KiB in-memory disk.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device::BlockHandler;
use super::request::{self, RequestKind, SECTOR_SHIFT, SECTOR_SIZE};
use super::slot::{device_id, Backing, DiskSlot};
use crate::devices::virtio::Interrupt;

#[cfg(test)]
#[path = "../../../../../tests/fixtures/seeds.rs"]
mod seeds;

/// Guest address of the descriptor table.
pub const DESC_TABLE: u64 = 0;
/// Guest address of the available ring.
pub const AVAIL_RING: u64 = 0x100;
/// Guest address of the used ring.
pub const USED_RING: u64 = 0x200;
/// Entries in the fuzzed queue.
pub const QUEUE_SIZE: u16 = 16;
/// Size of each of the two guest memory regions.
pub const REGION_SIZE: u64 = 0x8000;
/// Sectors of the fuzzed disk.
pub const DISK_SECTORS: u64 = 32;

/// Target `virtio_block`.
pub fn virtio_block(data: &[u8]) {
    let Some((&flags, image)) = data.split_first() else {
        return;
    };
    let Some(mem) = memory(image) else {
        return;
    };
    let (Some(mut parsed), Some(queue)) = (queue(flags & 2 != 0), queue(flags & 2 != 0)) else {
        return;
    };
    check_parser(&mem, &mut parsed);
    let Some(disk) = disk(flags & 1 != 0) else {
        return;
    };
    let Ok(irqfd) = EventFd::new(0) else {
        return;
    };
    let interrupt = Arc::new(Interrupt::new(irqfd));
    let mut handler = BlockHandler {
        mem: mem.clone(),
        queue,
        interrupt: Arc::clone(&interrupt),
        slot: Arc::new(DiskSlot::new(Some(disk))),
    };
    handler.process();
    if !interrupt.is_broken() {
        assert_eq!(
            handler.queue.next_used(),
            handler.queue.next_avail(),
            "every chain taken gets a used entry"
        );
    }
}

fn memory(image: &[u8]) -> Option<GuestMemoryMmap> {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), REGION_SIZE as usize),
        (GuestAddress(REGION_SIZE), REGION_SIZE as usize),
    ])
    .ok()?;
    let len = image.len().min(2 * REGION_SIZE as usize);
    mem.write_slice(&image[..len], GuestAddress(0)).ok()?;
    Some(mem)
}

fn queue(event_idx: bool) -> Option<Queue> {
    let mut queue = Queue::new(QUEUE_SIZE).ok()?;
    queue.set_size(QUEUE_SIZE);
    queue.set_desc_table_address(Some(DESC_TABLE as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL_RING as u32), Some(0));
    queue.set_used_ring_address(Some(USED_RING as u32), Some(0));
    queue.set_event_idx(event_idx);
    queue.set_ready(true);
    Some(queue)
}

/// A fresh in-memory file of [`DISK_SECTORS`] sectors.
fn disk(read_only: bool) -> Option<Backing> {
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"rvm-fuzz-disk".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(DISK_SECTORS * SECTOR_SIZE).ok()?;
    Some(Backing {
        file: Arc::new(file),
        sectors: DISK_SECTORS,
        read_only,
        id: device_id(Some("fuzz")),
    })
}

/// Parses every available chain and checks what a parsed request promises.
fn check_parser(mem: &GuestMemoryMmap, queue: &mut Queue) {
    let Ok(chains) = queue.iter(mem) else {
        return;
    };
    for chain in chains {
        let parsed = request::parse(mem, chain, DISK_SECTORS);
        let Ok(request) = parsed.request else {
            continue;
        };
        assert!(
            parsed.status.is_some(),
            "a request always has a status byte"
        );
        let total: usize = request.data.iter().map(|buf| buf.len()).sum();
        assert_eq!(total, request.data_len);
        match request.kind {
            RequestKind::In { sector } | RequestKind::Out { sector } => {
                assert_eq!(request.data_len as u64 % SECTOR_SIZE, 0);
                let end = sector + (request.data_len as u64 >> SECTOR_SHIFT);
                assert!(end <= DISK_SECTORS, "{:?} beyond the disk", request.kind);
            }
            RequestKind::Discard(range) | RequestKind::WriteZeroes { range, .. } => {
                assert!(range.sector + u64::from(range.sectors) <= DISK_SECTORS);
            }
            RequestKind::Flush | RequestKind::GetId => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use virtio_bindings::virtio_blk::*;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };

    const NEXT: u16 = VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = VRING_DESC_F_WRITE as u16;

    fn corpus_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/virtio_block")
    }

    /// A fuzz input: flags, then a memory image with the given descriptors (index, addr, len,
    /// flags, next), available heads, and bytes placed at addresses.
    fn seed(
        flags: u8,
        descs: &[(u16, u64, u32, u16, u16)],
        heads: &[u16],
        bytes: &[(u64, Vec<u8>)],
    ) -> Vec<u8> {
        let mut image = vec![0u8; 0x1000];
        let mut put = |addr: u64, data: &[u8]| {
            let start = addr as usize;
            if image.len() < start + data.len() {
                image.resize(start + data.len(), 0);
            }
            image[start..start + data.len()].copy_from_slice(data);
        };
        for &(index, addr, len, flags, next) in descs {
            let mut d = Vec::new();
            d.extend_from_slice(&addr.to_le_bytes());
            d.extend_from_slice(&len.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&next.to_le_bytes());
            put(DESC_TABLE + u64::from(index) * 16, &d);
        }
        put(AVAIL_RING + 2, &(heads.len() as u16).to_le_bytes());
        for (i, head) in heads.iter().enumerate() {
            put(AVAIL_RING + 4 + 2 * i as u64, &head.to_le_bytes());
        }
        for (addr, data) in bytes {
            put(*addr, data);
        }
        let mut input = vec![flags];
        input.extend_from_slice(&image);
        input
    }

    fn header(request_type: u32, sector: u64) -> Vec<u8> {
        let mut h = request_type.to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&sector.to_le_bytes());
        h
    }

    fn segment(sector: u64, sectors: u32, flags: u32) -> Vec<u8> {
        let mut s = sector.to_le_bytes().to_vec();
        s.extend_from_slice(&sectors.to_le_bytes());
        s.extend_from_slice(&flags.to_le_bytes());
        s
    }

    const H: u64 = 0x400;
    const S: u64 = 0x4f0;
    const D: u64 = 0x600;

    /// A three-descriptor request: header, data (flags `data_flags`), status.
    fn simple(
        flags: u8,
        request_type: u32,
        sector: u64,
        data_len: u32,
        data_flags: u16,
        data: Vec<u8>,
    ) -> Vec<u8> {
        seed(
            flags,
            &[
                (0, H, 16, NEXT, 1),
                (1, D, data_len, data_flags | NEXT, 2),
                (2, S, 1, WRITE, 0),
            ],
            &[0],
            &[(H, header(request_type, sector)), (D, data)],
        )
    }

    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let two = |flags| {
            seed(
                flags,
                &[(0, H, 16, NEXT, 1), (1, S, 1, WRITE, 0)],
                &[0],
                &[(H, header(VIRTIO_BLK_T_FLUSH, 0))],
            )
        };
        vec![
            ("read", simple(0, VIRTIO_BLK_T_IN, 1, 1024, WRITE, vec![])),
            (
                "read-event-idx",
                simple(2, VIRTIO_BLK_T_IN, 0, 512, WRITE, vec![]),
            ),
            (
                "write",
                simple(0, VIRTIO_BLK_T_OUT, 2, 512, 0, vec![0xab; 512]),
            ),
            (
                "write-read-only",
                simple(1, VIRTIO_BLK_T_OUT, 2, 512, 0, vec![0xab; 512]),
            ),
            ("flush", two(0)),
            (
                "get-id",
                simple(0, VIRTIO_BLK_T_GET_ID, 0, 20, WRITE, vec![]),
            ),
            (
                "discard",
                simple(0, VIRTIO_BLK_T_DISCARD, 0, 16, 0, segment(4, 8, 0)),
            ),
            (
                "write-zeroes",
                simple(0, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, 0, segment(1, 3, 1)),
            ),
            ("unsupported", simple(0, 99, 0, 16, 0, vec![])),
            (
                "beyond-capacity",
                simple(0, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, 1024, WRITE, vec![]),
            ),
            ("unaligned", simple(0, VIRTIO_BLK_T_OUT, 0, 100, 0, vec![])),
            (
                "wrong-direction",
                simple(0, VIRTIO_BLK_T_IN, 0, 512, 0, vec![]),
            ),
            // Data straddling the two memory regions.
            (
                "straddle",
                seed(
                    0,
                    &[
                        (0, H, 16, NEXT, 1),
                        (1, REGION_SIZE - 256, 512, WRITE | NEXT, 2),
                        (2, S, 1, WRITE, 0),
                    ],
                    &[0],
                    &[(H, header(VIRTIO_BLK_T_IN, 3))],
                ),
            ),
            // Two chains, then a loop.
            (
                "loop",
                seed(
                    0,
                    &[
                        (0, H, 16, NEXT, 1),
                        (1, D, 512, WRITE | NEXT, 0),
                        (2, H, 16, NEXT, 3),
                        (3, S, 1, WRITE, 0),
                    ],
                    &[0, 2],
                    &[(H, header(VIRTIO_BLK_T_IN, 0))],
                ),
            ),
            // An indirect table of header, data, status.
            (
                "indirect",
                seed(
                    0,
                    &[(0, 0x800, 48, VRING_DESC_F_INDIRECT as u16, 0)],
                    &[0],
                    &[
                        (H, header(VIRTIO_BLK_T_IN, 5)),
                        (0x800, {
                            let mut t = Vec::new();
                            for (addr, len, flags, next) in [
                                (H, 16u32, NEXT, 1u16),
                                (D, 512, WRITE | NEXT, 2),
                                (S, 1, WRITE, 0),
                            ] {
                                t.extend_from_slice(&addr.to_le_bytes());
                                t.extend_from_slice(&len.to_le_bytes());
                                t.extend_from_slice(&flags.to_le_bytes());
                                t.extend_from_slice(&next.to_le_bytes());
                            }
                            t
                        }),
                    ],
                ),
            ),
            (
                "no-status",
                seed(
                    0,
                    &[(0, H, 16, NEXT, 1), (1, S, 1, 0, 0)],
                    &[0],
                    &[(H, header(VIRTIO_BLK_T_FLUSH, 0))],
                ),
            ),
            ("bad-head", seed(0, &[], &[40], &[])),
        ]
    }

    #[test]
    fn replays_the_corpus() {
        let mut count = 0;
        for entry in std::fs::read_dir(corpus_dir()).unwrap() {
            let path = entry.unwrap().path();
            println!("{}", path.display());
            virtio_block(&std::fs::read(&path).unwrap());
            count += 1;
        }
        assert!(count >= seeds().len(), "{count} seeds");
    }

    #[test]
    fn seeds_run_clean() {
        for (name, data) in seeds() {
            println!("{name}");
            virtio_block(&data);
        }
    }

    /// The committed corpus is byte for byte what [`seeds`] makes, so a change of the input
    /// layout cannot leave a stale corpus behind. `RVM_WRITE_SEEDS=1 cargo test -p rvm-vmm --lib
    /// committed_seeds` (re)writes it first.
    #[test]
    fn committed_seeds_are_what_the_writer_makes() {
        super::seeds::check_seeds(
            &corpus_dir(),
            seeds(),
            "RVM_WRITE_SEEDS=1 cargo test -p rvm-vmm --lib committed_seeds",
        );
    }
}
