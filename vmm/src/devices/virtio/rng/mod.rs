//! virtio-rng (entropy device): fills the guest's device-writable buffers with bytes from the
//! host's `getrandom`, at most [`MAX_REQUEST_BYTES`] per request.

pub mod fuzzing;

use std::io::Write;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, Writer};
use vm_memory::GuestMemoryMmap;

use super::worker::{Poller, QueueHandler, Worker};
use super::{complete, ActivateError, ActiveQueues, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};

/// Virtio device ID of an entropy source.
const VIRTIO_ID_RNG: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
/// Entries in the request queue.
const QUEUE_SIZE: u16 = 256;
/// Most bytes handed out per request: a guest asking for more gets a short answer, as the
/// specification allows.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The entropy device.
#[derive(Debug, Default)]
pub struct Rng {
    worker: Option<Worker>,
}

impl Rng {
    /// A new, inactive device.
    pub fn new() -> Self {
        Rng::default()
    }
}

impl VirtioDevice for Rng {
    fn name(&self) -> &'static str {
        "rng"
    }

    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, _offset: u64, _data: &mut [u8]) {}

    fn activate(&mut self, context: ActiveQueues) -> Result<(), ActivateError> {
        let ActiveQueues {
            mem,
            mut queues,
            notifiers,
            interrupt,
            ..
        } = context;
        let queue = queues.pop().ok_or_else(|| ActivateError::BadConfig {
            device: "rng",
            reason: "no request queue".into(),
        })?;
        let handler = RngHandler {
            mem,
            queue,
            interrupt,
        };
        let worker = Worker::start_device("rng", handler, notifiers)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

/// The rng's queue processing, on its worker thread.
struct RngHandler {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

impl RngHandler {
    fn process(&mut self) {
        if self.interrupt.is_broken() {
            return;
        }
        let chains: Vec<_> = match self.queue.iter(&self.mem) {
            Ok(iter) => iter.collect(),
            Err(e) => {
                self.interrupt.mark_broken("rng", &e);
                return;
            }
        };
        for chain in chains {
            let head = chain.head_index();
            let written = fill_request(&self.mem, chain);
            if complete(
                "rng",
                &self.mem,
                &mut self.queue,
                &self.interrupt,
                head,
                written,
            )
            .is_err()
            {
                return;
            }
        }
    }
}

/// Writes random bytes into the chain's device-writable buffers; returns how many. A chain
/// whose buffers lie outside guest memory gets none.
fn fill_request(
    mem: &GuestMemoryMmap,
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
) -> u32 {
    let mut writer: Writer<'_> = match Writer::new(mem, chain) {
        Ok(writer) => writer,
        Err(e) => {
            tracing::debug!("rng: bad request: {e}");
            return 0;
        }
    };
    let len = writer.available_bytes().min(MAX_REQUEST_BYTES);
    let mut bytes = vec![0u8; len];
    if let Err(e) = getrandom::fill(&mut bytes) {
        crate::error_limited!("rng: getrandom failed: {e}");
        return 0;
    }
    match writer.write_all(&bytes) {
        Ok(()) => u32::try_from(len).unwrap_or(0),
        Err(e) => {
            tracing::debug!("rng: cannot write the request: {e}");
            0
        }
    }
}

impl QueueHandler for RngHandler {
    fn queue_notified(&mut self, _poller: &Poller, _index: usize) {
        self.process();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

    fn handler<'a>(
        mem: &'a GuestMemoryMmap,
        descs: &[RawDescriptor],
    ) -> (RngHandler, MockSplitQueue<'a, GuestMemoryMmap>) {
        let vq = MockSplitQueue::new(mem, 16);
        vq.add_desc_chains(descs, 0).unwrap();
        let queue: Queue = vq.create_queue().unwrap();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        (
            RngHandler {
                mem: mem.clone(),
                queue,
                interrupt,
            },
            vq,
        )
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn fills_writable_buffers() {
        let mem = memory();
        let desc = RawDescriptor::from(SplitDescriptor::new(0x8000, 64, WRITE, 0));
        let (mut h, vq) = handler(&mem, &[desc]);
        h.process();
        let used = vq.used();
        assert_eq!(used.idx().load(), 1);
        assert_eq!(used.ring().ref_at(0).unwrap().load().len(), 64);
        let mut out = [0u8; 64];
        mem.read_slice(&mut out, GuestAddress(0x8000)).unwrap();
        assert_ne!(out, [0u8; 64], "64 random bytes are not all zero");
        assert_eq!(h.interrupt.status(), 1);
    }

    #[test]
    fn hostile_requests_get_nothing_and_do_not_stop_the_device() {
        let mem = memory();
        let descs = [
            // Read-only buffer: nothing to fill.
            RawDescriptor::from(SplitDescriptor::new(0x8000, 64, 0, 0)),
            // Outside guest memory.
            RawDescriptor::from(SplitDescriptor::new(0xffff_0000, 64, WRITE, 0)),
            // Huge: capped.
            RawDescriptor::from(SplitDescriptor::new(0x1_0000, 0xf_0000, WRITE, 0)),
        ];
        let (mut h, vq) = handler(&mem, &descs);
        h.process();
        let used = vq.used();
        assert_eq!(used.idx().load(), 3);
        let lens: Vec<u32> = (0..3)
            .map(|i| used.ring().ref_at(i).unwrap().load().len())
            .collect();
        assert_eq!(lens, [0, 0, MAX_REQUEST_BYTES as u32]);
        assert!(!h.interrupt.is_broken());
    }
}
