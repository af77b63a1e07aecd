//! Turns a virtio-blk descriptor chain into a typed [`Request`] or a typed [`RequestError`],
//! without touching the disk. Everything here comes from the guest and is checked: buffer
//! addresses against guest memory, descriptor order and count, data directions, lengths and
//! sector ranges. This is the fuzz target's subject (see [`super::fuzzing`]).
//!
//! The chain is read as two byte streams, as the specification asks (no assumption about how
//! the driver splits it into descriptors): the device-readable bytes (the 16-byte header, then
//! any data the device reads) and the device-writable bytes (data the device writes, then the
//! status byte, which is the last byte of the chain).

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Bytes per sector, the unit of every offset and length in the protocol.
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u32 = 9;
/// Size of the request header (`struct virtio_blk_outhdr`).
pub const HEADER_LEN: usize = 16;
/// Size of one discard / write-zeroes segment.
pub const SEGMENT_LEN: usize = 16;
/// Most descriptors in one chain: the advertised `seg_max` data segments, the header and the
/// status. Longer chains (loops through an indirect table, say) are refused.
pub const MAX_DESCRIPTORS: usize = 256;
/// Data segments per request advertised to the driver (`seg_max`).
pub const SEG_MAX: u32 = (MAX_DESCRIPTORS - 2) as u32;
/// Segments per discard / write-zeroes request (`max_discard_seg`, `max_write_zeroes_seg`).
pub const MAX_RANGE_SEGMENTS: usize = 1;
/// Most sectors per discard / write-zeroes segment (advertised): 2 GiB.
pub const MAX_RANGE_SECTORS: u32 = 1 << 22;
/// Length of the device ID GET_ID returns.
pub const ID_LEN: usize = virtio_bindings::virtio_blk::VIRTIO_BLK_ID_BYTES as usize;

/// A piece of guest memory, known to lie inside it.
pub type GuestBuf<'a> = VolatileSlice<'a, ()>;

/// A sector range of a discard or write-zeroes request, known to lie inside the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorRange {
    /// First sector.
    pub sector: u64,
    /// Sector count.
    pub sectors: u32,
}

/// What the guest asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read `data` from the disk, starting at `sector`.
    In {
        /// First sector.
        sector: u64,
    },
    /// Write `data` to the disk, starting at `sector`.
    Out {
        /// First sector.
        sector: u64,
    },
    /// Make earlier writes durable.
    Flush,
    /// Write the device ID into `data`.
    GetId,
    /// The range's contents may be dropped.
    Discard(SectorRange),
    /// The range must read back as zeroes; `unmap` allows deallocating it.
    WriteZeroes {
        /// The range.
        range: SectorRange,
        /// Deallocation allowed.
        unmap: bool,
    },
}

/// A well-formed request: its kind and its data buffers (device-writable for `In` and `GetId`,
/// device-readable for `Out`, empty otherwise).
#[derive(Debug)]
pub struct Request<'a> {
    /// What to do.
    pub kind: RequestKind,
    /// The data buffers, in order.
    pub data: Vec<GuestBuf<'a>>,
    /// Their total length in bytes.
    pub data_len: usize,
}

/// Why a chain is not a request the device can execute.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// More descriptors than [`MAX_DESCRIPTORS`].
    #[error("more than {MAX_DESCRIPTORS} descriptors")]
    TooManyDescriptors,
    /// A buffer lies (partly) outside guest memory.
    #[error("buffer at {addr:#x} of {len} bytes is outside guest memory")]
    BadAddress {
        /// Guest address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// A device-readable descriptor after a device-writable one.
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    /// The chain does not end with a device-writable byte in guest memory.
    #[error("no device-writable status byte at the end of the chain")]
    NoStatus,
    /// Fewer readable bytes than a header.
    #[error("{0} readable bytes, less than the {HEADER_LEN}-byte header")]
    ShortHeader(usize),
    /// A request type the device does not implement.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// Data buffers the request type does not have (writable data for a write, say).
    #[error("request type {kind}: {len} bytes of data in the wrong direction")]
    WrongDirection {
        /// Request type.
        kind: u32,
        /// Bytes.
        len: usize,
    },
    /// Data length not a multiple of the sector size.
    #[error("data length {0} is not a multiple of {SECTOR_SIZE}")]
    Unaligned(usize),
    /// Sectors beyond the end of the disk (or an overflowing range).
    #[error("sectors {sector}..+{sectors} are beyond the capacity of {capacity} sectors")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Count.
        sectors: u64,
        /// Disk capacity.
        capacity: u64,
    },
    /// A discard / write-zeroes payload that is not 1 to [`MAX_RANGE_SEGMENTS`] segments.
    #[error("discard/write-zeroes payload of {0} bytes, expected {SEGMENT_LEN} per segment, at most {MAX_RANGE_SEGMENTS}")]
    BadSegments(usize),
    /// A discard / write-zeroes segment with flags the type does not allow.
    #[error("discard/write-zeroes flags {0:#x} not supported")]
    BadFlags(u32),
    /// A discard / write-zeroes segment over the advertised size.
    #[error("discard/write-zeroes segment of {0} sectors, more than {MAX_RANGE_SECTORS}")]
    RangeTooLarge(u32),
}

