//! The VMM's host API (`--api PATH`): a Unix socket through which the host fills and empties
//! the VM's disk slots (`--disk-slots N`) while the guest runs, the way containers are added
//! to a running pod.
//!
//! One request per line, one reply line per request:
//!
//! - `ATTACH <slot> <serial>`, with the image's file descriptor passed as SCM_RIGHTS on the
//!   same message (the VMM opens no files once running), answers `OK <slot> <sectors>`: the
//!   slot now serves the image read-only under that serial, and the guest's driver is told
//!   its capacity changed;
//! - `DETACH <slot>` answers `OK <slot>`: the slot is empty again (capacity 0, no serial);
//! - anything wrong answers `ERR <reason>`, naming what was wrong.
//!
//! [`protocol`] parses lines, `lines` pairs them with their descriptors, `server` runs the
//! socket on its own thread ([`Server`]) and [`client`] is the host side ([`Client`]).

pub mod client;
mod lines;
pub mod protocol;
mod server;

pub use client::{Client, ClientError};
pub use server::{BoundApi, Refusal, Server, ServerError, MAX_CLIENTS};
