//! Fuzz target: virtio-net transmit-chain parsing and receive-buffer filling over a split
//! queue built from the input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rvm_vmm::devices::virtio::net::fuzzing::virtio_net(data)
});
