//! The virtio-net device: configuration space (MAC, link up), features, and the worker that
//! moves frames between the guest's queues (receive 0, transmit 1) and the TAP.
//!
//! Transmit completions do not interrupt the guest at once: virtio-mmio has one interrupt per
//! device and the driver looks at every queue when it takes one, so a completion waits up to
//! [`TX_SIGNAL_DELAY`] for a receive interrupt to share (a TCP receiver's ACKs otherwise cost an
//! interrupt each). The frame itself left at once; only the guest's reclaiming of its buffer
//! waits, and never for more than half the ring.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::super::worker::{Poller, QueueHandler, Worker, FIRST_BACKEND_TOKEN};
use super::super::{ActivateError, ActiveQueues, Interrupt, VirtioDevice};
use super::features::{self, tap_offloads};
use super::frame::{MAX_FRAME_LEN, VNET_HDR_LEN};
use super::rx::{deliver, needs_interrupt, Delivery, RingError};
use super::tap::Tap;
use super::tx::{transmit, IoVecs};

/// Virtio device ID of a network card.
const VIRTIO_ID_NET: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;
/// Entries in each queue.
const QUEUE_SIZE: u16 = 256;
/// Queue indexes.
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Epoll token of the TAP.
const TAP_TOKEN: u64 = FIRST_BACKEND_TOKEN;
/// Epoll token of the timer that bounds how long a transmit completion waits to be signalled.
const TX_TIMER_TOKEN: u64 = FIRST_BACKEND_TOKEN + 1;
/// Longest a transmit completion waits for a receive interrupt to share.
const TX_SIGNAL_DELAY: Duration = Duration::from_micros(500);
/// Transmit completions not yet signalled after which the interrupt goes at once.
const TX_SIGNAL_BATCH: u32 = QUEUE_SIZE as u32 / 2;
/// Frames read from the TAP per wake-up before the worker looks at its other events.
const RX_BATCH: usize = 64;
/// Link status bit in the configuration space.
const LINK_UP: u16 = virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP as u16;

/// A network card backed by a TAP.
#[derive(Debug)]
pub struct Net {
    tap: Arc<Tap>,
    mac: [u8; 6],
    worker: Option<Worker>,
}

impl Net {
    /// A card with address `mac` on `tap`.
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        Net {
            tap: Arc::new(tap),
            mac,
            worker: None,
        }
    }

    /// The configuration space: `mac[6]`, then `status` (little-endian).
    fn config(&self) -> [u8; 8] {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..].copy_from_slice(&LINK_UP.to_le_bytes());
        config
    }
}

/// A locally administered unicast MAC address, random unless the host's random source fails
/// (then derived from the process ID).
pub fn generated_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    if getrandom::fill(&mut mac).is_err() {
        mac[2..].copy_from_slice(&std::process::id().to_be_bytes());
    }
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

impl VirtioDevice for Net {
    fn name(&self) -> &'static str {
        "net"
    }

    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        features::OFFERED
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        for (i, byte) in data.iter_mut().enumerate() {
            if let Some(value) = start.checked_add(i).and_then(|at| config.get(at)) {
                *byte = *value;
            }
        }
    }

    fn activate(&mut self, context: ActiveQueues) -> Result<(), ActivateError> {
        let ActiveQueues {
            mem,
            queues,
            notifiers,
            interrupt,
            features,
        } = context;
        let [rx, tx]: [Queue; 2] = queues.try_into().map_err(|_| ActivateError::BadConfig {
            device: "net",
            reason: "expected a receive and a transmit queue".into(),
        })?;
        if !rx.ready() || !tx.ready() {
            return Err(ActivateError::BadConfig {
                device: "net",
                reason: "the receive and transmit queues must both be ready".into(),
            });
        }
        self.tap
            .set_offload(tap_offloads(features))
            .map_err(|e| ActivateError::BadConfig {
                device: "net",
                reason: e.to_string(),
            })?;
        let handler = NetHandler::new(mem, rx, tx, interrupt, Arc::clone(&self.tap), features);
        let worker = Worker::start_device("net", handler, notifiers)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
        if let Err(e) = self.tap.set_offload(0) {
            crate::warn_limited!("{e}");
        }
    }
}

