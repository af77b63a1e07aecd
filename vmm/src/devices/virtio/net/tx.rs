//! Transmit path: every available chain is parsed ([`parse_tx`]) and written to the TAP as one
//! frame straight from guest memory (`writev`), or dropped if the parser refuses it. Chains
//! are always returned, sent or not, with a used length of 0.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::frame::parse_tx;
use super::tap::Tap;

/// Host buffers of the frame being sent.
///
/// The pointers are only valid while the frame is being written; the vector is kept between
/// frames for its allocation, its stale contents are cleared before each use.
#[derive(Debug, Default)]
pub struct IoVecs(pub Vec<libc::iovec>);

// SAFETY: the raw pointers inside are never dereferenced except by `writev` within the call
// of `transmit` that filled them, on the thread that owns the vector at that moment.
unsafe impl Send for IoVecs {}

/// Counts of one transmit pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Chains returned to the guest.
    pub used: u32,
    /// Frames the TAP accepted.
    pub sent: u32,
    /// Chains dropped (refused by the parser, or by the TAP).
    pub dropped: u32,
}

/// Sends every frame the guest queued. An error means the ring is corrupt.
pub fn transmit(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    tap: &Tap,
    features: u64,
    iovecs: &mut IoVecs,
) -> Result<TxStats, virtio_queue::Error> {
    let mut stats = TxStats::default();
    loop {
        queue.disable_notification(mem)?;
        loop {
            let next = queue.iter(mem)?.next();
            let Some(chain) = next else { break };
            let head = chain.head_index();
            match parse_tx(mem, chain, features, &mut iovecs.0) {
                Ok(frame) => {
                    // SAFETY: parse_tx checked that every iovec lies inside guest memory, which
                    // `mem` keeps mapped for the duration of this call.
                    match unsafe { tap.write_frame(&iovecs.0) } {
                        Ok(_) => stats.sent += 1,
                        Err(e) => {
                            tracing::debug!("net: TAP refused a {}-byte frame: {e}", frame.len);
                            stats.dropped += 1;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("net: transmit chain {head} dropped: {e}");
                    stats.dropped += 1;
                }
            }
            iovecs.0.clear();
            queue.add_used(mem, head, 0)?;
            stats.used += 1;
        }
        if !queue.enable_notification(mem)? {
            return Ok(stats);
        }
    }
}
