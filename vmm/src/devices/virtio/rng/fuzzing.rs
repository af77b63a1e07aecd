//! The body of the fuzz target `virtio_rng`, shared by `vmm/fuzz` (cargo-fuzz) and the seed
//! replay test: the input is a guest's descriptor table and memory contents; the request queue
//! offers one chain from it, and the device's own queue processing fills it.
//!
//! Input layout: byte 0 is the head descriptor's index; the next [`TABLE_BYTES`] bytes are the
//! descriptor table (16 descriptors of 16 bytes: address, length, flags, next); the rest is
//! guest memory from [`DATA_ADDR`] on.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{RngHandler, MAX_REQUEST_BYTES};
use crate::devices::virtio::Interrupt;

/// Descriptors in the fuzzed queue.
pub const QUEUE_SIZE: u16 = 16;
/// Bytes of the descriptor table.
pub const TABLE_BYTES: usize = 16 * QUEUE_SIZE as usize;
const TABLE_ADDR: u64 = 0;
const AVAIL_ADDR: u64 = 0x100;
const USED_ADDR: u64 = 0x200;
/// Guest address where the input's memory contents go.
pub const DATA_ADDR: u64 = 0x1000;
/// First region's size; a second, non-adjacent region makes gaps and region ends reachable.
const MEM_SIZE: u64 = 0x2_0000;
const SECOND_REGION: u64 = 0x3_0000;
const SECOND_SIZE: u64 = 0x1000;

/// Target `virtio_rng`.
pub fn virtio_rng(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let Some(mem) = memory(head, rest) else {
        return;
    };
    let Some(queue) = queue(&mem) else {
        return;
    };
    let Ok(eventfd) = EventFd::new(0) else {
        return;
    };
    let mut handler = RngHandler {
        mem: mem.clone(),
        queue,
        interrupt: Arc::new(Interrupt::new(eventfd)),
    };
    handler.process();
    if handler.interrupt.is_broken() {
        return;
    }
    // The one offered chain was completed, with no more bytes than the device hands out.
    let used_idx: u16 = mem
        .read_obj(GuestAddress(USED_ADDR + 2))
        .unwrap_or_default();
    assert_eq!(used_idx, 1, "the chain was not completed");
    let len: u32 = mem
        .read_obj(GuestAddress(USED_ADDR + 8))
        .unwrap_or_default();
    assert!(len as usize <= MAX_REQUEST_BYTES, "answered {len} bytes");
}

fn memory(head: u8, rest: &[u8]) -> Option<GuestMemoryMmap> {
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

fn queue(mem: &GuestMemoryMmap) -> Option<Queue> {
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
