//! `rvm wait CONTAINER...`: blocks until each container stops and prints its exit code, one line
//! per container, in the order given (Docker's behaviour; a created container is waited for
//! until it has run and ended).

use anyhow::{bail, Result};
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::Lifecycle;

use super::common::{report, EXIT_FAILED};
use super::container;

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

/// The exit code of container `name` once it has stopped and its monitor is done with it.
fn wait(layout: &Layout, name: &str) -> Result<i32> {
    let containers = container::open(layout)?;
    let id = container::find(&containers, name)?.config.id;
    let waited = containers.wait_until(&id, None, |found| {
        let Some(container) = found else {
            return Some(None);
        };
        let state = &container.state;
        match &state.lifecycle {
            Lifecycle::Exited(ended) if !state.monitor_alive() => Some(Some(ended.code)),
            _ => None,
        }
    })?;
    match waited {
        Some(Some(code)) => Ok(code),
        _ => bail!("container {name} was removed before its exit code could be read (--rm?)"),
    }
}
