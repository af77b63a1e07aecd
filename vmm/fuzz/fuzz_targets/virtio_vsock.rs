//! Fuzz target: virtio-vsock descriptor chains parsed as TX packets and RX buffers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rvm_vmm::devices::virtio::vsock::fuzzing::virtio_vsock(data)
});
