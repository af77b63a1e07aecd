//! virtio-vsock with a hybrid vsock host side: host processes reach guest ports through one
//! Unix socket (`CONNECT <port>\n` → `OK <host port>\n`). The host side never listens for the
//! guest: a guest-initiated connection is refused with a reset. Credit-based flow control on
//! every connection.
//!
//! [`packet`] parses descriptor chains, [`credit`] and [`connection`] keep per-connection
//! state, [`hybrid`] is the host handshake, [`muxer`] the host side, [`device`] the device.

pub mod connection;
pub mod credit;
pub mod device;
pub mod fuzzing;
pub mod hybrid;
pub mod muxer;
pub mod packet;
pub mod payload;

pub use device::{Vsock, VsockError};
