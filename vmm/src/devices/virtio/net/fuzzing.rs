//! Body of the `virtio_net` fuzz target (`vmm/fuzz`), shared with the seed replay test.
//!
//! The input describes a split queue in a small guest memory: a features byte, a frame length
//! for the receive side, up to [`QUEUE_SIZE`] raw descriptors (address, length, flags, next),
//! the available ring's heads, and guest memory contents. Every chain is run through the
//! transmit parser, then one frame is delivered into the same chains as receive buffers. The
//! invariants: no panic, accepted frames within limits and inside guest memory, and the used
//! ring never gets more entries than were available.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::features;
use super::frame::{parse_tx, MAX_FRAME_LEN, VNET_HDR_LEN};
use super::rx::deliver;

/// Entries of the fuzzed queue.
pub const QUEUE_SIZE: u16 = 16;
/// Size of the fuzzed guest memory.
pub const MEMORY_SIZE: u64 = 0x4_0000;
const DESC_TABLE: u64 = 0x1000;
const AVAIL_RING: u64 = 0x2000;
const USED_RING: u64 = 0x3000;
const DATA: u64 = 0x4000;
/// Bytes of one raw descriptor in the input.
pub const DESC_BYTES: usize = 16;

/// Feature sets the first input byte chooses from.
const FEATURE_SETS: [u64; 4] = [
    features::OFFERED,
    features::OFFERED & !features::MRG_RXBUF,
    0,
    features::CSUM | features::HOST_TSO4,
];

/// The fuzz target.
pub fn virtio_net(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((frame_len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let Some((&count, rest)) = rest.split_first() else {
        return;
    };
    let count = usize::from(count) % (usize::from(QUEUE_SIZE) + 1);
    let features = FEATURE_SETS[usize::from(selector) % FEATURE_SETS.len()];
    let Some(mem) = build_memory(count, rest) else {
        return;
    };
    run_tx(&mem, features);
    // The frame length spans 0..=MAX_FRAME_LEN + some, header included.
    let len = VNET_HDR_LEN + usize::from(u16::from_le_bytes(*frame_len));
    run_rx(&mem, len, features & features::MRG_RXBUF != 0);
}

/// Guest memory with the input's descriptor table, available ring and data.
fn build_memory(count: usize, rest: &[u8]) -> Option<GuestMemoryMmap> {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_SIZE as usize)]).ok()?;
    let table_len = (usize::from(QUEUE_SIZE) * DESC_BYTES).min(rest.len());
    let (table, rest) = rest.split_at(table_len);
    mem.write_slice(table, GuestAddress(DESC_TABLE)).ok()?;
    let heads_len = (count * 2).min(rest.len());
    let (heads, rest) = rest.split_at(heads_len);
    // avail ring: flags, idx, ring[]
    let idx = u16::try_from(heads.len() / 2).ok()?;
    mem.write_slice(&idx.to_le_bytes(), GuestAddress(AVAIL_RING + 2))
        .ok()?;
    mem.write_slice(heads, GuestAddress(AVAIL_RING + 4)).ok()?;
    let data_len = rest.len().min((MEMORY_SIZE - DATA) as usize);
    mem.write_slice(&rest[..data_len], GuestAddress(DATA))
        .ok()?;
    Some(mem)
}

fn queue(mem: &GuestMemoryMmap) -> Option<Queue> {
    let mut queue = Queue::new(QUEUE_SIZE).ok()?;
    queue.set_desc_table_address(Some(DESC_TABLE as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL_RING as u32), Some(0));
    queue.set_used_ring_address(Some(USED_RING as u32), Some(0));
    queue.set_ready(true);
    assert!(queue.is_valid(mem));
    Some(queue)
}

fn run_tx(mem: &GuestMemoryMmap, features: u64) {
    let Some(mut queue) = queue(mem) else {
        return;
    };
    let host = mem
        .find_region(GuestAddress(0))
        .map(|region| region.as_ptr() as usize);
    let mut iovecs = Vec::new();
    loop {
        let next = match queue.iter(mem) {
            Ok(mut iter) => iter.next(),
            Err(_) => return,
        };
        let Some(chain) = next else { return };
        if let Ok(frame) = parse_tx(mem, chain, features, &mut iovecs) {
            assert!((VNET_HDR_LEN..=MAX_FRAME_LEN).contains(&frame.len));
            let total: usize = iovecs.iter().map(|iov| iov.iov_len).sum();
            assert_eq!(total, frame.len);
            if let Some(base) = host {
                for iov in &iovecs {
                    let start = iov.iov_base as usize;
                    assert!(start >= base && start + iov.iov_len <= base + MEMORY_SIZE as usize);
                }
            }
        }
    }
}

fn run_rx(mem: &GuestMemoryMmap, len: usize, mergeable: bool) {
    let Some(mut queue) = queue(mem) else {
        return;
    };
    let mut frame: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut used = 0u32;
    let _ = deliver(mem, &mut queue, &mut frame, mergeable, &mut used);
    assert!(used <= u32::from(QUEUE_SIZE));
}
