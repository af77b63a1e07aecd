//! Containers as microVMs on the host: the container store, sandbox preparation (scratch disk,
//! volumes, sockets), the `rvm-vmm` command line, the OCI spec for the agent, the agent session,
//! the container log, and the per-container monitor that owns the VM.

pub mod agent;
pub mod artifacts;
pub mod attach;
pub mod config;
pub mod devices;
pub mod disks;
pub mod env;
pub mod files;
pub mod id;
pub mod layout;
pub mod log;
pub mod monitor;
pub mod prepare;
pub mod process;
pub mod security;
pub mod spec;
pub mod state;
pub mod time;
pub mod units;
pub mod vmm;
pub mod volume_check;
pub mod volumes;
pub mod wait;

// The tests' shared answer to a missing prerequisite (a tool such as mkfs.ext4): fail under CI,
// skip elsewhere. Declared once here for the modules' tests: a second copy is clippy's
// `duplicate_mod`.
#[cfg(test)]
#[path = "../../../tests/fixtures/prerequisite.rs"]
pub(crate) mod prerequisite;
