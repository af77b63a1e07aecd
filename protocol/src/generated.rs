//! The protobuf messages and the ttrpc client and server generated from `proto/agent.proto`.

// Generated code is not ours to restyle: its service glue unwraps and its client and service
// types have no Debug. These lints are allowed here only, never in hand-written modules.
#[allow(clippy::unwrap_used, missing_debug_implementations)]
mod out {
    include!(concat!(env!("OUT_DIR"), "/mod.rs"));
}

pub use out::*;
