//! The guest side of the one-chain fuzz targets (vsock, rng): guest memory of two regions and a
//! split queue whose available ring offers one chain, both built from the fuzz input.
//!
//! Input layout: byte 0 is the head descriptor's index; the next [`TABLE_BYTES`] bytes are the
//! descriptor table (16 descriptors of 16 bytes: address, length, flags, next); the rest is
//! guest memory from [`DATA_ADDR`] on.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Descriptors in the fuzzed queue.
pub const QUEUE_SIZE: u16 = 16;
/// Bytes of the descriptor table.
pub const TABLE_BYTES: usize = 16 * QUEUE_SIZE as usize;
/// Guest address of the descriptor table.
pub const TABLE_ADDR: u64 = 0;
const AVAIL_ADDR: u64 = 0x100;
/// Guest address of the used ring.
pub const USED_ADDR: u64 = 0x200;
/// Guest address where the input's memory contents go.
pub const DATA_ADDR: u64 = 0x1000;
/// First region's size; a second, non-adjacent region makes gaps and region ends reachable.
pub const MEM_SIZE: u64 = 0x2_0000;
/// Start of the second region.
pub const SECOND_REGION: u64 = 0x3_0000;
const SECOND_SIZE: u64 = 0x1000;

/// Guest memory holding the input's descriptor table and contents, with an available ring of
/// one entry, `head`; None if the input cannot be placed.
pub fn memory(head: u8, rest: &[u8]) -> Option<GuestMemoryMmap> {
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), MEM_SIZE as usize),
        (GuestAddress(SECOND_REGION), SECOND_SIZE as usize),
    ])
    .ok()?;
    let (table, contents) = rest.split_at(rest.len().min(TABLE_BYTES));
    mem.write_slice(table, GuestAddress(TABLE_ADDR)).ok()?;
    let room = usize::try_from(MEM_SIZE - DATA_ADDR).ok()?;
    mem.write_slice(
        &contents[..contents.len().min(room)],
        GuestAddress(DATA_ADDR),
    )
    .ok()?;
    // Avail ring: no flags, one entry, the head.
    mem.write_obj(0u16, GuestAddress(AVAIL_ADDR)).ok()?;
    mem.write_obj(1u16, GuestAddress(AVAIL_ADDR + 2)).ok()?;
    mem.write_obj(u16::from(head), GuestAddress(AVAIL_ADDR + 4))
        .ok()?;
    Some(mem)
}

/// A ready split queue over that memory's rings.
pub fn queue(mem: &GuestMemoryMmap) -> Option<Queue> {
    let mut queue = Queue::new(QUEUE_SIZE).ok()?;
    queue
        .try_set_desc_table_address(GuestAddress(TABLE_ADDR))
        .ok()?;
    queue
        .try_set_avail_ring_address(GuestAddress(AVAIL_ADDR))
        .ok()?;
    queue
        .try_set_used_ring_address(GuestAddress(USED_ADDR))
        .ok()?;
    queue.set_ready(true);
    queue.is_valid(mem).then_some(queue)
}
