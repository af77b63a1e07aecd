//! `rvm restart [-t SECONDS] CONTAINER...`: stops each container as `rvm stop` does (its stop
//! signal, SIGKILL after the grace period) and boots it again as `rvm start` does, its scratch
//! disk kept; a `--rm` container is kept across the restart, as Docker keeps it.

use anyhow::Result;
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;

use super::common::{self, report, EXIT_FAILED};
use super::container;
use super::start;
use super::stop::{self, StopOptions};

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    options: StopOptions,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn main(layout: &Layout, args: RestartArgs) -> i32 {
    let runtime = match common::runtime() {
        Ok(runtime) => runtime,
        Err(err) => return report(&err, EXIT_FAILED),
    };
    let mut code = 0;
    for name in &args.containers {
        let result = mark_restarting(layout, name)
            .and_then(|()| runtime.block_on(stop::stop(layout, name, &args.options)))
            .and_then(|()| start::start(layout, name));
        match result {
            Ok(()) => println!("{name}"),
            Err(err) => code = report(&err, EXIT_FAILED),
        }
    }
    code
}

/// Tells the monitor that this stop is a restart, so a `--rm` container is kept.
fn mark_restarting(layout: &Layout, name: &str) -> Result<()> {
    let containers = container::open(layout)?;
    let id = containers.find(name)?;
    containers.set_intent(&id, |intent| intent.restart = true)?;
    Ok(())
}
