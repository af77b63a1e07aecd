//! `rvm rm [-f] CONTAINER...`: removes stopped containers (running ones with `-f`, killing their
//! VM first), leaving no process, socket or file behind.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::{StateError, Status};

use super::common::{report, EXIT_FAILED};
use super::container::{self, MONITOR_EXIT_TIMEOUT};
use super::stop::{force_end, kill_vmm};

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn main(layout: &Layout, args: RmArgs) -> i32 {
    let mut code = 0;
    for name in &args.containers {
        match remove(layout, name, args.force) {
            Ok(()) => println!("{name}"),
            Err(err) => code = report(&err.context("Error response from daemon"), EXIT_FAILED),
        }
    }
    code
}

fn remove(layout: &Layout, name: &str, force: bool) -> Result<()> {
    let containers = container::open(layout)?;
    let found = container::find(&containers, name)?;
    let id = found.config.id;
    let active = found.state.status() == Status::Running
        || (found.state.status() == Status::Created && found.state.monitor_alive());
    if active {
        if !force {
            bail!(
                "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                found.config.name
            );
        }
        kill_vmm(&containers, &id)?;
    }
    if !container::wait_monitor_gone(&containers, &id, MONITOR_EXIT_TIMEOUT)? {
        force_end(&containers, &id)?;
        container::wait_monitor_gone(&containers, &id, Duration::from_secs(5))?;
    }
    match containers.remove(&id) {
        Ok(()) | Err(StateError::NotFound(_)) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
