//! The virtio-mmio transport, version 2 ("modern"): the register window through which the
//! driver negotiates features, configures queues and drives the device status, and the
//! activation and reset of the device behind it.
//!
//! Everything the guest writes here is checked: features outside the offer, queue sizes that
//! are not powers of two, rings outside guest memory and writes in the wrong phase are refused
//! without ever reaching the device.

use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{ActiveQueues, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};

/// "virt", little-endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern virtio-mmio layout.
const MMIO_VERSION: u32 = 2;

// Register offsets (virtio 1.2, section 4.2.2).
const MAGIC: u64 = 0x00;
const VERSION: u64 = 0x04;
const DEVICE_ID: u64 = 0x08;
const VENDOR_ID: u64 = 0x0c;
const DEVICE_FEATURES: u64 = 0x10;
const DEVICE_FEATURES_SEL: u64 = 0x14;
const DRIVER_FEATURES: u64 = 0x20;
const DRIVER_FEATURES_SEL: u64 = 0x24;
const QUEUE_SEL: u64 = 0x30;
const QUEUE_NUM_MAX: u64 = 0x34;
const QUEUE_NUM: u64 = 0x38;
const QUEUE_READY: u64 = 0x44;
/// Queue notifications; KVM turns them into eventfd signals, so they rarely reach us.
pub const QUEUE_NOTIFY: u64 = 0x50;
const INTERRUPT_STATUS: u64 = 0x60;
const INTERRUPT_ACK: u64 = 0x64;
const STATUS: u64 = 0x70;
const QUEUE_DESC_LOW: u64 = 0x80;
const QUEUE_DESC_HIGH: u64 = 0x84;
const QUEUE_DRIVER_LOW: u64 = 0x90;
const QUEUE_DRIVER_HIGH: u64 = 0x94;
const QUEUE_DEVICE_LOW: u64 = 0xa0;
const QUEUE_DEVICE_HIGH: u64 = 0xa4;
const CONFIG_GENERATION: u64 = 0xfc;
/// The device-specific configuration space starts here.
const CONFIG_SPACE: u64 = 0x100;

/// Errors while setting up a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// A device declared a queue size the virtio ring cannot have.
    #[error("{device}: invalid maximum queue size {size}: {source:?}")]
    QueueSize {
        /// Device name.
        device: &'static str,
        /// The size.
        size: u16,
        /// virtio-queue's reason.
        source: virtio_queue::Error,
    },
    /// The number of queue notifiers does not match the device's queue count.
    #[error("{device}: {notifiers} notifiers for {queues} queues")]
    Notifiers {
        /// Device name.
        device: &'static str,
        /// Notifiers given.
        notifiers: usize,
        /// Queues the device has.
        queues: usize,
    },
}

/// One device behind its virtio-mmio register window.
#[derive(Debug)]
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    notifiers: Vec<EventFd>,
    queues: Vec<Queue>,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    queue_select: u32,
    status: u32,
    active: bool,
}

fn new_queues(device: &dyn VirtioDevice) -> Result<Vec<Queue>, MmioError> {
    device
        .queue_max_sizes()
        .iter()
        .map(|&size| {
            Queue::new(size).map_err(|source| MmioError::QueueSize {
                device: device.name(),
                size,
                source,
            })
        })
        .collect()
}

/// The 32-bit half `select` of `value`; halves beyond the second are 0.
fn feature_half(value: u64, select: u32) -> u32 {
    match select {
        0 => value as u32,
        1 => (value >> 32) as u32,
        _ => 0,
    }
}

