//! Fuzz target: the ttrpc frame header parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rvm_protocol::fuzzing::frame_header(data));
