//! Logging of the long-lived shim: tracing to containerd's `log` FIFO in the bundle directory
//! (containerd copies it into its own log), or to stderr when there is none.

use std::fs::OpenOptions;
use std::path::Path;

use tracing_subscriber::EnvFilter;

/// Sets up tracing; `RVM_LOG` (an env-filter) overrides the level, `debug` raises it.
pub fn init(bundle: &Path, debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_env("RVM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    // containerd holds the read end of the FIFO open while the shim runs.
    match OpenOptions::new().write(true).open(bundle.join("log")) {
        Ok(fifo) => builder.with_writer(std::sync::Mutex::new(fifo)).init(),
        Err(_) => builder.with_writer(std::io::stderr).init(),
    }
}
