//! The API's wire format: one request per line, one reply line per request. This module parses
//! a request line into a [`Request`] (or says precisely what is wrong with it) and formats the
//! replies; it knows nothing of sockets or slots.

use std::fmt;

use crate::config::MAX_DISK_SERIAL;

/// Longest request line in bytes, newline excluded.
pub const MAX_LINE: usize = 256;
/// Longest reply line the client accepts, newline excluded.
pub const MAX_REPLY: usize = 512;
/// Longest piece of a client's input quoted back in an error.
const MAX_QUOTED: usize = 32;

/// A well-formed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `ATTACH <slot> <serial>`, the image's descriptor on the same message.
    Attach {
        /// Slot number.
        slot: u32,
        /// The serial the guest reads (`/sys/block/vdX/serial`).
        serial: String,
    },
    /// `DETACH <slot>`.
    Detach {
        /// Slot number.
        slot: u32,
    },
}

/// Why a line is not a well-formed request; the message goes back to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Nothing but whitespace.
    #[error("empty request (ATTACH <slot> <serial>, DETACH <slot>)")]
    Empty,
    /// A command we do not have.
    #[error("unknown command {0} (ATTACH <slot> <serial>, DETACH <slot>)")]
    UnknownCommand(Quoted),
    /// Too few or too many arguments.
    #[error("wrong number of arguments: usage {0}")]
    Usage(&'static str),
    /// The slot is not a decimal number that fits 32 bits.
    #[error("bad slot number {0}: expected a decimal number")]
    BadSlot(Quoted),
    /// The serial does not fit the 20-byte device ID.
    #[error("serial longer than {MAX_DISK_SERIAL} bytes ({0} bytes)")]
    SerialTooLong(usize),
    /// The serial has bytes that are not printable ASCII.
    #[error("serial {0} is not printable ASCII")]
    SerialNotPrintable(Quoted),
    /// The line is longer than [`MAX_LINE`]; the rest of it, up to its newline, is ignored.
    #[error("line too long (more than {MAX_LINE} bytes)")]
    LineTooLong,
}

/// A piece of client input, quoted for an error message: escaped (so it stays on one line and
/// in ASCII) and cut to a few dozen bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    /// Quotes `bytes`.
    pub fn new(bytes: &[u8]) -> Quoted {
        let cut = &bytes[..bytes.len().min(MAX_QUOTED)];
        let mut text: String = cut.escape_ascii().to_string();
        if cut.len() < bytes.len() {
            text.push_str("...");
        }
        Quoted(text)
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

const ATTACH_USAGE: &str = "ATTACH <slot> <serial>";
const DETACH_USAGE: &str = "DETACH <slot>";

/// Parses one request line (without its newline; a trailing `\r` is whitespace).
pub fn parse(line: &[u8]) -> Result<Request, ProtocolError> {
    let mut words = line
        .split(u8::is_ascii_whitespace)
        .filter(|word| !word.is_empty());
    let command = words.next().ok_or(ProtocolError::Empty)?;
    let args: Vec<&[u8]> = words.collect();
    match command {
        b"ATTACH" => {
            let [slot, serial] = args[..] else {
                return Err(ProtocolError::Usage(ATTACH_USAGE));
            };
            Ok(Request::Attach {
                slot: parse_slot(slot)?,
                serial: check_serial(serial)?,
            })
        }
        b"DETACH" => {
            let [slot] = args[..] else {
                return Err(ProtocolError::Usage(DETACH_USAGE));
            };
            Ok(Request::Detach {
                slot: parse_slot(slot)?,
            })
        }
        other => Err(ProtocolError::UnknownCommand(Quoted::new(other))),
    }
}

fn parse_slot(word: &[u8]) -> Result<u32, ProtocolError> {
    let bad = || ProtocolError::BadSlot(Quoted::new(word));
    if !word.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(word)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(bad)
}

/// Checks a serial: 1 to 20 bytes of printable ASCII without spaces (what fits a virtio-blk
/// device ID and one word of a request line).
pub fn check_serial(serial: &[u8]) -> Result<String, ProtocolError> {
    if serial.len() > MAX_DISK_SERIAL {
        return Err(ProtocolError::SerialTooLong(serial.len()));
    }
    match std::str::from_utf8(serial) {
        Ok(text) if !text.is_empty() && serial.iter().all(u8::is_ascii_graphic) => {
            Ok(text.to_string())
        }
        _ => Err(ProtocolError::SerialNotPrintable(Quoted::new(serial))),
    }
}

/// The reply to an attach: the slot and the image's capacity in sectors.
pub fn attached(slot: u32, sectors: u64) -> String {
    format!("OK {slot} {sectors}")
}

/// The reply to a detach.
pub fn detached(slot: u32) -> String {
    format!("OK {slot}")
}

/// The reply to a refused request, kept on one line whatever `reason` says.
pub fn refused(reason: &dyn fmt::Display) -> String {
    let text: String = reason
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("ERR {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: &str) -> String {
        parse(line.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse(b"ATTACH 3 layer-0"),
            Ok(Request::Attach {
                slot: 3,
                serial: "layer-0".into()
            })
        );
        assert_eq!(parse(b"  DETACH\t15 \r"), Ok(Request::Detach { slot: 15 }));
        assert_eq!(
            parse(b"ATTACH 0 12345678901234567890"),
            Ok(Request::Attach {
                slot: 0,
                serial: "12345678901234567890".into()
            })
        );
    }

    #[test]
    fn every_malformed_request_is_named() {
        assert!(error("").starts_with("empty request"));
        assert!(error(" \t ").starts_with("empty request"));
        assert!(error("attach 0 x").starts_with("unknown command \"attach\""));
        assert!(error("HELLO").starts_with("unknown command \"HELLO\""));
        assert_eq!(
            error("ATTACH 0"),
            "wrong number of arguments: usage ATTACH <slot> <serial>"
        );
        assert_eq!(
            error("ATTACH 0 a b"),
            "wrong number of arguments: usage ATTACH <slot> <serial>"
        );
        assert_eq!(
            error("DETACH"),
            "wrong number of arguments: usage DETACH <slot>"
        );
        assert_eq!(
            error("DETACH 1 2"),
            "wrong number of arguments: usage DETACH <slot>"
        );
        for slot in ["-1", "+1", "x", "1.0", "4294967296", "0x1"] {
            assert_eq!(
                error(&format!("DETACH {slot}")),
                format!("bad slot number \"{slot}\": expected a decimal number")
            );
        }
        assert_eq!(
            error("ATTACH 0 123456789012345678901"),
            "serial longer than 20 bytes (21 bytes)"
        );
        assert_eq!(
            parse("ATTACH 0 caf\u{e9}".as_bytes())
                .unwrap_err()
                .to_string(),
            "serial \"caf\\xc3\\xa9\" is not printable ASCII"
        );
        assert_eq!(
            parse(b"ATTACH 0 a\x01b").unwrap_err().to_string(),
            "serial \"a\\x01b\" is not printable ASCII"
        );
    }

    #[test]
    fn quoted_input_is_escaped_and_cut() {
        let long = Quoted::new(&[b'A'; 100]).to_string();
        assert_eq!(long, format!("\"{}...\"", "A".repeat(32)));
        let text = error("\x1b[2J\x7f");
        assert!(
            text.starts_with("unknown command \"\\x1b[2J\\x7f\""),
            "{text}"
        );
        assert!(!refused(&"a\nb").contains('\n'));
    }
}
