//! Receive path: copies one frame read from the TAP (vnet header included) into the guest's
//! receive chains. With MRG_RXBUF a frame spreads over as many chains as it needs and the
//! header's `num_buffers` says how many; without it a frame must fit one chain. The chains of
//! one frame become visible to the driver together, with one update of the used index, and
//! the interrupt decision counts every entry added since the last one.

use std::io::Write;
use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueOwnedT, QueueT, Writer};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::frame::VNET_HDR_LEN;

/// What became of a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Written into this many chains.
    Delivered(u16),
    /// The guest has not posted enough buffers: nothing was consumed; try again once it adds
    /// some.
    NoBuffers,
    /// The frame does not fit the guest's buffer (without MRG_RXBUF): the chain was returned
    /// empty and the frame dropped.
    TooBig,
}

/// The ring itself is corrupt: the device must stop.
#[derive(Debug, thiserror::Error)]
#[error("receive queue: {0}")]
pub struct RingError(#[from] pub virtio_queue::Error);

/// Delivers `frame` into the receive `queue`; `used` counts the used entries added (for one
/// interrupt per batch). `frame` must be at least [`VNET_HDR_LEN`] long; its `num_buffers`
/// field is overwritten.
pub fn deliver(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    frame: &mut [u8],
    mergeable: bool,
    used: &mut u32,
) -> Result<Delivery, RingError> {
    let mut start = Wrapping(queue.next_avail());
    let mut chains: Vec<(u16, Writer<'_>)> = Vec::new();
    let mut capacity = 0usize;
    while capacity < frame.len() {
        let Some(chain) = queue.iter(mem)?.next() else {
            queue.set_next_avail(start.0);
            return Ok(Delivery::NoBuffers);
        };
        let head = chain.head_index();
        let writer = match Writer::new(mem, chain) {
            Ok(writer) if writer.available_bytes() > 0 => writer,
            result => {
                // A chain with no writable byte in guest memory is the guest's loss: return
                // it and the chains gathered so far empty, and start over after it.
                if let Err(e) = result {
                    tracing::debug!("net: bad receive chain {head}: {e}");
                }
                for (other, _) in chains.drain(..) {
                    add_used(mem, queue, other, 0, used)?;
                }
                add_used(mem, queue, head, 0, used)?;
                capacity = 0;
                start = Wrapping(queue.next_avail());
                continue;
            }
        };
        capacity += writer.available_bytes();
        chains.push((head, writer));
        if !mergeable && capacity < frame.len() {
            tracing::debug!(
                "net: receive buffer of {capacity} bytes too small for a {}-byte frame",
                frame.len()
            );
            add_used(mem, queue, head, 0, used)?;
            return Ok(Delivery::TooBig);
        }
    }
    let count = u16::try_from(chains.len()).unwrap_or(u16::MAX);
    if let Some(field) = frame.get_mut(VNET_HDR_LEN - 2..VNET_HDR_LEN) {
        field.copy_from_slice(&count.to_le_bytes());
    }
    let mut rest: &[u8] = frame;
    let mut entries = Vec::with_capacity(chains.len());
    for (head, mut writer) in chains {
        let n = writer.available_bytes().min(rest.len());
        let (part, tail) = rest.split_at(n);
        let written = match writer.write_all(part) {
            Ok(()) => n,
            Err(e) => {
                tracing::debug!("net: cannot fill receive chain {head}: {e}");
                0
            }
        };
        rest = tail;
        entries.push((head, u32::try_from(written).unwrap_or(0)));
    }
    publish(mem, queue, &entries, used)?;
    Ok(Delivery::Delivered(count))
}

/// Size of the used ring's header (`flags`, `idx`) and of one of its elements (`id`, `len`).
const USED_RING_HEADER: u64 = 4;
const USED_ELEMENT: u64 = 8;
/// Size of the available ring's header (`flags`, `idx`) and of one of its elements.
const AVAIL_RING_HEADER: u64 = 4;
const AVAIL_ELEMENT: u64 = 2;

/// Adds a used entry per `(head, len)` of `entries` and makes them all visible with a single
/// update of the used index. The driver reads the `num_buffers` chains of a frame as soon as it
/// sees the first (virtio 1.2, 5.1.6.4: the device uses them together); one index update per
/// chain let Linux find the frame's later chains missing and drop it.
fn publish(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    entries: &[(u16, u32)],
    used: &mut u32,
) -> Result<(), RingError> {
    let Some((&(last_head, last_len), earlier)) = entries.split_last() else {
        return Ok(());
    };
    let size = queue.size();
    for &(head, len) in earlier {
        if head >= size {
            return Err(RingError(virtio_queue::Error::InvalidDescriptorIndex));
        }
        let slot = u64::from(queue.next_used() % size);
        let element = GuestAddress(queue.used_ring())
            .checked_add(USED_RING_HEADER + slot * USED_ELEMENT)
            .ok_or(RingError(virtio_queue::Error::AddressOverflow))?;
        let mut bytes = [0u8; USED_ELEMENT as usize];
        bytes[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        bytes[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&bytes, element)
            .map_err(|e| RingError(virtio_queue::Error::GuestMemory(e)))?;
        queue.set_next_used(queue.next_used().wrapping_add(1));
    }
    // The last element, then the index with release ordering: the elements written above are
    // visible to the driver before the index that covers them.
    queue.add_used(mem, last_head, last_len)?;
    *used += u32::try_from(entries.len()).unwrap_or(u32::MAX);
    Ok(())
}

/// Whether the driver wants an interrupt for the used entries added since the used index was
/// `since`: with EVENT_IDX, when its `used_event` lies in `[since, next_used)`; else always.
/// (virtio-queue's own test counts `add_used` calls, which [`publish`] does not make for every
/// entry.)
pub fn needs_interrupt(
    mem: &GuestMemoryMmap,
    queue: &Queue,
    since: u16,
) -> Result<bool, RingError> {
    // The used index stores before the read of `used_event`.
    fence(Ordering::SeqCst);
    if !queue.event_idx_enabled() {
        return Ok(true);
    }
    let offset = AVAIL_RING_HEADER + u64::from(queue.size()) * AVAIL_ELEMENT;
    let address = GuestAddress(queue.avail_ring())
        .checked_add(offset)
        .ok_or(RingError(virtio_queue::Error::AddressOverflow))?;
    let used_event = u16::from_le(
        mem.load::<u16>(address, Ordering::Acquire)
            .map_err(|e| RingError(virtio_queue::Error::GuestMemory(e)))?,
    );
    let next = queue.next_used();
    Ok(next.wrapping_sub(used_event).wrapping_sub(1) < next.wrapping_sub(since))
}

fn add_used(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    head: u16,
    len: u32,
    used: &mut u32,
) -> Result<(), RingError> {
    queue.add_used(mem, head, len)?;
    *used += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn mergeable_frame_spreads_over_chains() {
        let mem = memory();
        let vq = mock_queue(
            &mem,
            &[
                desc(DATA, 2048, WRITE, 0),
                desc(DATA + 0x1000, 2048, WRITE, 0),
                desc(DATA + 0x2000, 2048, WRITE, 0),
            ],
        );
        let mut queue = vq.create_queue().unwrap();
        let mut f = frame(3000);
        let mut count = 0;
        let result = deliver(&mem, &mut queue, &mut f, true, &mut count).unwrap();
        assert_eq!(result, Delivery::Delivered(2));
        assert_eq!(count, 2);
        assert_eq!(used(&vq), [(0, 2048), (1, 952)]);
        let mut got = vec![0u8; 3000];
        mem.read_slice(&mut got[..2048], GuestAddress(DATA))
            .unwrap();
        mem.read_slice(&mut got[2048..], GuestAddress(DATA + 0x1000))
            .unwrap();
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 2, "num_buffers");
        assert_eq!(got[12..], f[12..]);
        assert_eq!(queue.next_avail(), 2, "the third chain stays available");
    }

    #[test]
    fn a_frame_is_published_with_one_index_update() {
        let mem = memory();
        let vq = mock_queue(&mem, &[desc(DATA, 2048, WRITE, 0)]);
        let mut queue = vq.create_queue().unwrap();
        let mut count = 0;
        // The last entry is refused: the two before it are written but not published.
        let err = publish(&mem, &mut queue, &[(0, 10), (1, 20), (99, 30)], &mut count);
        assert!(err.is_err());
        assert_eq!(
            vq.used().idx().load(),
            0,
            "no index update before the last entry"
        );
        assert_eq!(count, 0);
        let mut queue = vq.create_queue().unwrap();
        publish(&mem, &mut queue, &[(0, 10), (1, 20), (2, 30)], &mut count).unwrap();
        assert_eq!(used(&vq), [(0, 10), (1, 20), (2, 30)]);
        assert_eq!((queue.next_used(), count), (3, 3));
    }

    #[test]
    fn interrupts_follow_used_event() {
        let mem = memory();
        let vq = mock_queue(&mem, &[desc(DATA, 2048, WRITE, 0)]);
        let mut queue: Queue = vq.create_queue().unwrap();
        let used_event = vq.avail_addr().unchecked_add(4 + 2 * 16);
        let mut count = 0;
        publish(&mem, &mut queue, &[(0, 1), (1, 1), (2, 1)], &mut count).unwrap();
        // Without EVENT_IDX: always.
        assert!(needs_interrupt(&mem, &queue, 0).unwrap());
        queue.set_event_idx(true);
        for (event, since, wanted) in [
            (0u16, 0u16, true),
            (2, 0, true),
            (3, 0, false),
            (1, 2, false),
        ] {
            mem.write_obj(event.to_le(), used_event).unwrap();
            assert_eq!(
                needs_interrupt(&mem, &queue, since).unwrap(),
                wanted,
                "used_event {event}, entries {since}..3"
            );
        }
    }

    #[test]
    fn without_mergeable_buffers_a_frame_needs_one_big_chain() {
        let mem = memory();
        let vq = mock_queue(
            &mem,
            &[
                desc(DATA, 1000, WRITE, 0),
                desc(DATA + 0x1000, 2000, WRITE, NEXT),
                desc(DATA + 0x2000, 2000, WRITE, 0),
            ],
        );
        // Chain 0: one 1000-byte buffer; chain 1: two descriptors, 4000 bytes.
        vq.desc_table()
            .store(1, desc(DATA + 0x1000, 2000, WRITE | NEXT, 2))
            .unwrap();
        let mut queue = vq.create_queue().unwrap();
        let mut count = 0;
        let mut f = frame(3000);
        assert_eq!(
            deliver(&mem, &mut queue, &mut f, false, &mut count).unwrap(),
            Delivery::TooBig
        );
        assert_eq!(
            deliver(&mem, &mut queue, &mut f, false, &mut count).unwrap(),
            Delivery::Delivered(1)
        );
        assert_eq!(used(&vq), [(0, 0), (1, 3000)]);
        let mut got = vec![0u8; 1000];
        mem.read_slice(&mut got, GuestAddress(DATA + 0x2000))
            .unwrap();
        assert_eq!(got[..], f[2000..]);
    }

    #[test]
    fn too_few_buffers_consume_nothing() {
        let mem = memory();
        let vq = mock_queue(&mem, &[desc(DATA, 1024, WRITE, 0)]);
        let mut queue = vq.create_queue().unwrap();
        let mut count = 0;
        let mut f = frame(3000);
        assert_eq!(
            deliver(&mem, &mut queue, &mut f, true, &mut count).unwrap(),
            Delivery::NoBuffers
        );
        assert_eq!((queue.next_avail(), count), (0, 0));
        assert!(used(&vq).is_empty());
        // The guest adds a buffer: now the frame fits.
        vq.add_desc_chains(&[desc(DATA + 0x1000, 4096, WRITE, 0)], 1)
            .unwrap();
        assert_eq!(
            deliver(&mem, &mut queue, &mut f, true, &mut count).unwrap(),
            Delivery::Delivered(2)
        );
    }

    #[test]
    fn hostile_receive_chains_are_returned_empty() {
        let mem = memory();
        let vq = mock_queue(
            &mem,
            &[
                desc(DATA, 1024, 0, 0),              // read-only
                desc(0xffff_0000, 1024, WRITE, 0),   // outside guest memory
                desc(0x1f_ff00, 0x1000, WRITE, 0),   // runs off the end
                desc(DATA + 0x1000, 4096, WRITE, 0), // good
            ],
        );
        let mut queue = vq.create_queue().unwrap();
        let mut count = 0;
        let mut f = frame(100);
        assert_eq!(
            deliver(&mem, &mut queue, &mut f, true, &mut count).unwrap(),
            Delivery::Delivered(1)
        );
        assert_eq!(used(&vq), [(0, 0), (1, 0), (2, 0), (3, 100)]);
    }
}
