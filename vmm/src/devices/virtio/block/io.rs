//! Executes a parsed virtio-blk request against the backing file: reads and writes go straight
//! between the file and guest memory with `preadv`/`pwritev` (no bounce buffer), flush is
//! `fdatasync`, discard and write-zeroes are `fallocate` (punch hole / zero range). An empty
//! disk slot answers GET_ID only.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};

use super::request::{GuestBuf, Request, RequestKind, SectorRange, ID_LEN, SECTOR_SHIFT};

/// Status byte of a request that succeeded.
pub const STATUS_OK: u8 = VIRTIO_BLK_S_OK as u8;
/// Status byte of a request that failed.
pub const STATUS_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

/// Most iovecs per `preadv`/`pwritev` call (the kernel's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// The backing store as the executor sees it.
#[derive(Debug)]
pub struct Backend<'a> {
    /// The open image.
    pub file: &'a File,
    /// Writes are refused.
    pub read_only: bool,
    /// GET_ID's answer: the serial, NUL-padded.
    pub id: [u8; ID_LEN],
}

/// The outcome of a request: its status byte and how many data bytes went to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// `VIRTIO_BLK_S_*`.
    pub status: u8,
    /// Bytes written into the guest's data buffers (not counting the status byte).
    pub written: u32,
}

impl Completion {
    fn ok(written: usize) -> Self {
        Completion {
            status: STATUS_OK,
            written: u32::try_from(written).unwrap_or(u32::MAX),
        }
    }

    fn failed() -> Self {
        Completion {
            status: STATUS_IOERR,
            written: 0,
        }
    }
}

/// Executes `request`; failures of the host file become `IOERR` (and a log line).
pub fn execute(backend: &Backend<'_>, request: &Request<'_>) -> Completion {
    let result = match request.kind {
        RequestKind::In { sector } => {
            read_into(backend.file, sector << SECTOR_SHIFT, &request.data)
                .map(|()| request.data_len)
        }
        RequestKind::Out { .. } | RequestKind::Discard(_) | RequestKind::WriteZeroes { .. }
            if backend.read_only =>
        {
            tracing::debug!("block: {:?} on a read-only disk refused", request.kind);
            return Completion::failed();
        }
        RequestKind::Out { sector } => {
            write_from(backend.file, sector << SECTOR_SHIFT, &request.data).map(|()| 0)
        }
        RequestKind::Flush => backend.file.sync_data().map(|()| 0),
        RequestKind::GetId => Ok(write_id(&backend.id, &request.data)),
        RequestKind::Discard(range) => discard(backend.file, range).map(|()| 0),
        RequestKind::WriteZeroes { range, unmap } => {
            write_zeroes(backend.file, range, unmap).map(|()| 0)
        }
    };
    match result {
        Ok(written) => Completion::ok(written),
        Err(e) => {
            crate::warn_limited!("block: {:?} failed: {e}", request.kind);
            Completion::failed()
        }
    }
}

/// Executes `request` on an empty disk slot: GET_ID answers an empty ID, everything else
/// fails (reads and writes cannot get here: the parser checks them against capacity 0).
pub fn execute_without_image(request: &Request<'_>) -> Completion {
    if request.kind == RequestKind::GetId {
        return Completion::ok(write_id(&[0; ID_LEN], &request.data));
    }
    tracing::debug!("block: {:?} on an empty disk slot refused", request.kind);
    Completion::failed()
}