impl RequestError {
    /// The status byte the driver gets for this error.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) | RequestError::BadFlags(_) => VIRTIO_BLK_S_UNSUPP as u8,
            _ => VIRTIO_BLK_S_IOERR as u8,
        }
    }
}

/// A parsed chain: where its status byte is (if it has a usable one) and the request or why
/// there is none. A chain without a status byte gets no answer but its used-ring entry.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The chain's last byte, device-writable and inside guest memory.
    pub status: Option<GuestBuf<'a>>,
    /// The request.
    pub request: Result<Request<'a>, RequestError>,
}

/// Parses the descriptors of one chain against a disk of `capacity` sectors.
pub fn parse<'a>(
    mem: &'a GuestMemoryMmap,
    chain: impl Iterator<Item = Descriptor>,
    capacity: u64,
) -> Parsed<'a> {
    let mut descriptors = Vec::with_capacity(8);
    let mut last = None;
    let mut too_many = false;
    for desc in chain {
        if descriptors.len() < MAX_DESCRIPTORS {
            descriptors.push(desc);
        } else {
            too_many = true;
        }
        last = Some(desc);
    }
    let status = last.and_then(|desc| status_byte(mem, &desc));
    let request = if status.is_none() {
        Err(RequestError::NoStatus)
    } else if too_many {
        Err(RequestError::TooManyDescriptors)
    } else {
        parse_request(mem, &descriptors, capacity)
    };
    Parsed { status, request }
}

fn status_byte<'a>(mem: &'a GuestMemoryMmap, desc: &Descriptor) -> Option<GuestBuf<'a>> {
    if !desc.is_write_only() || desc.len() == 0 {
        return None;
    }
    let addr = desc.addr().0.checked_add(u64::from(desc.len()) - 1)?;
    mem.get_slice(GuestAddress(addr), 1).ok()
}

/// The chain's buffers as the device-readable and device-writable streams, the status byte
/// (the last descriptor's last byte) left out.
fn buffers<'a>(
    mem: &'a GuestMemoryMmap,
    descriptors: &[Descriptor],
) -> Result<(Vec<GuestBuf<'a>>, Vec<GuestBuf<'a>>), RequestError> {
    let mut readable = Vec::with_capacity(2);
    let mut writable = Vec::with_capacity(descriptors.len());
    let mut seen_writable = false;
    let count = descriptors.len();
    for (index, desc) in descriptors.iter().enumerate() {
        let writes = desc.is_write_only();
        if writes {
            seen_writable = true;
        } else if seen_writable {
            return Err(RequestError::ReadableAfterWritable);
        }
        // The status byte is not data.
        let len = if index + 1 == count {
            desc.len().saturating_sub(1)
        } else {
            desc.len()
        };
        let bad = || RequestError::BadAddress {
            addr: desc.addr().0,
            len: desc.len(),
        };
        let list = if writes { &mut writable } else { &mut readable };
        for slice in mem.get_slices(desc.addr(), len as usize) {
            list.push(slice.map_err(|_| bad())?);
        }
    }
    Ok((readable, writable))
}

