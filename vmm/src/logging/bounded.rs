//! Host files a guest can make grow, kept under a fixed size by the VMM itself: the console log
//! (`--console-log`, everything the guest prints on its serial port) and the VMM's stderr when
//! it is a file (the runtime's `vmm.log`).
//!
//! Why here and not by rotation: the VMM runs jailed, in an empty root under a filter without
//! `openat`, so it cannot open a new file once the guest runs, and nothing else writes these
//! files. So the writer that bounds them is the one holding the descriptor. A [`BoundedFile`]
//! keeps the first `head` bytes (the boot, where a failure to start shows) and about the last
//! `tail` bytes (where the VM's end shows, what the runtime quotes when a VM dies): when the
//! file passes `head + 2 × tail`, the last `tail` bytes (from a line start) are copied down
//! to just after the head with `pread`/`pwrite`, behind one line saying how much was cut
//! there, and the file is truncated (`ftruncate`). A copy of `tail` bytes for every `tail`
//! bytes written keeps the cost linear, and the file stays plain text that `cat`, `tail` and
//! the runtime read as before. The descriptor's offset is moved to the new end, so that other
//! writers of the same open file (the standard library's `eprintln!` and panic messages on
//! stderr) go on at the end.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};

/// How much of a file to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes kept from the start.
    pub head: u64,
    /// Bytes kept from the end when the file is cut (from the first line start in them).
    pub tail: u64,
}

impl Limits {
    /// The most the file holds (it is cut when it passes this), the cut line aside.
    pub fn max(&self) -> u64 {
        self.head + 2 * self.tail
    }
}

/// The console log: the first MiB and the last 4 to 8 (9 MiB at most).
pub const CONSOLE: Limits = Limits {
    head: 1 << 20,
    tail: 4 << 20,
};
/// The VMM's own log: the first 256 KiB and the last 1 to 2 MiB (2.25 MiB at most).
pub const STDERR: Limits = Limits {
    head: 256 << 10,
    tail: 1 << 20,
};

/// Bytes copied at a time when the tail moves down.
const CHUNK: usize = 64 << 10;
/// How far into the kept tail to look for a line start.
const LINE_SEARCH: usize = 4 << 10;

/// A file written at its end and cut to its [`Limits`].
#[derive(Debug)]
pub struct BoundedFile {
    /// Written at its offset, which other writers of the same open file share.
    file: File,
    /// The same file open for reading and writing: where the cut reads, writes and truncates.
    io: File,
    limits: Limits,
    /// Where the end is, as far as this writer knows (others may have written since).
    len: u64,
    /// Output cut so far, the earlier cut lines aside.
    dropped: u64,
    /// The length of the cut line after the head, if this writer wrote one.
    marker_len: u64,
}

impl BoundedFile {
    /// Takes over `file`, open for reading and writing, and goes on at its end.
    pub fn new(file: File, limits: Limits) -> io::Result<Self> {
        let io = file.try_clone()?;
        Self::with_io(file, io, limits)
    }

    /// Takes over `file` (maybe open for writing only, such as a shell's `2>file`), written at
    /// its end, and cut through `io`, the same file open for reading and writing. An `O_APPEND`
    /// description is made a plain one: `pwrite` on an appending description appends.
    pub fn with_io(mut file: File, io: File, limits: Limits) -> io::Result<Self> {
        for open in [&file, &io] {
            let flags = fcntl_getfl(open)?;
            if flags.contains(OFlags::APPEND) {
                fcntl_setfl(open, flags - OFlags::APPEND)?;
            }
        }
        if fcntl_getfl(&io)? & OFlags::RWMODE != OFlags::RDWR {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the file to cut is not open for reading and writing",
            ));
        }
        let len = file.seek(SeekFrom::End(0))?;
        let mut bounded = Self {
            file,
            io,
            limits,
            len,
            dropped: 0,
            marker_len: 0,
        };
        bounded.cut_if_needed()?;
        Ok(bounded)
    }

    fn cut_if_needed(&mut self) -> io::Result<()> {
        if self.len <= self.limits.max() {
            return Ok(());
        }
        // Count what others wrote through the same open file too.
        let end = self.io.metadata()?.len();
        self.len = end;
        if end > self.limits.max() {
            self.cut(end)?;
        }
        Ok(())
    }

    /// Moves the last `tail` bytes (from a line start) down after the head and a cut line.
    fn cut(&mut self, end: u64) -> io::Result<()> {
        let Limits { head, tail } = self.limits;
        let keep_from = self.line_start(end - tail, end)?;
        let cut_from = head + self.marker_len;
        self.dropped += keep_from.saturating_sub(cut_from);
        let marker = format!(
            "\n[rvm-vmm: {} bytes of output cut here to keep this file under {} bytes]\n",
            self.dropped,
            self.limits.max()
        );
        self.io.write_all_at(marker.as_bytes(), head)?;
        let to = head + marker.len() as u64;
        let kept = end - keep_from;
        // The destination is before the source, so a forward copy never overwrites bytes it
        // has still to read.
        let mut buffer = vec![0u8; CHUNK];
        let mut done = 0u64;
        while done < kept {
            let want = usize::try_from((kept - done).min(CHUNK as u64)).unwrap_or(CHUNK);
            let read = self.io.read_at(&mut buffer[..want], keep_from + done)?;
            if read == 0 {
                break;
            }
            self.io.write_all_at(&buffer[..read], to + done)?;
            done += read as u64;
        }
        let new_len = to + done;
        self.io.set_len(new_len)?;
        self.file.seek(SeekFrom::Start(new_len))?;
        self.len = new_len;
        self.marker_len = marker.len() as u64;
        Ok(())
    }

    /// The offset just after the first newline at or after `from` (within [`LINE_SEARCH`]),
    /// else `from`.
    fn line_start(&self, from: u64, end: u64) -> io::Result<u64> {
        let mut buffer = vec![0u8; LINE_SEARCH];
        let read = self.io.read_at(&mut buffer, from)?;
        Ok(buffer[..read]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(from, |at| from + at as u64 + 1)
            .min(end))
    }
}

