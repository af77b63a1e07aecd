//! tracing output: the guest's /dev/console when PID 1, stderr otherwise.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RVM_AGENT_LOG` (an env filter) sets the level; info by
/// default.
pub fn init_logging(to_console: bool) {
    let filter =
        EnvFilter::try_from_env("RVM_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let console = if to_console {
        OpenOptions::new().write(true).open("/dev/console").ok()
    } else {
        None
    };
    match console {
        Some(console) => builder.with_writer(Mutex::new(console)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}
