//! Cuts what one API client sends into request lines and pairs each line with the file
//! descriptor that came with it.
//!
//! On a Unix stream socket the kernel hands over a message's descriptors with the first read
//! that takes any of that message's bytes, and ends that read with those bytes; so the bytes
//! a descriptor arrives with end inside the message that carried it. A client sends each
//! request in one message, its descriptor attached: the descriptor then belongs to the line
//! holding the last byte of the read it came with. A line never grows past
//! [`MAX_LINE`] bytes: a longer one is reported at once and the rest of it is skipped.

use std::fs::File;

use super::protocol::{ProtocolError, MAX_LINE};

/// One complete request line (or a line too long to keep), with its descriptors.
#[derive(Debug)]
pub struct Line {
    /// The line without its newline or a trailing `\r`, or [`ProtocolError::LineTooLong`].
    pub text: Result<Vec<u8>, ProtocolError>,
    /// The descriptor sent with the line.
    pub fd: Option<File>,
    /// More than one descriptor came with the line (all but the first were closed).
    pub extra_fds: bool,
}

/// The line being assembled from one client's reads.
#[derive(Debug, Default)]
pub struct LineReader {
    line: Vec<u8>,
    /// The current line was too long and reported; skip it up to its newline.
    skipping: bool,
    fd: Option<File>,
    extra_fds: bool,
}

impl LineReader {
    /// Takes the bytes of one read and the descriptors that came with it; returns the lines
    /// it completed, in order.
    pub fn push(&mut self, chunk: &[u8], fds: Vec<File>) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut fds = fds;
        let mut pieces = chunk.split_inclusive(|&b| b == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_none() {
                fds.drain(..).for_each(|fd| self.add_fd(fd));
            }
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            lines.extend(self.extend(body));
            if ends {
                lines.extend(self.end());
            }
        }
        lines
    }

    fn add_fd(&mut self, fd: File) {
        if self.skipping {
            return;
        }
        if self.fd.is_some() {
            self.extra_fds = true;
        } else {
            self.fd = Some(fd);
        }
    }

    /// Appends to the line; the line itself, as too long, once it passes [`MAX_LINE`].
    fn extend(&mut self, bytes: &[u8]) -> Option<Line> {
        if self.skipping {
            return None;
        }
        if self.line.len() + bytes.len() <= MAX_LINE {
            self.line.extend_from_slice(bytes);
            return None;
        }
        self.skipping = true;
        self.line.clear();
        Some(self.take(Err(ProtocolError::LineTooLong)))
    }

    /// The newline: the line, unless it was already reported as too long.
    fn end(&mut self) -> Option<Line> {
        if std::mem::take(&mut self.skipping) {
            return None;
        }
        let mut text = std::mem::take(&mut self.line);
        if text.last() == Some(&b'\r') {
            text.pop();
        }
        Some(self.take(Ok(text)))
    }

    fn take(&mut self, text: Result<Vec<u8>, ProtocolError>) -> Line {
        Line {
            text,
            fd: self.fd.take(),
            extra_fds: std::mem::take(&mut self.extra_fds),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Vec<File> {
        vec![File::open("/dev/null").unwrap()]
    }

    /// Each line's text (or "TOO LONG"), whether it has a descriptor, and extra descriptors.
    fn summary(lines: Vec<Line>) -> Vec<(String, bool, bool)> {
        lines
            .into_iter()
            .map(|line| {
                let text = match line.text {
                    Ok(text) => String::from_utf8(text).unwrap(),
                    Err(_) => "TOO LONG".into(),
                };
                (text, line.fd.is_some(), line.extra_fds)
            })
            .collect()
    }

    fn line(text: &str, fd: bool) -> (String, bool, bool) {
        (text.to_string(), fd, false)
    }

    #[test]
    fn lines_are_cut_at_newlines_across_reads() {
        let mut reader = LineReader::default();
        assert!(reader.push(b"DETA", Vec::new()).is_empty());
        assert_eq!(
            summary(reader.push(b"CH 1\nDETACH 2\r\nATT", Vec::new())),
            [line("DETACH 1", false), line("DETACH 2", false)]
        );
        assert_eq!(
            summary(reader.push(b"ACH 0 s\n", Vec::new())),
            [line("ATTACH 0 s", false)]
        );
        assert_eq!(summary(reader.push(b"\n", Vec::new())), [line("", false)]);
    }

    #[test]
    fn a_descriptor_belongs_to_the_line_of_the_last_byte_of_its_read() {
        let mut reader = LineReader::default();
        // An earlier request glued to the one that carried the descriptor.
        assert_eq!(
            summary(reader.push(b"DETACH 1\nATTACH 0 s\n", fd())),
            [line("DETACH 1", false), line("ATTACH 0 s", true)]
        );
        // A read that ends inside the descriptor's message.
        assert!(summary(reader.push(b"ATTACH 1", fd())).is_empty());
        assert_eq!(
            summary(reader.push(b" t\nDETACH 1\n", Vec::new())),
            [line("ATTACH 1 t", true), line("DETACH 1", false)]
        );
        // Two descriptors for one line, in two reads or in one.
        assert!(reader.push(b"ATTACH 2", fd()).is_empty());
        assert_eq!(
            summary(reader.push(b" u\n", fd())),
            [("ATTACH 2 u".to_string(), true, true)]
        );
        let two: Vec<File> = fd().into_iter().chain(fd()).collect();
        assert_eq!(
            summary(reader.push(b"ATTACH 3 v\n", two)),
            [("ATTACH 3 v".to_string(), true, true)]
        );
    }

    #[test]
    fn a_long_line_is_reported_once_and_skipped() {
        let mut reader = LineReader::default();
        let exact = "A".repeat(MAX_LINE);
        assert_eq!(
            summary(reader.push(format!("{exact}\n").as_bytes(), Vec::new())),
            [line(&exact, false)]
        );
        assert_eq!(
            summary(reader.push(&[b'x'; MAX_LINE + 1], fd())),
            [line("TOO LONG", true)]
        );
        assert!(reader.push(&[b'x'; 10_000], fd()).is_empty());
        assert_eq!(
            summary(reader.push(b"still long\nDETACH 0\n", Vec::new())),
            [line("DETACH 0", false)]
        );
        assert!(reader.line.capacity() <= 2 * MAX_LINE);
    }
}
