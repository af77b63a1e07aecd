//! The fuzz targets' bodies, shared by `fuzz/` (cargo-fuzz) and the seed replay test.
//!
//! Each function takes arbitrary bytes, must never panic on its own, and asserts the invariants
//! the decoders promise: a parsed header is within limits and re-encodes to the same bytes, and a
//! decoded message re-encodes to bytes that decode to the same message.

use protobuf::Message;
use ttrpc::proto::Request;

use crate::frame::{self, FrameError, HEADER_LEN, MAX_DATA_LEN};
use crate::messages::{decode_agent_request, AgentRequest};

/// Target `frame_header`: the header parser.
pub fn frame_header(data: &[u8]) {
    match frame::parse_header(data) {
        Ok(header) => {
            assert!(
                header.length <= MAX_DATA_LEN,
                "accepted oversize {header:?}"
            );
            assert_eq!(frame::encode_header(&header)[..], data[..HEADER_LEN]);
        }
        Err(FrameError::HeaderTruncated { got }) => {
            assert!(
                got < HEADER_LEN && got == data.len(),
                "bad truncation report {got}"
            );
        }
        Err(_) => assert!(data.len() >= HEADER_LEN),
    }
}

/// Target `request_decode`: the bytes as a request frame, as a bare ttrpc `Request`, and as the
/// payload of each RPC of the `Agent` service.
pub fn request_decode(data: &[u8]) {
    if let Ok((header, request)) = frame::decode_request(data) {
        assert!(header.length <= MAX_DATA_LEN);
        check_frame_round_trip(header.stream_id, &request);
        let _ = decode_agent_request(&request);
    }
    if let Ok(request) = Request::parse_from_bytes(data) {
        let _ = decode_agent_request(&request);
    }
    for method in AgentRequest::METHODS {
        if let Ok(message) = AgentRequest::decode(method, data) {
            check_payload_round_trip(&message);
        }
    }
}

fn check_frame_round_trip(stream_id: u32, request: &Request) {
    // A request re-encodes to at most the bytes it came from, so it still fits the limit.
    match frame::encode_request(stream_id, request) {
        Ok(bytes) => match frame::decode_request(&bytes) {
            Ok((_, again)) => assert_eq!(&again, request),
            Err(error) => panic!("re-encoded request does not decode: {error}"),
        },
        Err(error) => panic!("decoded request does not re-encode: {error}"),
    }
}

fn check_payload_round_trip(message: &AgentRequest) {
    match message.encode_payload() {
        Ok(bytes) => match AgentRequest::decode(message.method(), &bytes) {
            Ok(again) => assert_eq!(&again, message),
            Err(error) => panic!("re-encoded {} does not decode: {error}", message.method()),
        },
        Err(error) => panic!("decoded {} does not re-encode: {error}", message.method()),
    }
}