impl MmioTransport {
    /// Puts `device` behind a register window; `notifiers[i]` is signalled (by KVM's ioeventfd
    /// or by [`MmioTransport::write`]) when the guest notifies queue `i`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        notifiers: Vec<EventFd>,
    ) -> Result<Self, MmioError> {
        let queues = new_queues(device.as_ref())?;
        if notifiers.len() != queues.len() {
            return Err(MmioError::Notifiers {
                device: device.name(),
                notifiers: notifiers.len(),
                queues: queues.len(),
            });
        }
        Ok(MmioTransport {
            device,
            mem,
            interrupt,
            notifiers,
            queues,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            queue_select: 0,
            status: 0,
            active: false,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &'static str {
        self.device.name()
    }

    /// Guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            data.fill(0);
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        let value = if data.len() == 4 && offset % 4 == 0 {
            self.register(offset)
        } else {
            tracing::debug!(
                "{}: {}-byte read of register {offset:#x} refused",
                self.name(),
                data.len()
            );
            0
        };
        let bytes = value.to_le_bytes();
        let len = data.len().min(4);
        data.fill(0);
        data[..len].copy_from_slice(&bytes[..len]);
    }

    fn register(&self, offset: u64) -> u32 {
        match offset {
            MAGIC => MAGIC_VALUE,
            VERSION => MMIO_VERSION,
            DEVICE_ID => self.device.device_type(),
            VENDOR_ID => 0,
            DEVICE_FEATURES => {
                feature_half(self.device.device_features(), self.device_features_select)
            }
            QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            INTERRUPT_STATUS => self.interrupt.status(),
            STATUS => self.status(),
            CONFIG_GENERATION => self.device.config_generation(),
            _ => 0,
        }
    }

    fn status(&self) -> u32 {
        if self.interrupt.is_broken() {
            self.status | VIRTIO_CONFIG_S_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(usize::try_from(self.queue_select).ok()?)
    }

    /// Guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            if self.status & VIRTIO_CONFIG_S_DRIVER != 0 {
                self.device.write_config(offset - CONFIG_SPACE, data);
            }
            return;
        }
        let value = match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset % 4 == 0 => u32::from_le_bytes(bytes),
            _ => {
                tracing::debug!(
                    "{}: {}-byte write of register {offset:#x} refused",
                    self.name(),
                    data.len()
                );
                return;
            }
        };
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_select = value,
            DRIVER_FEATURES_SEL => self.driver_features_select = value,
            DRIVER_FEATURES => self.set_driver_features(value),
            QUEUE_SEL => self.queue_select = value,
            QUEUE_NOTIFY => self.notify(value),
            INTERRUPT_ACK => self.interrupt.ack(value),
            STATUS => self.set_status(value),
            QUEUE_NUM | QUEUE_READY | QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_DRIVER_LOW
            | QUEUE_DRIVER_HIGH | QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                self.configure_queue(offset, value);
            }
            _ => tracing::debug!(
                "{}: write of {value:#x} to register {offset:#x} ignored",
                self.name()
            ),
        }
    }

    fn set_driver_features(&mut self, value: u32) {
        let negotiating = self.status & VIRTIO_CONFIG_S_DRIVER != 0
            && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        if !negotiating {
            tracing::debug!("{}: driver features written out of phase", self.name());
            return;
        }
        let value = u64::from(value);
        match self.driver_features_select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            select => tracing::debug!("{}: driver features half {select} ignored", self.name()),
        }
    }

    fn notify(&self, value: u32) {
        // Only a notification that missed KVM's ioeventfd match lands here.
        let notifier = usize::try_from(value)
            .ok()
            .and_then(|index| self.notifiers.get(index));
        match notifier {
            Some(notifier) if self.active => {
                if let Err(e) = notifier.write(1) {
                    crate::error_limited!("{}: cannot forward a notification: {e}", self.name());
                }
            }
            _ => tracing::debug!("{}: notification of queue {value} ignored", self.name()),
        }
    }

    fn configure_queue(&mut self, offset: u64, value: u32) {
        let configuring = self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        let name = self.device.name();
        let Some(queue) = usize::try_from(self.queue_select)
            .ok()
            .and_then(|index| self.queues.get_mut(index))
        else {
            tracing::debug!(
                "{name}: configuration of missing queue {}",
                self.queue_select
            );
            return;
        };
        if !configuring || (queue.ready() && offset != QUEUE_READY) {
            tracing::debug!("{name}: queue register {offset:#x} written out of phase");
            return;
        }
        match offset {
            QUEUE_NUM => match u16::try_from(value) {
                Ok(size) => queue.set_size(size),
                Err(_) => tracing::debug!("{name}: queue size {value} refused"),
            },
            QUEUE_READY => queue.set_ready(value == 1),
            QUEUE_DESC_LOW => queue.set_desc_table_address(Some(value), None),
            QUEUE_DESC_HIGH => queue.set_desc_table_address(None, Some(value)),
            QUEUE_DRIVER_LOW => queue.set_avail_ring_address(Some(value), None),
            QUEUE_DRIVER_HIGH => queue.set_avail_ring_address(None, Some(value)),
            QUEUE_DEVICE_LOW => queue.set_used_ring_address(Some(value), None),
            QUEUE_DEVICE_HIGH => queue.set_used_ring_address(None, Some(value)),
            _ => {}
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let added = value & !self.status;
        if value & self.status != self.status {
            tracing::debug!(
                "{}: status {value:#x} clears bits of {:#x}; ignored",
                self.name(),
                self.status
            );
            return;
        }
        let mut status = value;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable() {
            // The driver re-reads the status, sees FEATURES_OK missing and gives up.
            status &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            let ready = status & VIRTIO_CONFIG_S_FEATURES_OK != 0;
            if !ready || !self.activate() {
                status &= !VIRTIO_CONFIG_S_DRIVER_OK;
            }
        }
        if added & VIRTIO_CONFIG_S_FAILED != 0 {
            crate::warn_limited!("{}: the driver gave up on the device", self.name());
        }
        let known = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK
            | VIRTIO_CONFIG_S_FAILED;
        self.status = status & known;
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.device_features();
        let extra = self.driver_features & !offered;
        if extra != 0 {
            crate::warn_limited!(
                "{}: driver accepted features {extra:#x} that were not offered",
                self.name()
            );
            return false;
        }
        if self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            crate::warn_limited!(
                "{}: legacy driver (no VIRTIO_F_VERSION_1) refused",
                self.name()
            );
            return false;
        }
        true
    }

    /// Hands the queues to the device; false if the driver's setup is unusable.
    fn activate(&mut self) -> bool {
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        for (index, queue) in self.queues.iter_mut().enumerate() {
            if queue.ready() && !queue.is_valid(&self.mem) {
                crate::warn_limited!(
                    "{}: queue {index} is invalid (size or rings outside guest memory)",
                    self.device.name()
                );
                return false;
            }
            queue.set_event_idx(event_idx);
        }
        let notifiers = match self.notifiers.iter().map(EventFd::try_clone).collect() {
            Ok(notifiers) => notifiers,
            Err(e) => {
                crate::error_limited!("{}: cannot clone a queue notifier: {e}", self.name());
                return false;
            }
        };
        let queues = std::mem::take(&mut self.queues);
        let context = ActiveQueues {
            mem: self.mem.clone(),
            queues,
            notifiers,
            interrupt: Arc::clone(&self.interrupt),
            features: self.driver_features,
        };
        match self.device.activate(context) {
            Ok(()) => {
                self.active = true;
                tracing::debug!("{}: activated", self.name());
                true
            }
            Err(e) => {
                crate::error_limited!("{e}");
                self.interrupt.mark_broken(self.device.name(), &e);
                false
            }
        }
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        match new_queues(self.device.as_ref()) {
            Ok(queues) => self.queues = queues,
            // Sizes that worked at creation cannot fail now; keep the device unusable if so.
            Err(e) => crate::error_limited!("{e}"),
        }
        self.interrupt.reset();
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.status = 0;
    }
}

