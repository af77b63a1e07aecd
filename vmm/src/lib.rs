//! rvm's virtual machine monitor: boots a Linux guest on KVM with virtio-mmio devices.
//!
//! [`config`] is the command line as one typed value (the runtime renders it, the binary
//! parses it) and validates what to boot; [`machine::Machine`] builds the VM (memory in
//! [`vstate::memory`], irqchip and PIT in [`vstate::vm`], legacy devices in [`devices`]),
//! loads the kernel ([`loader`], boot tables in [`arch::x86_64`]) or raw code, and runs the
//! vCPU threads ([`vstate::vcpu`]) under the [`event_loop`] until the guest stops, with the
//! process confined by its [`seccomp`] filter from then on. The host fills and empties the
//! VM's disk slots while it runs through the [`api`] socket. What a guest can make it write on
//! the host (console, diagnostics) is bounded by [`logging`].

pub mod api;
pub mod arch;
pub mod config;
pub mod device_manager;
pub mod devices;
pub mod error;
pub mod event_loop;
pub mod jail;
pub mod loader;
pub mod logging;
pub mod machine;
pub mod seccomp;
pub mod uds;
pub mod vstate;

pub use error::Error;
pub use machine::{ExitReason, Machine, RunOutcome, StopSources};