/// Total length of `bufs`.
fn total_len(bufs: &[GuestBuf<'_>]) -> usize {
    bufs.iter().map(GuestBuf::len).sum()
}

/// Copies the first `out.len()` bytes of `bufs` into `out` and drops them from `bufs`; returns
/// how many bytes there were.
fn take_front(bufs: &mut Vec<GuestBuf<'_>>, out: &mut [u8]) -> usize {
    let mut copied = 0;
    let mut consumed = 0;
    for buf in bufs.iter_mut() {
        if copied == out.len() {
            break;
        }
        let n = buf.copy_to(&mut out[copied..]);
        copied += n;
        if n == buf.len() {
            consumed += 1;
        } else {
            match buf.offset(n) {
                Ok(rest) => *buf = rest,
                Err(_) => consumed += 1,
            }
            break;
        }
    }
    bufs.drain(..consumed);
    copied
}

fn parse_request<'a>(
    mem: &'a GuestMemoryMmap,
    descriptors: &[Descriptor],
    capacity: u64,
) -> Result<Request<'a>, RequestError> {
    let (mut readable, writable) = buffers(mem, descriptors)?;
    let mut header = [0u8; HEADER_LEN];
    let got = take_front(&mut readable, &mut header);
    if got < HEADER_LEN {
        return Err(RequestError::ShortHeader(got));
    }
    let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
    let request_type = u32::from_le_bytes([t0, t1, t2, t3]);
    let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
    let wrong_direction = |bufs: &[GuestBuf<'_>]| RequestError::WrongDirection {
        kind: request_type,
        len: total_len(bufs),
    };
    let (kind, data) = match request_type {
        VIRTIO_BLK_T_IN => {
            if total_len(&readable) != 0 {
                return Err(wrong_direction(&readable));
            }
            check_transfer(sector, total_len(&writable), capacity)?;
            (RequestKind::In { sector }, writable)
        }
        VIRTIO_BLK_T_OUT => {
            if total_len(&writable) != 0 {
                return Err(wrong_direction(&writable));
            }
            check_transfer(sector, total_len(&readable), capacity)?;
            (RequestKind::Out { sector }, readable)
        }
        VIRTIO_BLK_T_FLUSH => (RequestKind::Flush, Vec::new()),
        VIRTIO_BLK_T_GET_ID => {
            if total_len(&readable) != 0 {
                return Err(wrong_direction(&readable));
            }
            (RequestKind::GetId, writable)
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            if total_len(&writable) != 0 {
                return Err(wrong_direction(&writable));
            }
            let (range, flags) = parse_segment(&mut readable, capacity)?;
            let kind = if request_type == VIRTIO_BLK_T_DISCARD {
                if flags != 0 {
                    return Err(RequestError::BadFlags(flags));
                }
                RequestKind::Discard(range)
            } else {
                if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 {
                    return Err(RequestError::BadFlags(flags));
                }
                RequestKind::WriteZeroes {
                    range,
                    unmap: flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
                }
            };
            (kind, Vec::new())
        }
        other => return Err(RequestError::Unsupported(other)),
    };
    let data_len = total_len(&data);
    Ok(Request {
        kind,
        data,
        data_len,
    })
}

/// Checks a read or write of `len` bytes at `sector`.
fn check_transfer(sector: u64, len: usize, capacity: u64) -> Result<(), RequestError> {
    if len as u64 % SECTOR_SIZE != 0 {
        return Err(RequestError::Unaligned(len));
    }
    check_range(sector, len as u64 >> SECTOR_SHIFT, capacity)
}

fn check_range(sector: u64, sectors: u64, capacity: u64) -> Result<(), RequestError> {
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

/// Reads the single discard / write-zeroes segment: its range and flags.
fn parse_segment(
    readable: &mut Vec<GuestBuf<'_>>,
    capacity: u64,
) -> Result<(SectorRange, u32), RequestError> {
    let len = total_len(readable);
    if len == 0 || len % SEGMENT_LEN != 0 || len / SEGMENT_LEN > MAX_RANGE_SEGMENTS {
        return Err(RequestError::BadSegments(len));
    }
    let mut segment = [0u8; SEGMENT_LEN];
    take_front(readable, &mut segment);
    let [s0, s1, s2, s3, s4, s5, s6, s7, n0, n1, n2, n3, f0, f1, f2, f3] = segment;
    let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
    let sectors = u32::from_le_bytes([n0, n1, n2, n3]);
    let flags = u32::from_le_bytes([f0, f1, f2, f3]);
    if sectors > MAX_RANGE_SECTORS {
        return Err(RequestError::RangeTooLarge(sectors));
    }
    check_range(sector, u64::from(sectors), capacity)?;
    Ok((SectorRange { sector, sectors }, flags))
}