/// The queue and TAP processing, on the device's worker thread.
#[derive(Debug)]
pub struct NetHandler {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<Interrupt>,
    tap: Arc<Tap>,
    features: u64,
    /// The frame read from the TAP and not delivered yet (the guest had no buffers).
    rx_frame: Vec<u8>,
    rx_pending: Option<usize>,
    /// The receive queue's used index when the driver was last considered for an interrupt.
    rx_signalled: u16,
    /// Whether the TAP is in the epoll set: not while a frame waits for guest buffers.
    tap_watched: bool,
    /// The TAP reported an error or hang-up: it is not watched again.
    tap_failed: bool,
    iovecs: IoVecs,
    /// Transmit completions published but not signalled yet, and the timer that bounds their
    /// wait (None if it could not be made: completions are then signalled at once).
    tx_unsignalled: u32,
    tx_timer: Option<TimerFd>,
    tx_timer_armed: bool,
    counts: Counts,
}

/// What the handler did while the device was active, logged (debug) when it stops: interrupts
/// per frame is what decides throughput where exits are expensive.
#[derive(Debug, Default)]
struct Counts {
    frames_received: u64,
    receive_interrupts: u64,
    frames_sent: u64,
    send_interrupts: u64,
}

impl Drop for NetHandler {
    fn drop(&mut self) {
        let c = &self.counts;
        tracing::debug!(
            frames_received = c.frames_received,
            receive_interrupts = c.receive_interrupts,
            frames_sent = c.frames_sent,
            send_interrupts = c.send_interrupts,
            "net: device stopped"
        );
    }
}

impl NetHandler {
    /// A handler for active queues.
    pub fn new(
        mem: GuestMemoryMmap,
        rx: Queue,
        tx: Queue,
        interrupt: Arc<Interrupt>,
        tap: Arc<Tap>,
        features: u64,
    ) -> Self {
        NetHandler {
            rx_signalled: rx.next_used(),
            mem,
            rx,
            tx,
            interrupt,
            tap,
            features,
            rx_frame: vec![0u8; MAX_FRAME_LEN],
            rx_pending: None,
            tap_watched: false,
            tap_failed: false,
            iovecs: IoVecs::default(),
            tx_unsignalled: 0,
            tx_timer: TimerFd::new()
                .map_err(|e| {
                    crate::warn_limited!(
                        "net: no transmit timer ({e}); completions signalled at once"
                    )
                })
                .ok(),
            tx_timer_armed: false,
            counts: Counts::default(),
        }
    }

    /// Sends what the guest queued on the transmit queue.
    pub fn process_tx(&mut self) {
        if self.interrupt.is_broken() {
            return;
        }
        match transmit(
            &self.mem,
            &mut self.tx,
            &self.tap,
            self.features,
            &mut self.iovecs,
        ) {
            Ok(stats) if stats.used > 0 => {
                self.counts.frames_sent += u64::from(stats.sent);
                self.tx_unsignalled = self.tx_unsignalled.saturating_add(stats.used);
                if self.tx_unsignalled >= TX_SIGNAL_BATCH || !self.defer_tx_signal() {
                    self.signal_tx();
                }
            }
            Ok(_) => {}
            Err(e) => self.interrupt.mark_broken("net", &e),
        }
    }

    /// Arms the timer that bounds the wait of the completions just published; false if it
    /// cannot be armed.
    fn defer_tx_signal(&mut self) -> bool {
        if self.tx_timer_armed {
            return true;
        }
        let Some(timer) = self.tx_timer.as_mut() else {
            return false;
        };
        match timer.reset(TX_SIGNAL_DELAY, None) {
            Ok(()) => {
                self.tx_timer_armed = true;
                true
            }
            Err(e) => {
                crate::warn_limited!("net: cannot arm the transmit timer: {e}");
                false
            }
        }
    }

    /// Interrupts the driver if it asked to hear about the transmit completions published.
    fn signal_tx(&mut self) {
        self.tx_unsignalled = 0;
        if notify(&self.mem, &mut self.tx, &self.interrupt) {
            self.counts.send_interrupts += 1;
        }
    }

