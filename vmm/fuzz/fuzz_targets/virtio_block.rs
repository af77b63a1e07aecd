//! Fuzz target: virtio-blk descriptor chains, parsed and executed against an in-memory disk.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rvm_vmm::devices::virtio::block::fuzzing::virtio_block(data)
});
