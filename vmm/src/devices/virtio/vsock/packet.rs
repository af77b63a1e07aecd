//! The virtio-vsock packet: its 44-byte header, and turning descriptor chains into packets. A TX
//! chain (driver to device) becomes a checked header plus exactly its payload's guest buffers; an
//! RX chain (device to driver) becomes a writer with room for a header. Nothing here trusts the
//! guest: every failure is a [`PacketError`].

use virtio_queue::{DescriptorChain, Writer};
use vm_memory::{GuestMemory, GuestMemoryMmap, Permissions, VolatileSlice};

use super::payload::Payload;

/// Size of `struct virtio_vsock_hdr`.
pub const HEADER_LEN: usize = 44;
/// Largest payload a packet may carry in either direction.
pub const MAX_PAYLOAD: u32 = 64 * 1024;
/// The well-known CID of the host.
pub const HOST_CID: u64 = 2;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type this device carries.
pub const TYPE_STREAM: u16 = 1;

/// Operation codes (`VIRTIO_VSOCK_OP_*`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or aborted.
    pub const RST: u16 = 3;
    /// Half or full close, with [`super::SHUTDOWN_RCV`] / [`super::SHUTDOWN_SEND`] flags.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// The sender's buffer space changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// The sender asks for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// Shutdown flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// Shutdown flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet header, in host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context ID.
    pub src_cid: u64,
    /// Destination context ID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub kind: u16,
    /// Operation, one of [`op`].
    pub op: u16,
    /// Operation flags (shutdown flags).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

fn le_u64(b: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn le_u32(b: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u16(b: &[u8; HEADER_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    /// Decodes the wire format (little-endian, packed).
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            src_cid: le_u64(b, 0),
            dst_cid: le_u64(b, 8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            kind: le_u16(b, 28),
            op: le_u16(b, 30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    /// Encodes the wire format.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Checks that a packet from the guest whose CID is `guest_cid` is addressed as this device
    /// accepts: from the guest, to the host, a stream socket.
    pub fn check_from_guest(&self, guest_cid: u64) -> Result<(), PacketError> {
        if self.src_cid != guest_cid {
            return Err(PacketError::SrcCid(self.src_cid));
        }
        if self.dst_cid != HOST_CID {
            return Err(PacketError::DstCid(self.dst_cid));
        }
        if self.kind != TYPE_STREAM {
            return Err(PacketError::Type(self.kind));
        }
        Ok(())
    }

    /// The header of a reset answering `self` (ports and CIDs swapped).
    pub fn rst_reply(&self, guest_cid: u64) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            kind: TYPE_STREAM,
            op: op::RST,
            ..Header::default()
        }
    }
}

/// Why a descriptor chain or a header was refused.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The chain's buffers are not all in guest memory, or their sizes overflow.
    #[error("vsock: descriptor chain outside guest memory: {0}")]
    Memory(virtio_queue::Error),
    /// A TX chain has a buffer the device would write.
    #[error("vsock: TX chain has a device-writable descriptor")]
    WritableInTx,
    /// An RX chain has a buffer the device could only read.
    #[error("vsock: RX chain has a device-readable descriptor")]
    ReadableInRx,
    /// Fewer bytes than a header.
    #[error("vsock: packet of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    ShortHeader(usize),
    /// The header's length does not match the chain.
    #[error("vsock: header says {header} payload bytes, the chain holds {chain}")]
    LenMismatch {
        /// Length in the header.
        header: u32,
        /// Bytes after the header in the chain.
        chain: usize,
    },
    /// Payload above [`MAX_PAYLOAD`].
    #[error("vsock: payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    Oversized(u32),
    /// An RX buffer too small for a header.
    #[error("vsock: RX buffer of {0} bytes cannot hold a {HEADER_LEN}-byte header")]
    RxTooSmall(usize),
    /// Reading guest memory failed.
    #[error("vsock: cannot read the packet header: {0}")]
    Read(std::io::Error),
    /// Source CID is not the guest's.
    #[error("vsock: packet from CID {0}, not from the guest")]
    SrcCid(u64),
    /// Destination CID is not the host.
    #[error("vsock: packet to CID {0}, not to the host")]
    DstCid(u64),
    /// Not a stream packet.
    #[error("vsock: socket type {0} is not supported (stream only)")]
    Type(u16),
}

/// A packet from the guest: its header and exactly `header.len` payload bytes.
pub struct TxPacket<'a> {
    /// The header.
    pub header: Header,
    /// The payload.
    pub payload: Payload<'a>,
}

impl std::fmt::Debug for TxPacket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxPacket")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Parses a TX chain: device-readable buffers only, a whole header, a payload of exactly the
/// header's length and at most [`MAX_PAYLOAD`].
pub fn parse_tx<'a>(
    mem: &'a GuestMemoryMmap,
    chain: DescriptorChain<&'a GuestMemoryMmap>,
) -> Result<TxPacket<'a>, PacketError> {
    if chain.clone().any(|desc| desc.is_write_only()) {
        return Err(PacketError::WritableInTx);
    }
    let mut header_bytes = [0u8; HEADER_LEN];
    let mut header_len = 0;
    let mut payload = Vec::new();
    let mut total = 0usize;
    for desc in chain {
        total = total
            .checked_add(desc.len() as usize)
            .ok_or(PacketError::Memory(
                virtio_queue::Error::DescriptorChainOverflow,
            ))?;
        let slices = mem
            .get_slices(desc.addr(), desc.len() as usize, Permissions::Read)
            .map_err(|e| PacketError::Memory(virtio_queue::Error::GuestMemoryError(e)))?;
        for slice in slices {
            let slice =
                slice.map_err(|e| PacketError::Memory(virtio_queue::Error::GuestMemoryError(e)))?;
            let rest = take_header(&slice, &mut header_bytes, &mut header_len);
            if let Some(rest) = rest {
                payload.push(rest);
            }
        }
    }
    if header_len < HEADER_LEN {
        return Err(PacketError::ShortHeader(header_len));
    }
    let header = Header::from_bytes(&header_bytes);
    if header.len > MAX_PAYLOAD {
        return Err(PacketError::Oversized(header.len));
    }
    let payload = Payload::new(payload);
    let chain = payload.len();
    if usize::try_from(header.len).ok() != Some(chain) {
        return Err(PacketError::LenMismatch {
            header: header.len,
            chain,
        });
    }
    Ok(TxPacket { header, payload })
}

