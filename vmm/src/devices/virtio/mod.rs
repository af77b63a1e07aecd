//! Virtio devices: the contract between the virtio-mmio transport ([`mmio`]) and a device
//! model, the interrupt a device raises, and the per-device worker thread ([`worker`]) that
//! processes queues away from the vCPU threads.
//!
//! A device is passive until the driver sets DRIVER_OK: the transport then hands it the guest
//! memory, its configured queues, the queues' notification eventfds and the interrupt, and the
//! device starts a worker. A driver reset stops the worker and takes everything back.

pub mod block;
pub mod fuzz_input;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod vsock;
pub mod worker;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Device-independent feature: the modern (virtio 1.x) interface. Every device offers it and a
/// driver that does not accept it is refused.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// Device-independent feature: used/avail event indexes suppress needless notifications.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The worker thread or one of its resources could not be created.
    #[error("{device}: cannot start its worker: {source}")]
    Worker {
        /// Device name.
        device: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The driver's configuration is unusable.
    #[error("{device}: {reason}")]
    BadConfig {
        /// Device name.
        device: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A virtio device model, as the transport sees it.
pub trait VirtioDevice: Send + std::fmt::Debug {
    /// Short name for logs and thread names ("block", "vsock", ...).
    fn name(&self) -> &'static str;
    /// Virtio device ID (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// Maximum size of each of the device's queues; the slice's length is the queue count.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers, [`VIRTIO_F_VERSION_1`] included.
    fn device_features(&self) -> u64;
    /// Reads `data.len()` bytes of the configuration space at `offset`; bytes outside it read 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to the configuration space; ignored unless the device has writable fields.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!(
            "{}: ignored config write of {} bytes at {offset:#x}",
            self.name(),
            data.len()
        );
    }
    /// The virtio-mmio ConfigGeneration: a device whose configuration space changes while the
    /// driver runs changes it with every change, so the driver can tell a torn read.
    fn config_generation(&self) -> u32 {
        0
    }
    /// Starts processing: the driver set DRIVER_OK.
    fn activate(&mut self, context: ActiveQueues) -> Result<(), ActivateError>;
    /// Stops processing (driver reset or VM teardown) and drops the queues. Must be idempotent.
    fn reset(&mut self);
}

/// What a device gets when the driver activates it.
#[derive(Debug)]
pub struct ActiveQueues {
    /// Guest memory; everything in it is untrusted.
    pub mem: GuestMemoryMmap,
    /// The queues as the driver configured them, validated against guest memory.
    pub queues: Vec<Queue>,
    /// For each queue, the eventfd KVM signals when the guest notifies it.
    pub notifiers: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// Features the driver accepted.
    pub features: u64,
}

impl ActiveQueues {
    /// Whether the driver accepted `feature` (a bit mask).
    pub fn has_feature(&self, feature: u64) -> bool {
        self.features & feature != 0
    }
}

/// A device's interrupt line (an irqfd on its GSI), its interrupt status register, and its
/// "needs reset" flag.
#[derive(Debug)]
pub struct Interrupt {
    irqfd: EventFd,
    status: AtomicU32,
    broken: AtomicBool,
}

impl Interrupt {
    /// An interrupt raised through `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            irqfd,
            status: AtomicU32::new(0),
            broken: AtomicBool::new(false),
        }
    }

    /// Sets `cause` in the status register and interrupts the driver, unless `cause` was
    /// already set: then an interrupt is pending that the driver has not acknowledged, and its
    /// handler, which reads the status and acknowledges before it looks at the queues, will see
    /// whatever was published before this call. A second edge would only make the guest take
    /// one more interrupt (two more MMIO exits) to find nothing new.
    fn raise(&self, cause: u32) {
        let before = self.status.fetch_or(cause, Ordering::SeqCst);
        if before & cause != 0 {
            return;
        }
        if let Err(e) = self.irqfd.write(1) {
            crate::error_limited!("cannot raise a virtio interrupt: {e}");
        }
    }

    /// Tells the driver that a queue has new used buffers.
    pub fn signal_used_queue(&self) {
        self.raise(VIRTIO_MMIO_INT_VRING);
    }

    /// Tells the driver that the configuration space (or the device status) changed.
    pub fn signal_config_change(&self) {
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    /// The device met a guest error it cannot recover from (a corrupt ring): it stops, shows
    /// DEVICE_NEEDS_RESET in its status and tells the driver.
    pub fn mark_broken(&self, device: &str, reason: &dyn std::fmt::Display) {
        crate::warn_limited!("{device}: needs a reset: {reason}");
        self.broken.store(true, Ordering::SeqCst);
        self.signal_config_change();
    }

    /// Whether [`Interrupt::mark_broken`] was called since the last reset.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledged the causes in `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Back to the power-on state.
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.broken.store(false, Ordering::SeqCst);
    }
}

/// Adds a used buffer to `queue` and interrupts the driver if it wants to hear about it.
/// An error means the ring is unusable: the device is marked broken.
pub fn complete(
    device: &str,
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    interrupt: &Interrupt,
    head: u16,
    len: u32,
) -> Result<(), virtio_queue::Error> {
    let result = queue
        .add_used(mem, head, len)
        .and_then(|()| queue.needs_notification(mem));
    match result {
        Ok(true) => {
            interrupt.signal_used_queue();
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => {
            interrupt.mark_broken(device, &e);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupt_status_and_ack() {
        let irq = Interrupt::new(EventFd::new(0).unwrap());
        irq.signal_used_queue();
        irq.signal_config_change();
        assert_eq!(irq.status(), 3);
        assert_eq!(irq.irqfd.read().unwrap(), 2);
        // Pending and not acknowledged: no second edge.
        irq.signal_used_queue();
        irq.irqfd.write(7).unwrap();
        assert_eq!(
            irq.irqfd.read().unwrap(),
            7,
            "the pending cause raised no edge"
        );
        irq.ack(1);
        assert_eq!(irq.status(), 2);
        // Acknowledged: the next one interrupts again.
        irq.signal_used_queue();
        assert_eq!(irq.irqfd.read().unwrap(), 1);
        irq.ack(1);
        irq.mark_broken("test", &"corrupt ring");
        assert!(irq.is_broken());
        irq.reset();
        assert_eq!((irq.status(), irq.is_broken()), (0, false));
    }
}
