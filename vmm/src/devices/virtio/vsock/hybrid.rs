//! The host side's handshake of the hybrid vsock: the `CONNECT <port>\n` line a host process
//! writes to the VMM's Unix socket, and the `OK <host port>\n` reply.

/// Longest CONNECT line accepted, newline included.
pub const MAX_LINE: usize = 32;

/// Why a CONNECT line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConnectLineError {
    /// The line does not start with `CONNECT `.
    #[error("vsock: handshake {0:?} is not \"CONNECT <port>\"")]
    NotConnect(String),
    /// The port is not a decimal u32.
    #[error("vsock: CONNECT port {0:?} is not a number")]
    BadPort(String),
    /// No newline within [`MAX_LINE`] bytes.
    #[error("vsock: no newline in the first {MAX_LINE} bytes of the handshake")]
    TooLong,
}

/// Accumulates a handshake line byte by byte.
#[derive(Debug, Default)]
pub struct ConnectLine {
    bytes: Vec<u8>,
}

impl ConnectLine {
    /// Adds one byte: `Ok(Some(port))` once the newline arrives, `Ok(None)` while incomplete.
    pub fn push(&mut self, byte: u8) -> Result<Option<u32>, ConnectLineError> {
        if byte == b'\n' {
            return parse_connect(&self.bytes).map(Some);
        }
        if self.bytes.len() + 1 >= MAX_LINE {
            return Err(ConnectLineError::TooLong);
        }
        self.bytes.push(byte);
        Ok(None)
    }
}

/// Parses a CONNECT line without its newline.
pub fn parse_connect(line: &[u8]) -> Result<u32, ConnectLineError> {
    let text = || String::from_utf8_lossy(line).into_owned();
    let port = line
        .strip_prefix(b"CONNECT ")
        .ok_or_else(|| ConnectLineError::NotConnect(text()))?;
    // Digits only: `u32::from_str` would take a leading '+'.
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return Err(ConnectLineError::BadPort(text()));
    }
    std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| ConnectLineError::BadPort(text()))
}

/// The reply to an accepted CONNECT: the VMM's host-side port of the connection.
pub fn ok_reply(host_port: u32) -> String {
    format!("OK {host_port}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(bytes: &[u8]) -> Result<Option<u32>, ConnectLineError> {
        let mut line = ConnectLine::default();
        let mut last = Ok(None);
        for &b in bytes {
            last = line.push(b);
            if !matches!(last, Ok(None)) {
                break;
            }
        }
        last
    }

    #[test]
    fn good_lines() {
        assert_eq!(feed(b"CONNECT 1024\n"), Ok(Some(1024)));
        assert_eq!(feed(b"CONNECT 4294967295\n"), Ok(Some(u32::MAX)));
        assert_eq!(feed(b"CONNECT 10"), Ok(None));
    }

    #[test]
    fn bad_lines() {
        assert!(matches!(
            feed(b"CONNECT abc\n"),
            Err(ConnectLineError::BadPort(_))
        ));
        assert!(matches!(
            feed(b"CONNECT +1\n"),
            Err(ConnectLineError::BadPort(_))
        ));
        assert!(matches!(
            feed(b"CONNECT \n"),
            Err(ConnectLineError::BadPort(_))
        ));
        assert!(matches!(
            feed(b"CONNECT 4294967296\n"),
            Err(ConnectLineError::BadPort(_))
        ));
        assert!(matches!(
            feed(b"CONNECT -1\n"),
            Err(ConnectLineError::BadPort(_))
        ));
        assert!(matches!(
            feed(b"connect 1\n"),
            Err(ConnectLineError::NotConnect(_))
        ));
        assert!(matches!(feed(b"\n"), Err(ConnectLineError::NotConnect(_))));
        assert_eq!(feed(&[b'C'; 100]), Err(ConnectLineError::TooLong));
        assert_eq!(
            feed(b"CONNECT 0000000000000000000000001\n"),
            Err(ConnectLineError::TooLong)
        );
    }

    #[test]
    fn reply_is_what_the_client_expects() {
        assert_eq!(ok_reply(1 << 30), "OK 1073741824\n");
    }
}