    /// The interrupt just raised covers the transmit completions waiting: the driver looks at
    /// every queue. The queue's record of what was signalled follows (its answer is moot).
    fn tx_signalled_with_rx(&mut self) {
        if self.tx_unsignalled == 0 {
            return;
        }
        self.tx_unsignalled = 0;
        if let Err(e) = self.tx.needs_notification(&self.mem) {
            self.interrupt.mark_broken("net", &e);
        }
    }

    /// The transmit timer expired (it is never disarmed early, so the read does not block):
    /// completions still waiting are signalled now.
    fn tx_timer_expired(&mut self) {
        self.tx_timer_armed = false;
        if let Some(timer) = self.tx_timer.as_mut() {
            if let Err(e) = timer.wait() {
                crate::warn_limited!("net: reading the transmit timer: {e}");
            }
        }
        if self.tx_unsignalled > 0 && !self.interrupt.is_broken() {
            self.signal_tx();
        }
    }

    /// Moves frames from the TAP to the guest until the TAP is empty, the guest runs out of
    /// buffers (the frame is kept and the TAP left alone until the guest adds some), or a
    /// batch is done. Returns whether the TAP should stay watched.
    pub fn process_rx(&mut self) -> bool {
        if self.interrupt.is_broken() {
            return false;
        }
        let mut used = 0u32;
        let keep_watching = match self.rx_batch(&mut used) {
            Ok(keep_watching) => keep_watching,
            Err(e) => {
                self.interrupt.mark_broken("net", &e);
                return false;
            }
        };
        if used > 0 {
            self.signal_rx();
        }
        keep_watching
    }

    /// Interrupts the driver if it asked to hear about the receive entries just added.
    fn signal_rx(&mut self) {
        let since = std::mem::replace(&mut self.rx_signalled, self.rx.next_used());
        match needs_interrupt(&self.mem, &self.rx, since) {
            Ok(true) => {
                self.counts.receive_interrupts += 1;
                self.interrupt.signal_used_queue();
                self.tx_signalled_with_rx();
            }
            Ok(false) => {}
            Err(e) => self.interrupt.mark_broken("net", &e),
        }
    }

