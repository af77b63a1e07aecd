//! `containerd-shim-rvm-v1`: the containerd shim v2 that runs each task in its own microVM.
//!
//! containerd starts this binary with `start` (spawn the long-lived shim and print its ttrpc
//! address), then talks to the long-lived shim over the Task API; `delete` cleans up after a
//! shim that died.

mod events;
mod guest;
mod host_files;
mod layers;
mod logging;
mod metrics;
mod pod;
mod process;
mod seccomp;
mod service;
mod shim;
mod sizing;
mod stdio;
mod vm;
mod volume_updates;

/// The runtime name containerd knows this shim by.
pub const RUNTIME_ID: &str = "io.containerd.rvm.v1";

#[tokio::main]
async fn main() {
    // Whatever the shim creates without a mode of its own is root's alone (containerd's files,
    // in the bundle and its own state, are containerd's business).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = containerd_shim::Config {
        // Logging goes through tracing (see logging.rs) to containerd's log FIFO.
        no_setup_logger: true,
        // The shim reaps its own children (rvm-vmm) through tokio; a SIGCHLD reaper of the crate
        // would steal their exit statuses.
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<shim::RvmShim>(RUNTIME_ID, Some(config)).await;
    // Exit now rather than when the runtime is dropped: dropping it waits for blocking threads,
    // and a stdin FIFO whose writer never came keeps one blocked in open(2) forever.
    std::process::exit(0);
}
