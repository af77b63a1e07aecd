//! The payload of a TX packet as the guest-memory buffers that hold it, so that the device
//! writes it to the host's Unix stream straight from guest memory (one copy, the kernel's,
//! instead of two). Only what the stream does not take is copied, into the connection's buffer.
//! The guest may change these bytes while they are written: they are data to forward, never
//! read for a decision.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;

use vm_memory::{VolatileMemoryError, VolatileSlice, WriteVolatile};

/// A packet's payload: guest-memory slices and how far the device has consumed them.
#[derive(Debug, Default)]
pub struct Payload<'a> {
    slices: Vec<VolatileSlice<'a>>,
    /// Bytes of `slices[0]` already consumed.
    offset: usize,
    len: usize,
}

impl<'a> Payload<'a> {
    /// The payload over `slices`, in order.
    pub fn new(mut slices: Vec<VolatileSlice<'a>>) -> Payload<'a> {
        slices.retain(|s| !s.is_empty());
        let len = slices.iter().map(VolatileSlice::len).sum();
        Payload {
            slices,
            offset: 0,
            len,
        }
    }

    /// Bytes not consumed yet.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first unconsumed part.
    fn front(&self) -> Option<VolatileSlice<'a>> {
        self.slices.first().and_then(|s| s.offset(self.offset).ok())
    }

    fn consume(&mut self, n: usize) {
        self.len -= n;
        self.offset += n;
        while let Some(first) = self.slices.first() {
            if self.offset < first.len() {
                break;
            }
            self.offset -= first.len();
            self.slices.remove(0);
        }
    }

    /// Writes what the non-blocking `stream` takes, straight from guest memory; returns the
    /// bytes written (fewer than [`Payload::len`] when the stream is full).
    pub fn write_to(&mut self, stream: &UnixStream) -> Result<usize, VolatileMemoryError> {
        let mut written = 0;
        while let Some(front) = self.front() {
            let mut target = stream;
            match target.write_volatile(&front) {
                Ok(0) => {
                    return Err(VolatileMemoryError::IOError(ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.consume(n);
                    written += n;
                }
                Err(VolatileMemoryError::IOError(e)) if e.kind() == ErrorKind::WouldBlock => break,
                Err(VolatileMemoryError::IOError(e)) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// Appends every unconsumed byte to `buffer`.
    pub fn copy_rest(&mut self, buffer: &mut VecDeque<u8>) {
        let start = buffer.len();
        buffer.resize(start + self.len, 0);
        let mut copied = 0;
        let (a, b) = buffer.as_mut_slices();
        let parts: [&mut [u8]; 2] = if start <= a.len() {
            [&mut a[start..], b]
        } else {
            [&mut [], &mut b[start - a.len()..]]
        };
        for part in parts {
            let mut at = 0;
            while let (Some(front), true) = (self.front(), at < part.len()) {
                let n = front.copy_to(&mut part[at..]);
                if n == 0 {
                    break;
                }
                at += n;
                self.consume(n);
            }
            copied += at;
        }
        buffer.truncate(start + copied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    fn memory() -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8000)]).unwrap();
        let bytes: Vec<u8> = (0..0x8000u32).map(|i| (i % 251) as u8).collect();
        mem.write_slice(&bytes, GuestAddress(0)).unwrap();
        mem
    }

    fn payload<'a>(mem: &'a GuestMemoryMmap, parts: &[(u64, usize)]) -> Payload<'a> {
        let slices = parts
            .iter()
            .map(|&(addr, len)| mem.get_slice(GuestAddress(addr), len).unwrap())
            .collect();
        Payload::new(slices)
    }

    fn expected(parts: &[(u64, usize)]) -> Vec<u8> {
        parts
            .iter()
            .flat_map(|&(addr, len)| (addr..addr + len as u64).map(|i| (i % 251) as u8))
            .collect()
    }

    #[test]
    fn writes_from_guest_memory_and_buffers_what_the_stream_refuses() {
        let mem = memory();
        let parts = [(0x100, 3000), (0x2000, 1), (0x3000, 4999)];
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        // A small send buffer so that the stream fills before the payload is out.
        socket2::SockRef::from(&ours)
            .set_send_buffer_size(4096)
            .unwrap();
        let mut p = payload(&mem, &parts);
        assert_eq!(p.len(), 8000);
        let written = p.write_to(&ours).unwrap();
        assert!(written > 0 && written < 8000, "wrote {written}");
        assert_eq!(p.len(), 8000 - written);
        let mut rest = VecDeque::from(vec![9u8; 3]);
        p.copy_rest(&mut rest);
        assert!(p.is_empty());
        let mut got = vec![0u8; written];
        theirs.read_exact(&mut got).unwrap();
        got.extend(rest.iter().skip(3));
        assert_eq!(got, expected(&parts));
    }

    #[test]
    fn copies_into_a_wrapped_buffer() {
        let mem = memory();
        let parts = [(0x10, 100), (0x500, 50)];
        let mut buffer: VecDeque<u8> = VecDeque::with_capacity(160);
        // Move the deque's start so that the appended bytes wrap around its end.
        buffer.extend(std::iter::repeat_n(0u8, 120));
        buffer.drain(..110);
        let mut p = payload(&mem, &parts);
        p.copy_rest(&mut buffer);
        assert!(p.is_empty());
        let got: Vec<u8> = buffer.iter().skip(10).copied().collect();
        assert_eq!(got, expected(&parts));
    }

    #[test]
    fn a_closed_stream_is_an_error() {
        let mem = memory();
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let mut p = payload(&mem, &[(0, 10)]);
        assert!(p.write_to(&ours).is_err());
    }
}
