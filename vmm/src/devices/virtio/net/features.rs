//! The virtio-net feature bits this device knows, as masks, and the set it offers.

use virtio_bindings::virtio_net as bits;

use super::super::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};

/// The guest may hand us frames with a partial checksum (NEEDS_CSUM).
pub const CSUM: u64 = 1 << bits::VIRTIO_NET_F_CSUM;
/// We may hand the guest frames with a partial checksum.
pub const GUEST_CSUM: u64 = 1 << bits::VIRTIO_NET_F_GUEST_CSUM;
/// The configuration space holds the MAC address.
pub const MAC: u64 = 1 << bits::VIRTIO_NET_F_MAC;
/// We may hand the guest TCP/IPv4 GSO frames.
pub const GUEST_TSO4: u64 = 1 << bits::VIRTIO_NET_F_GUEST_TSO4;
/// We may hand the guest TCP/IPv6 GSO frames.
pub const GUEST_TSO6: u64 = 1 << bits::VIRTIO_NET_F_GUEST_TSO6;
/// The guest may hand us TCP/IPv4 GSO frames.
pub const HOST_TSO4: u64 = 1 << bits::VIRTIO_NET_F_HOST_TSO4;
/// The guest may hand us TCP/IPv6 GSO frames.
pub const HOST_TSO6: u64 = 1 << bits::VIRTIO_NET_F_HOST_TSO6;
/// A received frame may span several receive buffers (`num_buffers`).
pub const MRG_RXBUF: u64 = 1 << bits::VIRTIO_NET_F_MRG_RXBUF;
/// The configuration space holds the link status.
pub const STATUS: u64 = 1 << bits::VIRTIO_NET_F_STATUS;

/// Everything the device offers. No UFO/USO and no ECN: the TAP path for those differs
/// between kernels, and TCP segmentation is what matters for throughput.
pub const OFFERED: u64 = VIRTIO_F_VERSION_1
    | VIRTIO_RING_F_EVENT_IDX
    | CSUM
    | GUEST_CSUM
    | MAC
    | GUEST_TSO4
    | GUEST_TSO6
    | HOST_TSO4
    | HOST_TSO6
    | MRG_RXBUF
    | STATUS;

/// The TAP offloads (`TUN_F_*`) matching the receive features the guest accepted: frames the
/// kernel hands us may use exactly those.
pub fn tap_offloads(acked: u64) -> u32 {
    use super::tap::{TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6};
    if acked & GUEST_CSUM == 0 {
        return 0;
    }
    let mut flags = TUN_F_CSUM;
    if acked & GUEST_TSO4 != 0 {
        flags |= TUN_F_TSO4;
    }
    if acked & GUEST_TSO6 != 0 {
        flags |= TUN_F_TSO6;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloads_follow_the_guest() {
        assert_eq!(tap_offloads(GUEST_TSO4), 0, "TSO needs GUEST_CSUM");
        assert_eq!(tap_offloads(GUEST_CSUM), libc::TUN_F_CSUM);
        assert_eq!(
            tap_offloads(GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6
        );
    }
}