/// Copies the ID into the guest's buffers, as much as fits; returns the bytes written.
fn write_id(id: &[u8; ID_LEN], data: &[GuestBuf<'_>]) -> usize {
    let mut rest: &[u8] = id;
    let mut written = 0;
    for buf in data {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(buf.len());
        buf.copy_from(&rest[..n]);
        rest = &rest[n..];
        written += n;
    }
    written
}

#[derive(Clone, Copy)]
enum Direction {
    /// File to guest memory.
    Read,
    /// Guest memory to file.
    Write,
}

fn read_into(file: &File, offset: u64, data: &[GuestBuf<'_>]) -> std::io::Result<()> {
    transfer(file, offset, data, Direction::Read)
}

fn write_from(file: &File, offset: u64, data: &[GuestBuf<'_>]) -> std::io::Result<()> {
    transfer(file, offset, data, Direction::Write)
}

/// Moves all of `data` between the file at `offset` and guest memory, resuming after short
/// transfers. Reading past the end of the file (it shrank under us) is an error.
fn transfer(
    file: &File,
    offset: u64,
    data: &[GuestBuf<'_>],
    direction: Direction,
) -> std::io::Result<()> {
    let mut iovecs: Vec<libc::iovec> = data
        .iter()
        .map(|buf| libc::iovec {
            iov_base: buf.ptr_guard_mut().as_ptr().cast(),
            iov_len: buf.len(),
        })
        .collect();
    let mut done = 0usize;
    let mut offset = offset;
    while done < iovecs.len() {
        let batch = &iovecs[done..iovecs.len().min(done + MAX_IOVECS)];
        let count = libc::c_int::try_from(batch.len()).unwrap_or(libc::c_int::MAX);
        let position = libc::off_t::try_from(offset).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset beyond off_t")
        })?;
        let result = match direction {
            // SAFETY: every iovec points into guest memory borrowed by `data` for the whole
            // call (the mapping outlives it) and is `iov_len` bytes long; the kernel writes at
            // most that many bytes into each. The guest may change that memory concurrently,
            // which is harmless for bytes we only move.
            Direction::Read => unsafe {
                libc::preadv(file.as_raw_fd(), batch.as_ptr(), count, position)
            },
            // SAFETY: as above; the kernel only reads from the iovecs.
            Direction::Write => unsafe {
                libc::pwritev(file.as_raw_fd(), batch.as_ptr(), count, position)
            },
        };
        let moved = match usize::try_from(result) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the disk image ended before the request did",
                ))
            }
            Ok(moved) => moved,
            Err(_) => {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
        };
        offset += moved as u64;
        done = advance(&mut iovecs, done, moved);
    }
    Ok(())
}

/// Drops `moved` bytes from the iovecs starting at `first`; returns the new first iovec.
fn advance(iovecs: &mut [libc::iovec], first: usize, moved: usize) -> usize {
    let mut index = first;
    let mut left = moved;
    while let Some(iov) = iovecs.get_mut(index) {
        if left < iov.iov_len {
            // The rest of a partly moved buffer.
            iov.iov_base = iov.iov_base.cast::<u8>().wrapping_add(left).cast();
            iov.iov_len -= left;
            break;
        }
        left -= iov.iov_len;
        index += 1;
    }
    index
}

fn byte_range(range: SectorRange) -> std::io::Result<(libc::off_t, libc::off_t)> {
    let start = libc::off_t::try_from(range.sector << SECTOR_SHIFT);
    let len = libc::off_t::try_from(u64::from(range.sectors) << SECTOR_SHIFT);
    match (start, len) {
        (Ok(start), Ok(len)) => Ok((start, len)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "range beyond off_t",
        )),
    }
}

fn fallocate(file: &File, mode: libc::c_int, range: SectorRange) -> std::io::Result<()> {
    let (start, len) = byte_range(range)?;
    if len == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: fallocate only changes the file behind our own descriptor; no memory is
        // passed.
        let result = unsafe { libc::fallocate(file.as_raw_fd(), mode, start, len) };
        if result == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn unsupported(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
    )
}

/// Punches a hole; a file system without holes makes discard a no-op, which the protocol
/// allows (discarded data may still read back).
fn discard(file: &File, range: SectorRange) -> std::io::Result<()> {
    match fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        range,
    ) {
        Err(e) if unsupported(&e) => Ok(()),
        other => other,
    }
}

/// Zeroes the range: a hole if unmapping is allowed, else an allocated zero range; writing
/// zeroes where the file system supports neither.
fn write_zeroes(file: &File, range: SectorRange, unmap: bool) -> std::io::Result<()> {
    let mode = if unmap {
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
    } else {
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
    };
    match fallocate(file, mode, range) {
        Err(e) if unsupported(&e) => write_zero_bytes(file, range),
        other => other,
    }
}

fn write_zero_bytes(file: &File, range: SectorRange) -> std::io::Result<()> {
    static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut offset = range.sector << SECTOR_SHIFT;
    let mut left = u64::from(range.sectors) << SECTOR_SHIFT;
    while left > 0 {
        let n = left.min(ZEROES.len() as u64);
        file.write_all_at(&ZEROES[..n as usize], offset)?;
        offset += n;
        left -= n;
    }
    Ok(())
}
