//! Fuzz target: a request frame, a bare ttrpc Request, and each Agent request message.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rvm_protocol::fuzzing::request_decode(data));
