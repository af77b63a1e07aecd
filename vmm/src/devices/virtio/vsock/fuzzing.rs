//! The body of the fuzz target `virtio_vsock`, shared by `vmm/fuzz` (cargo-fuzz) and the seed
//! replay test: the input is a guest's descriptor table and memory contents, whose one chain is
//! parsed as a TX packet and as an RX buffer, and its bytes also as a host CONNECT line.
//!
//! The input's layout is [`crate::devices::virtio::fuzz_input`]'s.

use super::hybrid::{ConnectLine, MAX_LINE};
use super::packet::{parse_tx, rx_writer, Header, HEADER_LEN, MAX_PAYLOAD};
use crate::devices::virtio::fuzz_input::{memory, queue};
pub use crate::devices::virtio::fuzz_input::{DATA_ADDR, TABLE_BYTES};
use virtio_queue::QueueT;

/// Target `virtio_vsock`.
pub fn virtio_vsock(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let Some(mem) = memory(head, rest) else {
        return;
    };
    let Some(mut tx) = queue(&mem) else {
        return;
    };
    if let Some(chain) = tx.pop_descriptor_chain(&mem) {
        if let Ok(mut packet) = parse_tx(&mem, chain) {
            let header = packet.header;
            assert!(header.len <= MAX_PAYLOAD, "accepted oversize {header:?}");
            assert_eq!(packet.payload.len(), header.len as usize);
            let mut copied = std::collections::VecDeque::new();
            packet.payload.copy_rest(&mut copied);
            assert_eq!(copied.len(), header.len as usize, "payload bytes lost");
            assert!(packet.payload.is_empty());
            assert_eq!(Header::from_bytes(&header.to_bytes()), header);
            let _ = header.check_from_guest(3);
        }
    }
    let Some(mut rx) = queue(&mem) else {
        return;
    };
    if let Some(chain) = rx.pop_descriptor_chain(&mem) {
        if let Ok(writer) = rx_writer(&mem, chain) {
            assert!(writer.available_bytes() >= HEADER_LEN);
        }
    }
    let mut line = ConnectLine::default();
    for (count, &byte) in rest.iter().enumerate() {
        match line.push(byte) {
            Ok(None) => assert!(count + 1 < MAX_LINE),
            Ok(Some(_)) | Err(_) => break,
        }
    }
}
