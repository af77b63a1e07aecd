//! `rvm start CONTAINER...`: boots a stopped container's microVM again (its scratch disk kept).

use anyhow::{bail, Result};
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::Status;

use super::common::{self, report, EXIT_FAILED};
use super::container::{self, Started};

#[derive(Debug, Args)]
pub struct StartArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn main(layout: &Layout, args: StartArgs) -> i32 {
    let mut code = 0;
    for name in &args.containers {
        match start(layout, name) {
            Ok(()) => println!("{name}"),
            Err(err) => code = report(&err, EXIT_FAILED),
        }
    }
    code
}

fn start(layout: &Layout, name: &str) -> Result<()> {
    let containers = container::open(layout)?;
    let found = container::find(&containers, name)?;
    let id = found.config.id;
    if found.state.status == Status::Running {
        return Ok(());
    }
    if found.state.monitor_alive() {
        bail!("container {name} is still being stopped; try again");
    }
    common::require_bootable_kvm()?;
    container::reset_for_start(&containers, &id)?;
    container::spawn_monitor(&containers, &id, None)?;
    match container::wait_started(&containers, &id)? {
        Started::Running | Started::Exited { .. } => Ok(()),
        Started::Failed { message, .. } => {
            bail!("Error response from the container's microVM: {message}")
        }
    }
}
