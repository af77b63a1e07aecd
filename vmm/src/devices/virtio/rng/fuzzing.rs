//! The body of the fuzz target `virtio_rng`, shared by `vmm/fuzz` (cargo-fuzz) and the seed
//! replay test: the input is a guest's descriptor table and memory contents; the request queue
//! offers one chain from it, and the device's own queue processing fills it.
//!
//! The input's layout is [`crate::devices::virtio::fuzz_input`]'s.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{RngHandler, MAX_REQUEST_BYTES};
use crate::devices::virtio::fuzz_input::{memory, queue, USED_ADDR};
pub use crate::devices::virtio::fuzz_input::{DATA_ADDR, TABLE_BYTES};
use crate::devices::virtio::Interrupt;

/// Target `virtio_rng`.
pub fn virtio_rng(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let Some(mem) = memory(head, rest) else {
        return;
    };
    let Some(queue) = queue(&mem) else {
        return;
    };
    let Ok(eventfd) = EventFd::new(0) else {
        return;
    };
    let mut handler = RngHandler {
        mem: mem.clone(),
        queue,
        interrupt: Arc::new(Interrupt::new(eventfd)),
    };
    handler.process();
    if handler.interrupt.is_broken() {
        return;
    }
    // The one offered chain was completed, with no more bytes than the device hands out.
    let used_idx: u16 = mem
        .read_obj(GuestAddress(USED_ADDR + 2))
        .unwrap_or_default();
    assert_eq!(used_idx, 1, "the chain was not completed");
    let len: u32 = mem
        .read_obj(GuestAddress(USED_ADDR + 8))
        .unwrap_or_default();
    assert!(len as usize <= MAX_REQUEST_BYTES, "answered {len} bytes");
}
