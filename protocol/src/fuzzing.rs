//! The fuzz targets' bodies, shared by `fuzz/` (cargo-fuzz) and the seed replay test.
//!
//! Each function takes arbitrary bytes, must never panic on its own, and asserts the invariants
//! the decoders promise: a frame ttrpc reads is within its limit and re-encodes to the same
//! bytes, and a decoded message re-encodes to bytes that decode to the same message.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use protobuf::Message;
use ttrpc::proto::{
    GenMessage, GenMessageError, Request, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX,
};

use crate::frame::{self, MAX_DATA_LEN};
use crate::messages::{decode_agent_request, AgentRequest};

/// Target `frame_header`: ttrpc's own frame reader, `GenMessage::read_from`, which the agent's
/// server runs on every connection, over the bytes as a stream of frames. A frame read is within
/// ttrpc's limit and re-encodes to the bytes it came from; an oversize one is refused with its
/// header; a read fails only when the bytes ran out.
pub fn frame_header(data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        let start = data.len() - rest.len();
        let declared = declared_length(rest);
        match ready(GenMessage::read_from(&mut rest)) {
            Ok(message) => {
                let length = message.header.length as usize;
                assert!(
                    length <= MESSAGE_LENGTH_MAX,
                    "accepted {:?}",
                    message.header
                );
                assert_eq!(message.payload.len(), length);
                let consumed = data.len() - rest.len() - start;
                assert_eq!(consumed, MESSAGE_HEADER_LENGTH + length);
                let mut again = Vec::new();
                if let Err(error) = ready(message.write_to(&mut again)) {
                    panic!("ttrpc cannot re-encode a frame it read: {error}");
                }
                assert_eq!(again[..], data[start..start + consumed]);
            }
            Err(GenMessageError::ReturnError(header, _)) => {
                assert!(
                    header.length as usize > MESSAGE_LENGTH_MAX,
                    "refused {header:?}"
                );
            }
            Err(GenMessageError::InternalError(_)) => {
                let available = data.len() - start;
                assert!(
                    declared.is_none_or(|length| available < MESSAGE_HEADER_LENGTH + length),
                    "a read failed with {available} bytes left for a frame of {declared:?}"
                );
                return;
            }
        }
    }
}

/// The payload length a frame header at the start of `bytes` declares, if it is all there.
fn declared_length(bytes: &[u8]) -> Option<usize> {
    let head: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    (bytes.len() >= MESSAGE_HEADER_LENGTH).then(|| u32::from_be_bytes(head) as usize)
}

/// The output of `future`, which reads from or writes to memory: such I/O never waits, so one
/// poll completes it (ttrpc offers its frame codec only as async functions).
fn ready<F: Future>(future: F) -> F::Output {
    let mut context = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("I/O on memory waited"),
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
