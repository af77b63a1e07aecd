//! Helpers shared by the net device's unit tests: guest memory and mock queues.

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Device-writable descriptor flag.
pub const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
/// Chained descriptor flag.
pub const NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
/// Where test buffers live (the mock rings use the memory below).
pub const DATA: u64 = 0x10_0000;

/// 2 MiB of guest memory.
pub fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
}

/// A descriptor.
pub fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// A mock queue of 16 entries holding `descs`.
pub fn mock_queue<'a>(
    mem: &'a GuestMemoryMmap,
    descs: &[RawDescriptor],
) -> MockSplitQueue<'a, GuestMemoryMmap> {
    let vq = MockSplitQueue::new(mem, 16);
    vq.add_desc_chains(descs, 0).unwrap();
    vq
}

/// Used ring entries `(id, len)` so far.
pub fn used(vq: &MockSplitQueue<'_, GuestMemoryMmap>) -> Vec<(u32, u32)> {
    let used = vq.used();
    (0..used.idx().load())
        .map(|i| {
            let e = used.ring().ref_at(usize::from(i)).unwrap().load();
            (e.id(), e.len())
        })
        .collect()
}
