//! What the container commands share: their exit codes, error reports, logging set-up and the
//! async runtime for their I/O. Docker's exit codes for a container command that never ran
//! (125, 126, 127) are `rvm_protocol::exit`'s.

/// Docker's exit code for a failed management command (`ps`, `rm`, `stop`, ...).
pub const EXIT_FAILED: i32 = 1;

/// Prints an error the way Docker's CLI does (`rvm: ...`) and returns `code`.
pub fn report(err: &anyhow::Error, code: i32) -> i32 {
    eprintln!("rvm: {}", super::message(err));
    code
}

/// Logs go to stderr, filtered by `RVM_LOG` (default: warnings).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A single-threaded tokio runtime for a command's I/O.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The monitor logs at info level to its stderr (`monitor.log`), unless `RVM_LOG` says otherwise.
pub fn init_tracing_for_monitor() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Refuses to start a microVM on a host whose `/dev/kvm` cannot boot rvm's guest kernel,
/// saying why in one line, instead of letting the VM die inside KVM.
pub fn require_bootable_kvm() -> anyhow::Result<()> {
    match rvm_runtime::host::KvmKind::detect().limitation() {
        None => Ok(()),
        Some(why) => anyhow::bail!("{why}"),
    }
}
