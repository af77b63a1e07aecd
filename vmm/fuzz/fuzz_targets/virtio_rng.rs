//! Fuzz target: virtio-rng descriptor chains filled by the device's queue processing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rvm_vmm::devices::virtio::rng::fuzzing::virtio_rng(data)
});
