//! The ttrpc frame: its 10-byte header, the 4 MiB data limit, and decoding one request frame.
//!
//! ttrpc does the framing on a live connection; these pure functions state the same rules so that
//! they can be tested and fuzzed without a socket, and checked before anything is allocated.

use protobuf::Message;
use thiserror::Error;
use ttrpc::proto::Request;

/// Bytes in a frame header: length u32 BE, stream id u32 BE, type u8, flags u8.
pub const HEADER_LEN: usize = 10;
/// The largest frame data ttrpc accepts, in bytes.
pub const MAX_DATA_LEN: u32 = 4 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Request,
    Response,
    Data,
}

impl FrameType {
    fn from_byte(byte: u8) -> Result<Self, FrameError> {
        match byte {
            1 => Ok(Self::Request),
            2 => Ok(Self::Response),
            3 => Ok(Self::Data),
            other => Err(FrameError::UnknownType(other)),
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Self::Request => 1,
            Self::Response => 2,
            Self::Data => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of data following the header; at most [`MAX_DATA_LEN`].
    pub length: u32,
    pub stream_id: u32,
    pub frame_type: FrameType,
    pub flags: u8,
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame header truncated: {got} of {HEADER_LEN} bytes")]
    HeaderTruncated { got: usize },
    #[error("frame data length {length} exceeds the limit of {MAX_DATA_LEN} bytes")]
    Oversize { length: u64 },
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("frame of stream {stream_id} is a {found:?}, expected a request")]
    NotRequest { stream_id: u32, found: FrameType },
    #[error("frame data of stream {stream_id} truncated: the header says {expected} bytes, {got} follow")]
    DataTruncated {
        stream_id: u32,
        expected: u32,
        got: usize,
    },
    #[error("{extra} bytes follow the frame of stream {stream_id}")]
    TrailingBytes { stream_id: u32, extra: usize },
    #[error("frame of stream {stream_id} does not hold a ttrpc request: {source}")]
    BadRequest {
        stream_id: u32,
        source: protobuf::Error,
    },
}

/// Parses the header at the start of `bytes`, refusing oversize lengths and unknown types.
pub fn parse_header(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|head| head.try_into().ok())
        .ok_or(FrameError::HeaderTruncated { got: bytes.len() })?;
    let [l0, l1, l2, l3, s0, s1, s2, s3, frame_type, flags] = *header;
    let length = u32::from_be_bytes([l0, l1, l2, l3]);
    if length > MAX_DATA_LEN {
        return Err(FrameError::Oversize {
            length: u64::from(length),
        });
    }
    Ok(FrameHeader {
        length,
        stream_id: u32::from_be_bytes([s0, s1, s2, s3]),
        frame_type: FrameType::from_byte(frame_type)?,
        flags,
    })
}

/// The wire form of a header.
pub fn encode_header(header: &FrameHeader) -> [u8; HEADER_LEN] {
    let mut bytes = [0; HEADER_LEN];
    bytes[..4].copy_from_slice(&header.length.to_be_bytes());
    bytes[4..8].copy_from_slice(&header.stream_id.to_be_bytes());
    bytes[8] = header.frame_type.to_byte();
    bytes[9] = header.flags;
    bytes
}

/// Decodes `bytes` holding exactly one request frame: header, then a protobuf ttrpc `Request`.
pub fn decode_request(bytes: &[u8]) -> Result<(FrameHeader, Request), FrameError> {
    let header = parse_header(bytes)?;
    let stream_id = header.stream_id;
    if header.frame_type != FrameType::Request {
        return Err(FrameError::NotRequest {
            stream_id,
            found: header.frame_type,
        });
    }
    let data = split_data(&header, &bytes[HEADER_LEN..])?;
    let request = Request::parse_from_bytes(data)
        .map_err(|source| FrameError::BadRequest { stream_id, source })?;
    Ok((header, request))
}

/// Encodes `request` as one request frame of `stream_id`.
pub fn encode_request(stream_id: u32, request: &Request) -> Result<Vec<u8>, FrameError> {
    let data = request
        .write_to_bytes()
        .map_err(|source| FrameError::BadRequest { stream_id, source })?;
    let length = u32::try_from(data.len())
        .ok()
        .filter(|length| *length <= MAX_DATA_LEN)
        .ok_or(FrameError::Oversize {
            length: data.len() as u64,
        })?;
    let header = FrameHeader {
        length,
        stream_id,
        frame_type: FrameType::Request,
        flags: 0,
    };
    let mut frame = Vec::with_capacity(HEADER_LEN + data.len());
    frame.extend_from_slice(&encode_header(&header));
    frame.extend_from_slice(&data);
    Ok(frame)
}

