//! Frames as the guest hands them to us: the virtio-net header (`virtio_net_hdr_v1`) and the
//! parser that turns a transmit descriptor chain into a typed [`TxFrame`] (the scattered guest
//! buffers, checked) or a typed [`TxError`]. Nothing here touches the TAP, so the parser is
//! what the `virtio_net` fuzz target drives.

use virtio_queue::DescriptorChain;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use super::features;

/// Length of `virtio_net_hdr_v1`, in front of every frame in both directions.
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame accepted in either direction, header included: a 64 KiB GSO packet plus an
/// Ethernet header and the vnet header (65535 + 14 + 12 + 1 rounding, as the specification's
/// examples use).
pub const MAX_FRAME_LEN: usize = 65562;
/// Most descriptors in one transmit chain (Linux sends at most MAX_SKB_FRAGS + 2).
pub const MAX_TX_SEGMENTS: usize = 256;

/// `flags`: the guest left the checksum to us (from `csum_start`, stored at `csum_offset`).
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type` flag: the TCP segments carry ECN (needs HOST_ECN, which we do not offer).
pub const GSO_ECN: u8 = 0x80;

/// The virtio-net header (`virtio_net_hdr_v1`), little-endian on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHeader {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Receive buffers this frame spans (MRG_RXBUF); 1 otherwise.
    pub num_buffers: u16,
}

impl VnetHeader {
    /// Decodes the wire format.
    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
            num_buffers: u16_at(10),
        }
    }

    /// Encodes the wire format.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }
}

/// Why a transmit chain is dropped. The device stays usable: the chain is returned unsent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The chain has a descriptor the device would write: transmit buffers are read-only.
    #[error("transmit chain has a device-writable descriptor")]
    WriteOnly,
    /// Longer than [`MAX_FRAME_LEN`].
    #[error("frame of {0} or more bytes exceeds {MAX_FRAME_LEN}")]
    TooLong(usize),
    /// Not even a whole vnet header.
    #[error("frame of {0} bytes is shorter than the {VNET_HDR_LEN}-byte vnet header")]
    TooShort(usize),
    /// More than [`MAX_TX_SEGMENTS`] descriptors.
    #[error("transmit chain has more than {MAX_TX_SEGMENTS} descriptors")]
    TooManySegments,
    /// A buffer lies (partly) outside guest memory.
    #[error("buffer at {addr:#x} ({len} bytes) is outside guest memory")]
    BadAddress {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// A GSO type the guest did not negotiate, or an unknown one.
    #[error("GSO type {0:#x} was not negotiated")]
    Gso(u8),
    /// A GSO frame without a segment size, or with headers longer than the frame.
    #[error("GSO frame with segment size {gso_size} and header length {hdr_len} in {len} bytes")]
    GsoShape {
        /// Segment size.
        gso_size: u16,
        /// Header length.
        hdr_len: u16,
        /// Frame length without the vnet header.
        len: usize,
    },
    /// The checksum request points outside the frame.
    #[error("checksum at {start}+{offset} lies outside the {len}-byte frame")]
    Checksum {
        /// `csum_start`.
        start: u16,
        /// `csum_offset`.
        offset: u16,
        /// Frame length without the vnet header.
        len: usize,
    },
}

/// A transmit frame whose buffers are known to lie in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFrame {
    /// Its vnet header.
    pub header: VnetHeader,
    /// Bytes in all, header included.
    pub len: usize,
}

/// Parses the transmit chain: every descriptor readable and inside guest memory, at most
/// [`MAX_TX_SEGMENTS`] of them and [`MAX_FRAME_LEN`] bytes, a vnet header consistent with the
/// negotiated `features`. On success `iovecs` holds the frame's host buffers, in order.
pub fn parse_tx(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    features: u64,
    iovecs: &mut Vec<libc::iovec>,
) -> Result<TxFrame, TxError> {
    iovecs.clear();
    let mut len = 0usize;
    let mut header = [0u8; VNET_HDR_LEN];
    let mut header_filled = 0;
    for desc in chain {
        if desc.is_write_only() {
            return Err(TxError::WriteOnly);
        }
        let desc_len = desc.len() as usize;
        len = len.saturating_add(desc_len);
        if len > MAX_FRAME_LEN {
            return Err(TxError::TooLong(len));
        }
        let bad = || TxError::BadAddress {
            addr: desc.addr().0,
            len: desc.len(),
        };
        for slice in GuestMemoryBackend::get_slices(mem, desc.addr(), desc_len) {
            let slice = slice.map_err(|_| bad())?;
            if header_filled < VNET_HDR_LEN {
                header_filled += slice.copy_to(&mut header[header_filled..]);
            }
            if iovecs.len() == MAX_TX_SEGMENTS {
                return Err(TxError::TooManySegments);
            }
            iovecs.push(libc::iovec {
                // writev only reads through it.
                iov_base: slice.ptr_guard().as_ptr().cast_mut().cast(),
                iov_len: slice.len(),
            });
        }
    }
    if len < VNET_HDR_LEN {
        return Err(TxError::TooShort(len));
    }
    let header = VnetHeader::from_bytes(&header);
    check_header(&header, len - VNET_HDR_LEN, features)?;
    Ok(TxFrame { header, len })
}

/// Checks the guest's offload requests against what it negotiated and the frame's length.
pub fn check_header(header: &VnetHeader, len: usize, features: u64) -> Result<(), TxError> {
    if header.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
        let end = usize::from(header.csum_start) + usize::from(header.csum_offset) + 2;
        if features & features::CSUM == 0 || end > len {
            return Err(TxError::Checksum {
                start: header.csum_start,
                offset: header.csum_offset,
                len,
            });
        }
    }
    let allowed = match header.gso_type {
        GSO_NONE => return Ok(()),
        GSO_TCPV4 => features & features::HOST_TSO4 != 0,
        GSO_TCPV6 => features & features::HOST_TSO6 != 0,
        _ => false,
    };
    if !allowed {
        return Err(TxError::Gso(header.gso_type));
    }
    if header.gso_size == 0 || usize::from(header.hdr_len) > len {
        return Err(TxError::GsoShape {
            gso_size: header.gso_size,
            hdr_len: header.hdr_len,
            len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::{Bytes, GuestAddress};

    fn parse(
        mem: &GuestMemoryMmap,
        descs: &[RawDescriptor],
        features: u64,
    ) -> (Result<TxFrame, TxError>, Vec<libc::iovec>) {
        let vq = mock_queue(mem, descs);
        let mut queue: Queue = vq.create_queue().unwrap();
        let chain = queue.iter(mem).unwrap().next().unwrap();
        let mut iovecs = Vec::new();
        let result = parse_tx(mem, chain, features, &mut iovecs);
        (result, iovecs)
    }

    fn gso_header(gso_type: u8, gso_size: u16) -> VnetHeader {
        VnetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type,
            hdr_len: 54,
            gso_size,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    #[test]
    fn header_round_trip() {
        let h = gso_header(GSO_TCPV6, 1448);
        assert_eq!(VnetHeader::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn frame_split_over_descriptors() {
        let mem = memory();
        let header = gso_header(GSO_TCPV4, 1448);
        mem.write_slice(&header.to_bytes()[..5], GuestAddress(DATA))
            .unwrap();
        mem.write_slice(&header.to_bytes()[5..], GuestAddress(DATA + 0x1000))
            .unwrap();
        let descs = [
            desc(DATA, 5, NEXT, 1),
            desc(DATA + 0x1000, 7 + 3000, NEXT, 2),
            desc(DATA + 0x4000, 100, 0, 0),
        ];
        let features = features::CSUM | features::HOST_TSO4;
        let (result, iovecs) = parse(&mem, &descs, features);
        let frame = result.unwrap();
        assert_eq!(frame.header, header);
        assert_eq!(frame.len, 3112);
        assert_eq!(iovecs.len(), 3);
        assert_eq!(iovecs.iter().map(|v| v.iov_len).sum::<usize>(), 3112);
        // Without the TSO4 feature the same frame is refused.
        let (result, _) = parse(&mem, &descs, features::CSUM);
        assert_eq!(result.unwrap_err(), TxError::Gso(GSO_TCPV4));
    }

    #[test]
    fn hostile_chains_are_refused() {
        let mem = memory();
        let cases: Vec<(Vec<RawDescriptor>, TxError)> = vec![
            (
                vec![desc(DATA, 64, NEXT, 1), desc(DATA + 64, 64, WRITE, 0)],
                TxError::WriteOnly,
            ),
            (
                vec![desc(DATA, 60000, NEXT, 1), desc(DATA, 6000, 0, 0)],
                TxError::TooLong(66000),
            ),
            (vec![desc(DATA, 11, 0, 0)], TxError::TooShort(11)),
            (
                vec![desc(0xffff_0000, 64, 0, 0)],
                TxError::BadAddress {
                    addr: 0xffff_0000,
                    len: 64,
                },
            ),
            (
                vec![desc(0x1f_fff0, 64, 0, 0)],
                TxError::BadAddress {
                    addr: 0x1f_fff0,
                    len: 64,
                },
            ),
            (
                vec![desc(DATA, u32::MAX, 0, 0)],
                TxError::TooLong(u32::MAX as usize),
            ),
        ];
        for (descs, expected) in cases {
            let (result, _) = parse(&mem, &descs, features::OFFERED);
            assert_eq!(result.unwrap_err(), expected);
        }
    }

    #[test]
    fn offload_requests_are_checked() {
        let all = features::OFFERED;
        let mut h = gso_header(GSO_TCPV4, 0);
        assert!(matches!(
            check_header(&h, 1000, all),
            Err(TxError::GsoShape { .. })
        ));
        h.gso_size = 1448;
        assert!(check_header(&h, 1000, all).is_ok());
        assert!(matches!(
            check_header(&h, 1000, 0),
            Err(TxError::Checksum { .. })
        ));
        h.gso_type = 3; // UDP fragmentation offload: never offered.
        assert_eq!(check_header(&h, 1000, all), Err(TxError::Gso(3)));
        let plain = VnetHeader {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 990,
            csum_offset: 16,
            ..VnetHeader::default()
        };
        assert!(matches!(
            check_header(&plain, 1000, all),
            Err(TxError::Checksum { .. })
        ));
        assert!(check_header(&VnetHeader::default(), 60, 0).is_ok());
    }
}
