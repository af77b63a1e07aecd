//! `rvm wait CONTAINER...`: blocks until each container stops and prints its exit code, one line
//! per container, in the order given (Docker's behaviour; a created container is waited for
//! until it has run and ended).

use std::thread::sleep;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::{Containers, StateError, Status, UNKNOWN_EXIT};

use super::common::{report, EXIT_FAILED};
use super::container;

/// How often the state file is read while waiting.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn main(layout: &Layout, args: WaitArgs) -> i32 {
    let mut code = 0;
    for name in &args.containers {
        match wait(layout, name) {
            Ok(exit) => println!("{exit}"),
            Err(err) => code = report(&err.context("Error response from daemon"), EXIT_FAILED),
        }
    }
    code
}

/// The exit code of container `name` once it has stopped.
fn wait(layout: &Layout, name: &str) -> Result<i32> {
    let containers = container::open(layout)?;
    let id = container::find(&containers, name)?.config.id;
    loop {
        if let Some(code) = exit_code(&containers, &id, name)? {
            return Ok(code);
        }
        sleep(POLL);
    }
}

/// The exit code when the container has stopped and its monitor is done with it, else None.
fn exit_code(containers: &Containers, id: &str, name: &str) -> Result<Option<i32>> {
    let container = match containers.load(id) {
        Ok(container) => container,
        Err(StateError::NotFound(_)) => {
            bail!("container {name} was removed before its exit code could be read (--rm?)")
        }
        Err(err) => return Err(err.into()),
    };
    let state = container.state;
    if state.status != Status::Exited || state.monitor_alive() {
        return Ok(None);
    }
    // An exit whose status was never recorded must not be waited for forever.
    Ok(Some(state.exit_code.unwrap_or(UNKNOWN_EXIT)))
}