fn split_data<'a>(header: &FrameHeader, rest: &'a [u8]) -> Result<&'a [u8], FrameError> {
    let expected = header.length;
    let stream_id = header.stream_id;
    // `length` was checked against MAX_DATA_LEN, so it fits in usize.
    let length = expected as usize;
    if rest.len() < length {
        return Err(FrameError::DataTruncated {
            stream_id,
            expected,
            got: rest.len(),
        });
    }
    if rest.len() > length {
        return Err(FrameError::TrailingBytes {
            stream_id,
            extra: rest.len() - length,
        });
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(length: u32, frame_type: u8) -> Vec<u8> {
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.extend_from_slice(&7u32.to_be_bytes());
        bytes.extend_from_slice(&[frame_type, 0]);
        bytes
    }

    fn ping_request() -> Request {
        Request {
            service: "rvm.agent.v1.Agent".into(),
            method: "Ping".into(),
            ..Default::default()
        }
    }

    #[test]
    fn parses_fields_big_endian() {
        let bytes = [0, 0, 1, 2, 0, 0, 0, 9, 2, 5];
        let header = parse_header(&bytes).unwrap();
        assert_eq!(
            header,
            FrameHeader {
                length: 258,
                stream_id: 9,
                frame_type: FrameType::Response,
                flags: 5,
            }
        );
        assert_eq!(encode_header(&header), bytes);
    }

    #[test]
    fn empty_input_is_truncated() {
        assert!(matches!(
            parse_header(&[]),
            Err(FrameError::HeaderTruncated { got: 0 })
        ));
    }

    #[test]
    fn short_header_is_truncated() {
        let bytes = header(1, 1);
        assert!(matches!(
            parse_header(&bytes[..9]),
            Err(FrameError::HeaderTruncated { got: 9 })
        ));
    }

    #[test]
    fn zero_length_header_is_valid() {
        assert_eq!(parse_header(&header(0, 3)).unwrap().length, 0);
    }

    #[test]
    fn limit_length_is_accepted() {
        assert_eq!(
            parse_header(&header(MAX_DATA_LEN, 1)).unwrap().length,
            MAX_DATA_LEN
        );
    }

    #[test]
    fn oversize_length_is_refused() {
        for length in [MAX_DATA_LEN + 1, u32::MAX] {
            let error = parse_header(&header(length, 1)).unwrap_err();
            assert!(matches!(error, FrameError::Oversize { .. }), "{error}");
            assert!(error.to_string().contains(&length.to_string()));
        }
    }

    #[test]
    fn unknown_type_is_refused() {
        for frame_type in [0, 4, 0xff] {
            assert!(matches!(
                parse_header(&header(0, frame_type)),
                Err(FrameError::UnknownType(t)) if t == frame_type
            ));
        }
    }

    #[test]
    fn request_round_trips() {
        let frame = encode_request(3, &ping_request()).unwrap();
        let (header, request) = decode_request(&frame).unwrap();
        assert_eq!(header.stream_id, 3);
        assert_eq!(header.frame_type, FrameType::Request);
        assert_eq!(request, ping_request());
    }

    #[test]
    fn oversize_request_is_refused_before_reading_data() {
        // Only the header is present: the length alone must be enough to refuse the frame.
        let error = decode_request(&header(u32::MAX, 1)).unwrap_err();
        assert!(matches!(error, FrameError::Oversize { .. }), "{error}");
    }

    #[test]
    fn response_frame_is_not_a_request() {
        let mut frame = encode_request(3, &ping_request()).unwrap();
        frame[8] = 2;
        assert!(matches!(
            decode_request(&frame),
            Err(FrameError::NotRequest {
                found: FrameType::Response,
                ..
            })
        ));
    }

    #[test]
    fn truncated_data_is_refused() {
        let frame = encode_request(3, &ping_request()).unwrap();
        let error = decode_request(&frame[..frame.len() - 1]).unwrap_err();
        assert!(matches!(error, FrameError::DataTruncated { .. }), "{error}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = encode_request(3, &ping_request()).unwrap();
        frame.push(0);
        let error = decode_request(&frame).unwrap_err();
        assert!(
            matches!(error, FrameError::TrailingBytes { extra: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn garbage_data_is_a_bad_request() {
        let mut frame = header(2, 1);
        frame.extend_from_slice(&[0xff, 0xff]);
        let error = decode_request(&frame).unwrap_err();
        assert!(matches!(error, FrameError::BadRequest { .. }), "{error}");
    }
}
