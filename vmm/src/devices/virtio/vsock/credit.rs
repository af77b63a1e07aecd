//! Credit-based flow control of one vsock connection (virtio 1.2, 5.10.6.3): how much the guest
//! may still receive from us, and what we tell the guest about our own receive buffer. All
//! counters wrap, as the specification's do.

/// Our receive buffer per connection: bytes from the guest not yet written to the Unix stream.
pub const BUF_ALLOC: u32 = 256 * 1024;

/// The guest exceeded the credit we gave it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("vsock: the guest sent {extra} bytes beyond the {BUF_ALLOC}-byte buffer it was given")]
pub struct CreditViolation {
    /// Bytes over the limit.
    pub extra: u32,
}

/// Both sides' counters for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credit {
    /// Bytes received from the guest, ever.
    rx_cnt: u32,
    /// Bytes of those written to the Unix stream, ever.
    fwd_cnt: u32,
    /// The `fwd_cnt` the guest last heard from us.
    fwd_cnt_sent: u32,
    /// Bytes sent to the guest, ever.
    tx_cnt: u32,
    /// The guest's receive buffer size.
    peer_buf_alloc: u32,
    /// Bytes the guest has consumed, ever.
    peer_fwd_cnt: u32,
}

impl Credit {
    /// Counters of a new connection whose peer advertised `peer_buf_alloc` and `peer_fwd_cnt`.
    pub fn new(peer_buf_alloc: u32, peer_fwd_cnt: u32) -> Credit {
        Credit {
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            tx_cnt: 0,
            peer_buf_alloc,
            peer_fwd_cnt,
        }
    }

    /// Takes in the credit fields of a packet from the guest.
    pub fn update_from_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = fwd_cnt;
    }

    /// Bytes the guest can still take from us.
    pub fn peer_free(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// We sent `n` payload bytes to the guest (at most [`Credit::peer_free`]).
    pub fn sent(&mut self, n: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_add(n);
    }

    /// Bytes from the guest we hold but have not written to the Unix stream yet.
    pub fn buffered(&self) -> u32 {
        self.rx_cnt.wrapping_sub(self.fwd_cnt)
    }

    /// The guest sent `n` payload bytes; refused if they do not fit our buffer.
    pub fn received(&mut self, n: u32) -> Result<(), CreditViolation> {
        let total = u64::from(self.buffered()) + u64::from(n);
        if total > u64::from(BUF_ALLOC) {
            let extra = u32::try_from(total - u64::from(BUF_ALLOC)).unwrap_or(u32::MAX);
            return Err(CreditViolation { extra });
        }
        self.rx_cnt = self.rx_cnt.wrapping_add(n);
        Ok(())
    }

    /// `n` bytes from the guest reached the Unix stream.
    pub fn forwarded(&mut self, n: u32) {
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
    }

    /// Whether enough buffer space was freed since the guest last heard from us that it should be
    /// told: half of the buffer. A guest sending flat out then still has half a buffer of credit
    /// in hand when the update leaves, so it does not stall; a smaller step costs the guest an
    /// RX packet (and often an interrupt) per step for nothing (Linux's own vsock transport
    /// waits until all but 64 KiB of its buffer was consumed).
    pub fn update_due(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= BUF_ALLOC / 2
    }

    /// The `(buf_alloc, fwd_cnt)` to put in a packet to the guest; the guest will know them.
    pub fn stamp(&mut self) -> (u32, u32) {
        self.fwd_cnt_sent = self.fwd_cnt;
        (BUF_ALLOC, self.fwd_cnt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_peer_advertised() {
        let mut c = Credit::new(1000, 0);
        assert_eq!(c.peer_free(), 1000);
        c.sent(600);
        assert_eq!(c.peer_free(), 400);
        c.sent(400);
        assert_eq!(c.peer_free(), 0);
        c.update_from_peer(1000, 300);
        assert_eq!(c.peer_free(), 300);
        // A peer shrinking its buffer below what is in flight leaves no credit, not a wrap.
        c.update_from_peer(100, 300);
        assert_eq!(c.peer_free(), 0);
    }

    #[test]
    fn counters_wrap() {
        let mut c = Credit::new(4096, u32::MAX - 10);
        c.tx_cnt = u32::MAX - 10;
        c.sent(100);
        assert_eq!(c.peer_free(), 3996);
        c.update_from_peer(4096, 89);
        assert_eq!(c.peer_free(), 4096);
    }

    #[test]
    fn guest_cannot_overrun_our_buffer() {
        let mut c = Credit::new(0, 0);
        c.received(BUF_ALLOC - 10).unwrap();
        assert_eq!(c.received(11), Err(CreditViolation { extra: 1 }));
        c.received(10).unwrap();
        c.forwarded(BUF_ALLOC / 2);
        assert_eq!(c.buffered(), BUF_ALLOC / 2);
        c.received(BUF_ALLOC / 2).unwrap();
    }

    #[test]
    fn updates_are_due_after_half_is_freed() {
        let mut c = Credit::new(0, 0);
        c.received(BUF_ALLOC).unwrap();
        c.forwarded(BUF_ALLOC / 2 - 1);
        assert!(!c.update_due());
        c.forwarded(1);
        assert!(c.update_due());
        assert_eq!(c.stamp(), (BUF_ALLOC, BUF_ALLOC / 2));
        assert!(!c.update_due());
    }
}