    fn rx_batch(&mut self, used: &mut u32) -> Result<bool, RingError> {
        let mergeable = self.features & features::MRG_RXBUF != 0;
        for _ in 0..RX_BATCH {
            let len = match self.rx_pending.take() {
                Some(len) => len,
                None => match self.tap.read_frame(&mut self.rx_frame) {
                    Ok(len) if len >= VNET_HDR_LEN => len,
                    Ok(len) => {
                        tracing::debug!("net: {len}-byte read from the TAP ignored");
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => {
                        crate::warn_limited!("net: reading TAP {}: {e}", self.tap.name());
                        return Ok(true);
                    }
                },
            };
            loop {
                let frame = &mut self.rx_frame[..len];
                match deliver(&self.mem, &mut self.rx, frame, mergeable, used)? {
                    Delivery::NoBuffers => {}
                    Delivery::Delivered(_) => {
                        self.counts.frames_received += 1;
                        break;
                    }
                    Delivery::TooBig => break,
                }
                if !wait_for_buffers(&self.mem, &mut self.rx)? {
                    tracing::trace!(
                        len,
                        "net: receive queue full; frame held until the guest adds buffers"
                    );
                    self.rx_pending = Some(len);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn update_tap_watch(&mut self, poller: &Poller, watch: bool) {
        let watch = watch && !self.tap_failed;
        if watch == self.tap_watched {
            return;
        }
        let fd = self.tap.as_raw_fd();
        let result = if watch {
            poller.add(fd, EventSet::IN, TAP_TOKEN)
        } else {
            poller.remove(fd)
        };
        match result {
            Ok(()) => self.tap_watched = watch,
            Err(e) => crate::error_limited!("net: cannot change the TAP's epoll registration: {e}"),
        }
    }

    /// The receive path's answer to any event: deliver, then watch the TAP or not.
    fn rx_event(&mut self, poller: &Poller) {
        let watch = self.process_rx();
        self.update_tap_watch(poller, watch);
    }
}

/// Asks the guest to notify the receive queue when it adds the next buffer. Returns true if
/// buffers were added meanwhile (try again), false if the notification will tell.
///
/// The event index is set past every buffer already posted, not at `next_avail`: the posted
/// buffers were too few for the waiting frame, so only a new one can help.
fn wait_for_buffers(mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<bool, RingError> {
    let avail = queue.avail_idx(mem, Ordering::Acquire)?;
    let next_avail = queue.next_avail();
    queue.set_next_avail(avail.0);
    let result = queue.enable_notification(mem);
    queue.set_next_avail(next_avail);
    Ok(result?)
}

/// Interrupts the guest if the queue's used ring changed in a way it wants to hear about;
/// returns whether it did.
fn notify(mem: &GuestMemoryMmap, queue: &mut Queue, interrupt: &Interrupt) -> bool {
    match queue.needs_notification(mem) {
        Ok(true) => {
            interrupt.signal_used_queue();
            true
        }
        Ok(false) => false,
        Err(e) => {
            interrupt.mark_broken("net", &e);
            false
        }
    }
}

impl QueueHandler for NetHandler {
    fn start(&mut self, poller: &Poller) {
        if let Some(timer) = &self.tx_timer {
            if let Err(e) = poller.add(timer.as_raw_fd(), EventSet::IN, TX_TIMER_TOKEN) {
                crate::warn_limited!(
                    "net: cannot watch the transmit timer ({e}); completions signalled at once"
                );
                self.tx_timer = None;
            }
        }
        self.process_tx();
        self.rx_event(poller);
    }

    fn queue_notified(&mut self, poller: &Poller, index: usize) {
        match index {
            RX_QUEUE => self.rx_event(poller),
            TX_QUEUE => self.process_tx(),
            _ => {}
        }
    }

    fn backend_event(&mut self, poller: &Poller, token: u64, events: EventSet) {
        if token == TX_TIMER_TOKEN {
            self.tx_timer_expired();
            return;
        }
        if token != TAP_TOKEN {
            return;
        }
        if events.intersects(EventSet::ERROR | EventSet::HANG_UP) {
            crate::error_limited!("net: TAP {} failed; receiving stops", self.tap.name());
            self.tap_failed = true;
            self.update_tap_watch(poller, false);
            return;
        }
        self.rx_event(poller);
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::VnetHeader;
    use super::super::test_util::*;
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    /// A handler whose TAP is one end of a datagram socket pair (one frame per message).
    fn handler<'a>(
        mem: &'a GuestMemoryMmap,
        features: u64,
    ) -> (
        NetHandler,
        UnixDatagram,
        MockSplitQueue<'a, GuestMemoryMmap>,
        MockSplitQueue<'a, GuestMemoryMmap>,
    ) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let tap = Tap::from_fd("test0", ours.into());
        let rx = MockSplitQueue::create(mem, GuestAddress(0), 16);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x8000), 16);
        let interrupt = Arc::new(Interrupt::new(EventFd::new(0).unwrap()));
        let h = NetHandler::new(
            mem.clone(),
            rx.create_queue().unwrap(),
            tx.create_queue().unwrap(),
            interrupt,
            Arc::new(tap),
            features,
        );
        (h, theirs, rx, tx)
    }

    #[test]
    fn config_space_has_mac_and_link_up() {
        let (ours, _theirs) = UnixDatagram::pair().unwrap();
        let net = Net::new(Tap::from_fd("t", ours.into()), [2, 1, 2, 3, 4, 5]);
        let mut data = [0xffu8; 10];
        net.read_config(0, &mut data);
        assert_eq!(data, [2, 1, 2, 3, 4, 5, 1, 0, 0xff, 0xff]);
        let mut status = [0u8; 2];
        net.read_config(6, &mut status);
        assert_eq!(status, [1, 0]);
        let mac = generated_mac();
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
    }

    #[test]
    fn transmit_writes_each_frame_to_the_tap() {
        let mem = memory();
        let (mut h, peer, _rx, tx) = handler(&mem, features::OFFERED);
        let header = VnetHeader::default().to_bytes();
        mem.write_slice(&header, GuestAddress(DATA)).unwrap();
        mem.write_slice(b"hello, host", GuestAddress(DATA + 0x100))
            .unwrap();
        tx.add_desc_chains(
            &[
                desc(DATA, 12, NEXT, 1),
                desc(DATA + 0x100, 11, 0, 0),
                desc(DATA, 8, 0, 0), // too short: dropped, still returned
            ],
            0,
        )
        .unwrap();
        h.process_tx();
        let mut buf = [0u8; 64];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], [&header[..], b"hello, host"].concat());
        peer.set_nonblocking(true).unwrap();
        assert!(peer.recv(&mut buf).is_err(), "only one frame was sent");
        assert_eq!(used(&tx), [(0, 0), (2, 0)]);
        assert_eq!(
            h.interrupt.status(),
            0,
            "the completion waits for an interrupt to share"
        );
        assert!(h.tx_timer_armed);
        // No receive interrupt came: the timer's expiry signals it (the timer is real).
        h.tx_timer_expired();
        assert_eq!(h.interrupt.status(), 1);
        assert!(!h.tx_timer_armed);
    }

    #[test]
    fn a_receive_interrupt_carries_the_waiting_transmit_completions() {
        let mem = memory();
        let (mut h, peer, rx, tx) = handler(&mem, features::OFFERED);
        mem.write_slice(&VnetHeader::default().to_bytes(), GuestAddress(DATA))
            .unwrap();
        tx.add_desc_chains(&[desc(DATA, 40, 0, 0)], 0).unwrap();
        h.process_tx();
        assert_eq!((h.tx_unsignalled, h.interrupt.status()), (1, 0));
        let mut frame = VnetHeader::default().to_bytes().to_vec();
        frame.extend([7u8; 100]);
        peer.send(&frame).unwrap();
        rx.add_desc_chains(&[desc(DATA + 0x1000, 2048, WRITE, 0)], 0)
            .unwrap();
        h.process_rx();
        assert_eq!(h.interrupt.status(), 1, "one interrupt for both queues");
        assert_eq!(h.tx_unsignalled, 0);
        // The timer still expires; nothing is left to signal.
        h.interrupt.ack(1);
        h.tx_timer_expired();
        assert_eq!(h.interrupt.status(), 0);
    }

    #[test]
    fn half_a_ring_of_completions_is_signalled_at_once() {
        let mem = memory();
        let (mut h, _peer, _rx, tx) = handler(&mem, features::OFFERED);
        h.tx_unsignalled = TX_SIGNAL_BATCH - 1;
        mem.write_slice(&VnetHeader::default().to_bytes(), GuestAddress(DATA))
            .unwrap();
        tx.add_desc_chains(&[desc(DATA, 40, 0, 0)], 0).unwrap();
        h.process_tx();
        assert_eq!((h.tx_unsignalled, h.interrupt.status()), (0, 1));
    }

    #[test]
    fn receive_waits_for_guest_buffers_without_losing_frames() {
        let mem = memory();
        let (mut h, peer, rx, _tx) = handler(&mem, features::OFFERED);
        let frames: Vec<Vec<u8>> = (0..3u8)
            .map(|i| {
                let mut f = VnetHeader::default().to_bytes().to_vec();
                f.extend(std::iter::repeat_n(i, 1000));
                f
            })
            .collect();
        for f in &frames {
            peer.send(f).unwrap();
        }
        assert!(!h.process_rx(), "no buffers: stop watching the TAP");
        assert_eq!(h.rx_pending, Some(1012));
        // One buffer: one frame delivered, the next one waits.
        rx.add_desc_chains(&[desc(DATA, 2048, WRITE, 0)], 0)
            .unwrap();
        assert!(!h.process_rx());
        assert_eq!(used(&rx), [(0, 1012)]);
        rx.add_desc_chains(
            &[
                desc(DATA + 0x1000, 2048, WRITE, 0),
                desc(DATA + 0x2000, 2048, WRITE, 0),
            ],
            1,
        )
        .unwrap();
        assert!(h.process_rx(), "the TAP is drained: watch it again");
        assert_eq!(used(&rx), [(0, 1012), (1, 1012), (2, 1012)]);
        for (i, f) in frames.iter().enumerate() {
            let mut got = vec![0u8; f.len()];
            mem.read_slice(&mut got, GuestAddress(DATA + 0x1000 * i as u64))
                .unwrap();
            assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
            assert_eq!(got[12..], f[12..]);
        }
        assert_eq!(h.rx_pending, None);
    }
}
