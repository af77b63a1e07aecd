//! `rvm kill [-s SIGNAL] CONTAINER...`: sends a signal (default KILL) to the container's main
//! process through its agent.

use anyhow::{bail, Result};
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::Status;

use super::common::{self, report, EXIT_FAILED};
use super::container;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn main(layout: &Layout, args: KillArgs) -> i32 {
    let signal = match container::parse_signal(&args.signal) {
        Ok(signal) => signal,
        Err(err) => return report(&err, EXIT_FAILED),
    };
    let runtime = match common::runtime() {
        Ok(runtime) => runtime,
        Err(err) => return report(&err, EXIT_FAILED),
    };
    let mut code = 0;
    for name in &args.containers {
        match runtime.block_on(kill(layout, name, signal)) {
            Ok(()) => println!("{name}"),
            Err(err) => code = report(&err, EXIT_FAILED),
        }
    }
    code
}

async fn kill(layout: &Layout, name: &str, signal: u32) -> Result<()> {
    let containers = container::open(layout)?;
    let found = container::find(&containers, name)?;
    if found.state.status() != Status::Running {
        bail!(
            "Cannot kill container: {name}: container {} is not running",
            found.config.id
        );
    }
    let session = container::connect(&containers, &found.config.id).await?;
    session.signal(&found.config.id, "", signal).await?;
    Ok(())
}
