//! `rvm-vmm`: command-line entry point of the VMM.
//!
//! Exit status: 0 when the guest resets, powers off or triple-faults (a kernel panic with
//! `panic=-1` is a reset too; it is logged as a warning); 2 for invalid input; 1 for a VMM or
//! KVM failure; 128 + N when stopped by signal N (130 for SIGINT, 143 for SIGTERM).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use rvm_vmm::config::{self, Args};
use rvm_vmm::event_loop::StopSignals;
use rvm_vmm::loader::BootFiles;
use rvm_vmm::machine::{self, ExitReason, Machine, RunOutcome, StopSources};

fn main() -> ExitCode {
    rvm_vmm::seccomp::single_malloc_arena();
    let args = Args::parse();
    rvm_vmm::logging::init(args.bounded_stderr);
    match run(&args) {
        Ok(outcome) => exit_code(&outcome),
        Err(e) => {
            eprintln!("rvm-vmm: {}", describe(&e));
            let code = e
                .downcast_ref::<rvm_vmm::Error>()
                .map_or(rvm_vmm::error::EXIT_FAILURE, rvm_vmm::Error::exit_code);
            ExitCode::from(code)
        }
    }
}

/// The error and its causes, skipping causes that an outer message already quotes.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

fn run(args: &Args) -> anyhow::Result<RunOutcome> {
    // Before any thread starts, so that every thread inherits the blocked stop signals.
    let signals = StopSignals::new().context("setting up signal handling")?;
    let host_mib = config::host_memory_mib().context("reading /proc/meminfo")?;
    let config = config::validate(args, host_mib).map_err(rvm_vmm::Error::from)?;
    let console = machine::open_console(&config.console).map_err(rvm_vmm::Error::from)?;
    let mut machine =
        Machine::new(config.memory_bytes(), config.vcpus, console).map_err(rvm_vmm::Error::from)?;
    machine.set_seccomp(config.seccomp);
    let devices = rvm_vmm::device_manager::add_devices(&mut machine, &config)
        .map_err(rvm_vmm::Error::from)?;
    let api = match &config.api {
        Some(path) => Some(rvm_vmm::api::Server::bind(path).map_err(rvm_vmm::Error::from)?),
        None => None,
    };
    let files = BootFiles {
        kernel: &config.kernel,
        format: config.kernel_format,
        initrd: config.initrd.as_deref(),
        cmdline: &devices.cmdline,
        pvh: config.pvh,
    };
    let entry = machine
        .load_boot_files(&files)
        .map_err(rvm_vmm::Error::from)?;
    // Everything from the host's filesystem is open now: the guest runs in the jail.
    if let Some(jail) = &args.jail {
        rvm_vmm::jail::enter(jail).map_err(rvm_vmm::Error::from)?;
        #[cfg(debug_assertions)]
        rvm_vmm::jail::attack::before_filter();
    }
    // Serves until dropped at the end of this function.
    let _api = match api {
        Some(bound) => Some(
            bound
                .serve(devices.disk_slots)
                .map_err(rvm_vmm::Error::from)?,
        ),
        None => None,
    };
    let outcome = machine
        .run(
            entry,
            StopSources {
                signals: Some(&signals),
                request: None,
            },
        )
        .map_err(rvm_vmm::Error::from)?;
    Ok(outcome)
}

fn exit_code(outcome: &RunOutcome) -> ExitCode {
    if outcome.kernel_panic {
        tracing::warn!(
            "the guest kernel panicked, then {:?}; exiting 0 as for a reboot",
            outcome.reason
        );
    }
    match outcome.reason {
        ExitReason::Signal(signo) => {
            ExitCode::from(u8::try_from(128 + signo).unwrap_or(rvm_vmm::error::EXIT_FAILURE))
        }
        ExitReason::SystemEvent(3) => {
            tracing::warn!("the guest reported a crash (system event 3)");
            ExitCode::SUCCESS
        }
        reason => {
            tracing::info!("guest stopped: {reason:?} after {:?}", outcome.run_time);
            ExitCode::SUCCESS
        }
    }
}
