//! The body of the fuzz target `virtio_vsock`, shared by `vmm/fuzz` (cargo-fuzz) and the seed
//! replay test: the input is a guest's descriptor table and memory contents, whose one chain is
//! parsed as a TX packet and as an RX buffer, and its bytes also as a host CONNECT line.
//!
//! Input layout: byte 0 is the head descriptor's index; the next [`TABLE_BYTES`] bytes are the
//! descriptor table (16 descriptors of 16 bytes: address, length, flags, next); the rest is
//! guest memory from [`DATA_ADDR`] on.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::hybrid::{ConnectLine, MAX_LINE};
use super::packet::{parse_tx, rx_writer, Header, HEADER_LEN, MAX_PAYLOAD};
use virtio_queue::{Queue, QueueT};

/// Descriptors in the fuzzed queue.
pub const QUEUE_SIZE: u16 = 16;
/// Bytes of the descriptor table.
pub const TABLE_BYTES: usize = 16 * QUEUE_SIZE as usize;
/// Guest address of the descriptor table.
pub const TABLE_ADDR: u64 = 0;
const AVAIL_ADDR: u64 = 0x100;
const USED_ADDR: u64 = 0x200;
/// Guest address where the input's memory contents go.
pub const DATA_ADDR: u64 = 0x1000;
/// First region's size; a second, non-adjacent region makes gaps and region ends reachable.
pub const MEM_SIZE: u64 = 0x2_0000;
/// Start of the second region.
pub const SECOND_REGION: u64 = 0x3_0000;
const SECOND_SIZE: u64 = 0x1000;

/// Target `virtio_vsock`.
pub fn virtio_vsock(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let Some(mem) = memory(head, rest) else {
        return;
    };
    let Some(mut tx) = queue(&mem) else {
        return;
    };
    if let Some(chain) = tx.pop_descriptor_chain(&mem) {
        if let Ok(packet) = parse_tx(&mem, chain) {
            let header = packet.header;
            assert!(header.len <= MAX_PAYLOAD, "accepted oversize {header:?}");
            assert_eq!(packet.payload.available_bytes(), header.len as usize);
            assert_eq!(Header::from_bytes(&header.to_bytes()), header);
            let _ = header.check_from_guest(3);
        }
    }
    let Some(mut rx) = queue(&mem) else {
        return;
    };
    if let Some(chain) = rx.pop_descriptor_chain(&mem) {
        if let Ok(writer) = rx_writer(&mem, chain) {
            assert!(writer.available_bytes() >= HEADER_LEN);
        }
    }
    let mut line = ConnectLine::default();
    for (count, &byte) in rest.iter().enumerate() {
        match line.push(byte) {
            Ok(None) => assert!(count + 1 < MAX_LINE),
            Ok(Some(_)) | Err(_) => break,
        }
    }
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
