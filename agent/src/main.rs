//! `rvm-agent`: the guest's PID 1 and in-guest container engine.
//!
//! As the guest's /init (no arguments needed): mounts the kernel filesystems, enables cgroup
//! controllers, brings up `lo`, reaps children, and serves the agent on vsock port 1024.
//! For native tests: `rvm-agent --no-init --listen unix:///path/agent.sock` serves on a Unix
//! socket without touching the machine (Shutdown then exits the process).
//! Internally, `rvm-agent __rvm-helper init|exec CONFIG` is the engine's helper process.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rvm_agent::engine::handoff::HELPER_ARG;
use rvm_agent::engine::{Engine, EngineConfig};
use rvm_agent::init::{self, logging, power::PowerMode};
use rvm_agent::reaper::{ReapMode, Reaper};
use rvm_protocol::ports::AGENT_LISTEN_ADDRESS;

#[derive(Debug)]
struct Options {
    listen: String,
    no_init: bool,
    run_dir: Option<PathBuf>,
    cgroup_root: Option<PathBuf>,
}

/// Parses our few flags. Unknown arguments are ignored with a warning: as /init we also receive
/// whatever the kernel command line passes on, and PID 1 must not die over it.
fn parse_options(args: &[String]) -> (Options, Vec<String>) {
    let mut options = Options {
        listen: AGENT_LISTEN_ADDRESS.to_owned(),
        no_init: false,
        run_dir: None,
        cgroup_root: None,
    };
    let mut ignored = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--no-init" => options.no_init = true,
            "--listen" => {
                if let Some(value) = iter.next() {
                    options.listen = value.clone();
                }
            }
            "--run-dir" => options.run_dir = iter.next().map(PathBuf::from),
            "--cgroup-root" => options.cgroup_root = iter.next().map(PathBuf::from),
            other => ignored.push(other.to_owned()),
        }
    }
    (options, ignored)
}

fn run(options: Options) -> anyhow::Result<()> {
    let pid1 = std::process::id() == 1;
    if !options.no_init {
        init::init_guest().context("prepare the guest")?;
        init::ensure_standard_fds();
    }
    if !options.no_init {
        log_block_devices();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async move {
        let mode = if pid1 {
            ReapMode::All
        } else {
            ReapMode::Registered
        };
        let reaper = Reaper::start(mode).context("install the SIGCHLD reaper")?;
        let mut config = EngineConfig::guest();
        if let Some(dir) = options.run_dir {
            config.run_dir = dir;
        }
        if let Some(dir) = options.cgroup_root {
            config.cgroup_root = dir;
        }
        let engine = Arc::new(Engine::new(config, reaper).context("prepare the container engine")?);
        let power = if options.no_init {
            PowerMode::ExitProcess
        } else {
            PowerMode::RebootVm
        };
        rvm_agent::server::serve(&options.listen, engine, power)
            .await
            .context("serve the agent")?;
        Ok(())
    })
}

/// Logs the block devices the guest sees with their serials (what CreateContainer refers to).
fn log_block_devices() {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return;
    };
    let mut disks: Vec<String> = entries
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let serial = std::fs::read_to_string(e.path().join("serial")).unwrap_or_default();
            format!("{name}={}", serial.trim())
        })
        .collect();
    disks.sort();
    tracing::info!(?disks, "block devices");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(HELPER_ARG) {
        rvm_agent::helper::main(&args[1..]);
    }
    let (options, ignored) = parse_options(&args);
    logging::init_logging(!options.no_init);
    if !options.no_init && init::switch_root::needed() {
        // The kernel has just started /init: bench/boot times the guest kernel's boot to here.
        tracing::info!("rvm-agent started as /init; leaving the initramfs");
        // Returns only on failure; containers then cannot pivot_root, but the agent still serves.
        let error = init::switch_root::switch_root();
        tracing::error!(%error, "staying on the initramfs");
    }
    if !ignored.is_empty() {
        tracing::warn!(?ignored, "ignoring unknown arguments");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        "rvm-agent starting"
    );
    if let Err(error) = run(options) {
        tracing::error!("{error:#}");
        if std::process::id() == 1 {
            // PID 1 must not exit (the kernel would panic); end the VM instead.
            init::power::power_off(PowerMode::RebootVm);
        }
        std::process::exit(1);
    }
}
