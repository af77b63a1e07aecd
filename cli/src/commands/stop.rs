//! `rvm stop [-t SECONDS] CONTAINER...`: the stop signal (SIGTERM unless the image says
//! otherwise), SIGKILL after the grace period, and the VMM killed if the agent does not answer.

use std::time::Duration;

use anyhow::Result;
use clap::Args;
use rustix::process::Signal;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::{Containers, Status};

use super::common::{self, report, EXIT_FAILED};
use super::container::{self, MONITOR_EXIT_TIMEOUT};

/// Docker's default grace period.
pub const DEFAULT_GRACE_SECONDS: u64 = 10;
const SIGKILL: u32 = 9;

/// How to stop a container: shared with `rvm restart`.
#[derive(Debug, Args)]
pub struct StopOptions {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", default_value_t = DEFAULT_GRACE_SECONDS)]
    pub time: u64,
    /// Signal to send to the container
    #[arg(short, long)]
    pub signal: Option<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    options: StopOptions,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn main(layout: &Layout, args: StopArgs) -> i32 {
    let runtime = match common::runtime() {
        Ok(runtime) => runtime,
        Err(err) => return report(&err, EXIT_FAILED),
    };
    let mut code = 0;
    for name in &args.containers {
        match runtime.block_on(stop(layout, name, &args.options)) {
            Ok(()) => println!("{name}"),
            Err(err) => code = report(&err, EXIT_FAILED),
        }
    }
    code
}

/// Stops container `name`: the options' signal (else the image's stop signal, else SIGTERM),
/// SIGKILL after their grace period; returns once its monitor is gone. Shared with `rvm restart`.
pub async fn stop(layout: &Layout, name: &str, options: &StopOptions) -> Result<()> {
    let containers = container::open(layout)?;
    let found = container::find(&containers, name)?;
    let id = found.config.id.clone();
    if found.state.status() == Status::Running {
        let signal = match options
            .signal
            .as_deref()
            .or(found.config.stop_signal.as_deref())
        {
            Some(text) => container::parse_signal(text)?,
            None => 15,
        };
        stop_running(&containers, &id, signal, Duration::from_secs(options.time)).await?;
    }
    if !container::wait_monitor_gone(&containers, &id, MONITOR_EXIT_TIMEOUT)? {
        force_end(&containers, &id)?;
    }
    Ok(())
}

/// Signal, grace period, SIGKILL; the VMM is killed when the agent cannot be reached or the
/// container still runs after SIGKILL.
async fn stop_running(
    containers: &Containers,
    id: &str,
    signal: u32,
    grace: Duration,
) -> Result<()> {
    match container::connect(containers, id).await {
        Ok(session) => {
            // A frozen container cannot act on its stop signal: thaw it first, as Docker does.
            if containers.load(id)?.state.is_paused() {
                match session.pause(id, false).await {
                    Ok(()) => {
                        containers.set_intent(id, |intent| intent.paused = false)?;
                    }
                    Err(err) => tracing::warn!(%err, "cannot unpause the container to stop it"),
                }
            }
            if let Err(err) = session.signal(id, "", signal).await {
                tracing::warn!(%err, "stop signal not delivered");
            }
            if container::wait_stopped(containers, id, grace)? {
                return Ok(());
            }
            if let Err(err) = session.signal(id, "", SIGKILL).await {
                tracing::warn!(%err, "SIGKILL not delivered");
            }
            if container::wait_stopped(containers, id, Duration::from_secs(10))? {
                return Ok(());
            }
        }
        Err(err) => tracing::warn!("{err:#}; killing the VM instead"),
    }
    kill_vmm(containers, id)
}

/// Kills the container's VMM: the whole VM is the container, so this stops it for sure.
pub fn kill_vmm(containers: &Containers, id: &str) -> Result<()> {
    let state = containers.load(id)?.state;
    if let Some(vmm) = state.vmm {
        vmm.signal(Signal::KILL);
    }
    Ok(())
}

/// Kills whatever is left of the container's processes (monitor and VMM).
pub fn force_end(containers: &Containers, id: &str) -> Result<()> {
    let state = containers.load(id)?.state;
    for process in [state.vmm, state.monitor].into_iter().flatten() {
        process.signal(Signal::KILL);
    }
    // Loading applies the liveness rule, recording the end of what was killed.
    containers.load(id)?;
    Ok(())
}