impl Write for BoundedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.len += written as u64;
        self.cut_if_needed()?;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::fd::AsFd;

    const SMALL: Limits = Limits {
        head: 100,
        tail: 300,
    };

    fn open(path: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn a_flood_keeps_the_head_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = BoundedFile::new(open(&path), SMALL).unwrap();
        for n in 0..1000 {
            // Byte by byte, as the UART writes.
            for byte in format!("line {n:04}\n").bytes() {
                log.write_all(&[byte]).unwrap();
            }
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(size <= SMALL.max() + 100, "{size} bytes after line {n}");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("line 0000\nline 0001\n"), "{text}");
        assert!(text.ends_with("line 0998\nline 0999\n"), "{text}");
        assert_eq!(
            text.matches("bytes of output cut here").count(),
            1,
            "{text}"
        );
        // The tail is whole lines, in order, at least `tail` bytes of them.
        let marker_end = text.find("bytes]\n").unwrap() + "bytes]\n".len();
        let tail = &text[marker_end..];
        assert!(tail.len() as u64 >= SMALL.tail - 10, "{}", tail.len());
        let numbers: Vec<u32> = tail
            .lines()
            .map(|l| l.trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{tail}");
        // The count told is what is missing between the head and the tail.
        let told: u64 = text[text.find("[rvm-vmm: ").unwrap() + 10..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(told, 1000 * 10 - SMALL.head - tail.len() as u64);
    }

    #[test]
    fn other_writers_of_the_same_file_go_on_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.log");
        let file = open(&path);
        let other = File::from(file.as_fd().try_clone_to_owned().unwrap());
        let mut log = BoundedFile::new(file, SMALL).unwrap();
        for n in 0..200 {
            log.write_all(format!("warning {n:03}\n").as_bytes())
                .unwrap();
        }
        (&other).write_all(b"panic: the end\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("warning 199\npanic: the end\n"), "{text}");
        assert!(text.len() as u64 <= SMALL.max() + 100);
    }

    #[test]
    fn a_write_only_file_is_cut_through_a_second_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.log");
        // As a shell's `2>vmm.log` opens it.
        let write_only = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let refused = BoundedFile::new(write_only.try_clone().unwrap(), SMALL).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
        let mut log = BoundedFile::with_io(write_only, open(&path), SMALL).unwrap();
        for n in 0..200 {
            log.write_all(format!("warning {n:03}\n").as_bytes())
                .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() as u64 <= SMALL.max() + 100, "{}", text.len());
        assert!(text.starts_with("warning 000\n"), "{text}");
        assert!(text.ends_with("warning 199\n"), "{text}");
    }

    #[test]
    fn an_earlier_file_is_kept_and_then_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "earlier boot\n").unwrap();
        let appending = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut log = BoundedFile::new(appending, SMALL).unwrap();
        log.write_all(b"this boot\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "earlier boot\nthis boot\n"
        );
        std::fs::write(&path, "x".repeat(5000)).unwrap();
        let log = BoundedFile::new(open(&path), SMALL).unwrap();
        drop(log);
        assert!(std::fs::metadata(&path).unwrap().len() <= SMALL.max() + 100);
    }
}
