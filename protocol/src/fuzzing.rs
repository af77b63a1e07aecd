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
    MESSAGE_TYPE_REQUEST,
};

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

/// Target `request_decode`: the first frame of the bytes, read by ttrpc's `GenMessage::read_from`
/// as the agent's server reads it, and if it is a request, its payload as a ttrpc `Request`; the
/// bytes as a bare ttrpc `Request`; and as the payload of each RPC of the `Agent` service.
pub fn request_decode(data: &[u8]) {
    let mut rest = data;
    if let Ok(message) = ready(GenMessage::read_from(&mut rest)) {
        assert!(message.header.length as usize <= MESSAGE_LENGTH_MAX);
        if message.header.type_ == MESSAGE_TYPE_REQUEST {
            if let Ok(request) = Request::parse_from_bytes(&message.payload) {
                check_frame_round_trip(message.header.stream_id, &request);
                let _ = decode_agent_request(&request);
            }
        }
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

/// `request` as one request frame of `stream_id`, made by ttrpc's encoder as its client makes it.
pub fn encode_request_frame(stream_id: u32, request: &Request) -> ttrpc::Result<Vec<u8>> {
    let message = ttrpc::proto::Message::new_request(stream_id, request.clone())?;
    let mut frame = Vec::with_capacity(MESSAGE_HEADER_LENGTH + message.header.length as usize);
    ready(message.write_to(&mut frame))?;
    Ok(frame)
}

fn check_frame_round_trip(stream_id: u32, request: &Request) {
    // A request re-encodes to at most the bytes it came from, so it still fits the limit.
    let bytes = match encode_request_frame(stream_id, request) {
        Ok(bytes) => bytes,
        Err(error) => panic!("decoded request does not re-encode: {error}"),
    };
    let mut rest = &bytes[..];
    match ready(GenMessage::read_from(&mut rest)) {
        Ok(message) => {
            assert!(
                rest.is_empty(),
                "{} bytes follow the re-encoded frame",
                rest.len()
            );
            assert_eq!(message.header.stream_id, stream_id);
            assert_eq!(message.header.type_, MESSAGE_TYPE_REQUEST);
            match Request::parse_from_bytes(&message.payload) {
                Ok(again) => assert_eq!(&again, request),
                Err(error) => panic!("re-encoded request does not decode: {error}"),
            }
        }
        Err(error) => panic!("ttrpc cannot read a request frame it wrote: {error:?}"),
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