/// Copies the header bytes `slice` holds into `header` (`filled` of them are there already);
/// returns the part of `slice` after the header, if any.
fn take_header<'a>(
    slice: &VolatileSlice<'a>,
    header: &mut [u8; HEADER_LEN],
    filled: &mut usize,
) -> Option<VolatileSlice<'a>> {
    let wanted = HEADER_LEN - *filled;
    let n = wanted.min(slice.len());
    if n > 0 {
        *filled += slice.copy_to(&mut header[*filled..*filled + n]);
    }
    slice.offset(n).ok().filter(|rest| !rest.is_empty())
}

/// Opens an RX chain for writing: device-writable buffers only, room for at least a header.
pub fn rx_writer<'a>(
    mem: &'a GuestMemoryMmap,
    chain: DescriptorChain<&'a GuestMemoryMmap>,
) -> Result<Writer<'a>, PacketError> {
    if chain.clone().any(|desc| !desc.is_write_only()) {
        return Err(PacketError::ReadableInRx);
    }
    let writer = Writer::new(mem, chain).map_err(PacketError::Memory)?;
    if writer.available_bytes() < HEADER_LEN {
        return Err(PacketError::RxTooSmall(writer.available_bytes()));
    }
    Ok(writer)
}

/// Room for payload in an RX buffer after the header, capped at [`MAX_PAYLOAD`].
pub fn rx_payload_room(writer: &Writer<'_>) -> usize {
    writer
        .available_bytes()
        .saturating_sub(HEADER_LEN)
        .min(MAX_PAYLOAD as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress};

    const NEXT: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
    const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    fn sample(len: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1024,
            dst_port: 7,
            len,
            kind: TYPE_STREAM,
            op: op::RW,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 12,
        }
    }

    /// Parses the one chain `descs` form as a TX packet; returns the header and payload.
    fn tx(
        mem: &GuestMemoryMmap,
        descs: &[RawDescriptor],
    ) -> Result<(Header, Vec<u8>), PacketError> {
        let vq = MockSplitQueue::new(mem, 16);
        vq.add_desc_chains(descs, 0).unwrap();
        let mut queue: Queue = vq.create_queue().unwrap();
        let chain = queue.pop_descriptor_chain(mem).unwrap();
        let mut packet = parse_tx(mem, chain)?;
        let mut payload = std::collections::VecDeque::new();
        packet.payload.copy_rest(&mut payload);
        Ok((packet.header, payload.into()))
    }

    fn rx_room(mem: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Result<usize, PacketError> {
        let vq = MockSplitQueue::new(mem, 16);
        vq.add_desc_chains(descs, 0).unwrap();
        let mut queue: Queue = vq.create_queue().unwrap();
        let chain = queue.pop_descriptor_chain(mem).unwrap();
        rx_writer(mem, chain).map(|w| rx_payload_room(&w))
    }

    #[test]
    fn header_round_trips_in_wire_order() {
        let h = sample(5);
        let bytes = h.to_bytes();
        assert_eq!(&bytes[0..8], &3u64.to_le_bytes());
        assert_eq!(&bytes[30..32], &op::RW.to_le_bytes());
        assert_eq!(Header::from_bytes(&bytes), h);
    }

    #[test]
    fn tx_header_and_payload_in_separate_or_shared_buffers() {
        let mem = memory();
        mem.write_slice(&sample(5).to_bytes(), GuestAddress(0x1000))
            .unwrap();
        mem.write_slice(b"hello", GuestAddress(0x2000)).unwrap();
        let (h, payload) = tx(&mem, &[desc(0x1000, 44, NEXT, 1), desc(0x2000, 5, 0, 0)]).unwrap();
        assert_eq!((h, payload.as_slice()), (sample(5), &b"hello"[..]));
        mem.write_slice(b"world", GuestAddress(0x1000 + 44))
            .unwrap();
        let (_, payload) = tx(&mem, &[desc(0x1000, 49, 0, 0)]).unwrap();
        assert_eq!(payload, b"world");
        // A header split over two buffers, the second also holding the payload's start.
        let header = sample(5).to_bytes();
        mem.write_slice(&header[..20], GuestAddress(0x3000))
            .unwrap();
        mem.write_slice(&header[20..], GuestAddress(0x4000))
            .unwrap();
        mem.write_slice(b"ab", GuestAddress(0x4000 + 24)).unwrap();
        mem.write_slice(b"cde", GuestAddress(0x5000)).unwrap();
        let (h, payload) = tx(
            &mem,
            &[
                desc(0x3000, 20, NEXT, 1),
                desc(0x4000, 26, NEXT, 2),
                desc(0x5000, 3, 0, 0),
            ],
        )
        .unwrap();
        assert_eq!((h, payload.as_slice()), (sample(5), &b"abcde"[..]));
    }

    #[test]
    fn hostile_tx_chains_are_refused() {
        let mem = memory();
        mem.write_slice(&sample(5).to_bytes(), GuestAddress(0x1000))
            .unwrap();
        let err = |descs: &[RawDescriptor]| tx(&mem, descs).unwrap_err();
        assert!(matches!(
            err(&[desc(0x1000, 20, 0, 0)]),
            PacketError::ShortHeader(20)
        ));
        assert!(matches!(
            err(&[desc(0x1000, 44, NEXT, 1), desc(0x2000, 4, 0, 0)]),
            PacketError::LenMismatch {
                header: 5,
                chain: 4
            }
        ));
        assert!(matches!(
            err(&[desc(0x1000, 44, NEXT, 1), desc(0x2000, 6, 0, 0)]),
            PacketError::LenMismatch {
                header: 5,
                chain: 6
            }
        ));
        assert!(matches!(
            err(&[desc(0x1000, 44, NEXT, 1), desc(0x2000, 5, WRITE, 0)]),
            PacketError::WritableInTx
        ));
        assert!(matches!(
            err(&[desc(0xffff_0000, 49, 0, 0)]),
            PacketError::Memory(_)
        ));
        mem.write_slice(&sample(MAX_PAYLOAD + 1).to_bytes(), GuestAddress(0x1000))
            .unwrap();
        assert!(matches!(
            err(&[desc(0x1000, 44, 0, 0)]),
            PacketError::Oversized(n) if n == MAX_PAYLOAD + 1
        ));
    }

    #[test]
    fn rx_buffers_must_be_writable_and_hold_a_header() {
        let mem = memory();
        assert_eq!(
            rx_room(&mem, &[desc(0x1000, 4096 + 44, WRITE, 0)]).unwrap(),
            4096
        );
        assert_eq!(
            rx_room(
                &mem,
                &[
                    desc(0x1000, 44, WRITE | NEXT, 1),
                    desc(0x3000, 128 * 1024, WRITE, 0)
                ]
            )
            .unwrap(),
            MAX_PAYLOAD as usize
        );
        assert!(matches!(
            rx_room(&mem, &[desc(0x1000, 43, WRITE, 0)]),
            Err(PacketError::RxTooSmall(43))
        ));
        assert!(matches!(
            rx_room(
                &mem,
                &[desc(0x1000, 44, NEXT, 1), desc(0x3000, 64, WRITE, 0)]
            ),
            Err(PacketError::ReadableInRx)
        ));
        assert!(matches!(
            rx_room(&mem, &[desc(0xffff_0000, 4096, WRITE, 0)]),
            Err(PacketError::Memory(_))
        ));
    }

    #[test]
    fn addressing_is_checked() {
        let ok = sample(0);
        assert!(ok.check_from_guest(3).is_ok());
        assert!(matches!(
            ok.check_from_guest(4),
            Err(PacketError::SrcCid(3))
        ));
        let to_other = Header { dst_cid: 5, ..ok };
        assert!(matches!(
            to_other.check_from_guest(3),
            Err(PacketError::DstCid(5))
        ));
        let seqpacket = Header { kind: 2, ..ok };
        assert!(matches!(
            seqpacket.check_from_guest(3),
            Err(PacketError::Type(2))
        ));
        let rst = ok.rst_reply(3);
        assert_eq!(
            (rst.src_cid, rst.dst_cid, rst.src_port, rst.dst_port, rst.op),
            (HOST_CID, 3, 7, 1024, op::RST)
        );
    }
}