impl Drop for MmioTransport {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::ActivateError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vm_memory::GuestAddress;

    /// A device that records activations and resets.
    #[derive(Debug, Default)]
    struct Probe {
        activations: Arc<AtomicUsize>,
        resets: Arc<AtomicUsize>,
        queues_seen: Arc<AtomicUsize>,
    }

    impl VirtioDevice for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn device_features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1
        }
        fn config_generation(&self) -> u32 {
            7
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let config = [0xaau8, 0xbb, 0xcc, 0xdd];
            for (i, byte) in data.iter_mut().enumerate() {
                if let Some(v) = config.get(offset as usize + i) {
                    *byte = *v;
                }
            }
        }
        fn activate(&mut self, context: ActiveQueues) -> Result<(), ActivateError> {
            self.activations.fetch_add(1, Ordering::SeqCst);
            self.queues_seen
                .store(context.queues.len(), Ordering::SeqCst);
            Ok(())
        }
        fn reset(&mut self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn transport() -> (MmioTransport, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let probe = Probe::default();
        let (activations, resets) = (probe.activations.clone(), probe.resets.clone());
        let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        let notifiers = vec![EventFd::new(0).unwrap(), EventFd::new(0).unwrap()];
        let t = MmioTransport::new(Box::new(probe), mem, interrupt, notifiers).unwrap();
        (t, activations, resets)
    }

    fn read(t: &MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes());
    }

    fn negotiate(t: &mut MmioTransport, features: u64) {
        write(t, STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        write(
            t,
            STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        for select in 0..2 {
            write(t, DRIVER_FEATURES_SEL, select);
            write(t, DRIVER_FEATURES, feature_half(features, select));
        }
        write(t, STATUS, 0xb);
    }

    fn setup_queue(t: &mut MmioTransport, index: u32, base: u32) {
        write(t, QUEUE_SEL, index);
        write(t, QUEUE_NUM, 8);
        write(t, QUEUE_DESC_LOW, base);
        write(t, QUEUE_DRIVER_LOW, base + 0x1000);
        write(t, QUEUE_DEVICE_LOW, base + 0x2000);
        write(t, QUEUE_READY, 1);
    }

    #[test]
    fn identification_registers() {
        let (t, _, _) = transport();
        assert_eq!(read(&t, MAGIC), MAGIC_VALUE);
        assert_eq!(read(&t, VERSION), 2);
        assert_eq!(read(&t, DEVICE_ID), 42);
        assert_eq!(read(&t, DEVICE_FEATURES), 1);
        assert_eq!(read(&t, CONFIG_GENERATION), 7, "the device's generation");
        let mut t = t;
        write(&mut t, DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(&t, DEVICE_FEATURES), 1);
        write(&mut t, DEVICE_FEATURES_SEL, 7);
        assert_eq!(read(&t, DEVICE_FEATURES), 0);
        write(&mut t, QUEUE_SEL, 1);
        assert_eq!(read(&t, QUEUE_NUM_MAX), 8);
        write(&mut t, QUEUE_SEL, 2);
        assert_eq!(read(&t, QUEUE_NUM_MAX), 0);
    }

    #[test]
    fn odd_sized_register_accesses_are_refused() {
        let (mut t, _, _) = transport();
        let mut two = [0xffu8; 2];
        t.read(MAGIC, &mut two);
        assert_eq!(two, [0, 0]);
        t.write(STATUS, &[1]);
        assert_eq!(read(&t, STATUS), 0);
        let mut config = [0u8; 2];
        t.read(CONFIG_SPACE + 1, &mut config);
        assert_eq!(config, [0xbb, 0xcc]);
    }

    #[test]
    fn full_negotiation_activates_and_reset_stops() {
        let (mut t, activations, resets) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1 | 1);
        assert_eq!(read(&t, STATUS), 0xb);
        setup_queue(&mut t, 0, 0x1000);
        setup_queue(&mut t, 1, 0x4000);
        write(&mut t, STATUS, 0xf);
        assert_eq!(read(&t, STATUS), 0xf);
        assert_eq!(activations.load(Ordering::SeqCst), 1);
        // Queue registers are frozen once running.
        write(&mut t, QUEUE_SEL, 0);
        write(&mut t, QUEUE_NUM, 4);
        write(&mut t, STATUS, 0);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
        assert_eq!(read(&t, STATUS), 0);
        assert_eq!(read(&t, QUEUE_READY), 0);
        // And it can be brought up again.
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 0x1000);
        write(&mut t, STATUS, 0xf);
        assert_eq!(activations.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn features_not_offered_or_legacy_are_refused() {
        for features in [VIRTIO_F_VERSION_1 | 2, 1] {
            let (mut t, activations, _) = transport();
            negotiate(&mut t, features);
            assert_eq!(read(&t, STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
            write(&mut t, STATUS, 0x7);
            assert_eq!(read(&t, STATUS) & VIRTIO_CONFIG_S_DRIVER_OK, 0);
            assert_eq!(activations.load(Ordering::SeqCst), 0);
        }
    }

    #[test]
    fn rings_outside_guest_memory_are_refused() {
        let (mut t, activations, _) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        setup_queue(&mut t, 0, 0xff00_0000);
        write(&mut t, STATUS, 0xf);
        assert_eq!(read(&t, STATUS) & VIRTIO_CONFIG_S_DRIVER_OK, 0);
        assert_eq!(activations.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn queue_setup_before_features_ok_is_ignored() {
        let (mut t, _, _) = transport();
        write(&mut t, QUEUE_SEL, 0);
        write(&mut t, QUEUE_READY, 1);
        assert_eq!(read(&t, QUEUE_READY), 0);
    }

    #[test]
    fn status_cannot_drop_bits_without_reset() {
        let (mut t, _, _) = transport();
        negotiate(&mut t, VIRTIO_F_VERSION_1);
        write(&mut t, STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        assert_eq!(read(&t, STATUS), 0xb);
    }
}
