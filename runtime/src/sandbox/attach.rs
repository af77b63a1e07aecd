//! The attach protocol between `rvm run` (the client) and the container's monitor, over a Unix
//! socket pair: typed frames `[kind u8][length u32 BE][payload]` carrying stdin, terminal size
//! and signals one way, stdout, stderr and the outcome the other way.

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload accepted.
pub const MAX_PAYLOAD: u32 = 2 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → monitor: bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// Client → monitor: the client's stdin ended.
    StdinEof,
    /// Client → monitor: the terminal's size.
    Resize { rows: u16, columns: u16 },
    /// Client → monitor: forward this signal to the container's process.
    Signal(u32),
    /// Monitor → client.
    Stdout(Vec<u8>),
    /// Monitor → client.
    Stderr(Vec<u8>),
    /// Monitor → client: the container's process exited with this code.
    Exit(i32),
    /// Monitor → client: the container could not be started; exit with `code`.
    Failed { code: i32, message: String },
}

#[derive(Debug, Error)]
pub enum AttachError {
    #[error("attach socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("attach socket: frame of {0} bytes exceeds the limit")]
    TooLarge(u32),
    #[error("attach socket: unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("attach socket: malformed frame of kind {0}")]
    Malformed(u8),
}

impl Frame {
    fn encode(&self) -> (u8, Vec<u8>) {
        match self {
            Self::Stdin(data) => (1, data.clone()),
            Self::StdinEof => (2, Vec::new()),
            Self::Resize { rows, columns } => {
                let mut payload = rows.to_be_bytes().to_vec();
                payload.extend_from_slice(&columns.to_be_bytes());
                (3, payload)
            }
            Self::Signal(signal) => (4, signal.to_be_bytes().to_vec()),
            Self::Stdout(data) => (10, data.clone()),
            Self::Stderr(data) => (11, data.clone()),
            Self::Exit(code) => (12, code.to_be_bytes().to_vec()),
            Self::Failed { code, message } => {
                let mut payload = code.to_be_bytes().to_vec();
                payload.extend_from_slice(message.as_bytes());
                (13, payload)
            }
        }
    }

    fn decode(kind: u8, payload: Vec<u8>) -> Result<Self, AttachError> {
        let malformed = || AttachError::Malformed(kind);
        let word = |bytes: &[u8]| -> Result<[u8; 4], AttachError> {
            bytes
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(malformed)
        };
        Ok(match kind {
            1 => Self::Stdin(payload),
            2 => Self::StdinEof,
            3 => {
                let [r0, r1, c0, c1] = word(&payload)?;
                Self::Resize {
                    rows: u16::from_be_bytes([r0, r1]),
                    columns: u16::from_be_bytes([c0, c1]),
                }
            }
            4 => Self::Signal(u32::from_be_bytes(word(&payload)?)),
            10 => Self::Stdout(payload),
            11 => Self::Stderr(payload),
            12 => Self::Exit(i32::from_be_bytes(word(&payload)?)),
            13 => Self::Failed {
                code: i32::from_be_bytes(word(&payload)?),
                message: String::from_utf8_lossy(&payload[4..]).into_owned(),
            },
            other => return Err(AttachError::UnknownKind(other)),
        })
    }
}

/// Writes one frame.
pub async fn write_frame(
    writer: &mut (impl AsyncWrite + Unpin),
    frame: &Frame,
) -> Result<(), AttachError> {
    let (kind, payload) = frame.encode();
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_PAYLOAD)
        .ok_or(AttachError::TooLarge(u32::MAX))?;
    let mut bytes = Vec::with_capacity(5 + payload.len());
    bytes.push(kind);
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(&payload);
    writer.write_all(&bytes).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame; `None` when the peer closed the socket between frames.
pub async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<Option<Frame>, AttachError> {
    let mut header = [0u8; 5];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err.into()),
    }
    reader.read_exact(&mut header[1..]).await?;
    let [kind, l0, l1, l2, l3] = header;
    let length = u32::from_be_bytes([l0, l1, l2, l3]);
    if length > MAX_PAYLOAD {
        return Err(AttachError::TooLarge(length));
    }
    let mut payload = vec![0u8; length as usize];
    reader.read_exact(&mut payload).await?;
    Frame::decode(kind, payload).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let frames = vec![
            Frame::Stdin(b"in".to_vec()),
            Frame::StdinEof,
            Frame::Resize {
                rows: 24,
                columns: 80,
            },
            Frame::Signal(15),
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-1),
            Frame::Failed {
                code: 127,
                message: "not found".into(),
            },
        ];
        let mut bytes = Vec::new();
        for frame in &frames {
            write_frame(&mut bytes, frame).await.unwrap();
        }
        let mut reader = &bytes[..];
        for frame in &frames {
            assert_eq!(read_frame(&mut reader).await.unwrap().as_ref(), Some(frame));
        }
        assert_eq!(read_frame(&mut reader).await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_frames_are_refused() {
        let mut oversize: &[u8] = &[10, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut oversize).await,
            Err(AttachError::TooLarge(_))
        ));
        let mut unknown: &[u8] = &[99, 0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut unknown).await,
            Err(AttachError::UnknownKind(99))
        ));
        let mut short_exit: &[u8] = &[12, 0, 0, 0, 1, 0];
        assert!(matches!(
            read_frame(&mut short_exit).await,
            Err(AttachError::Malformed(12))
        ));
    }
}
