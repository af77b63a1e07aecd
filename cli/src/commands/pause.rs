//! `rvm pause CONTAINER...` and `rvm unpause CONTAINER...`: freeze and thaw every process of a
//! running container (the agent's cgroup v2 freezer in the guest); the VM itself keeps running.
//! `ps` shows a frozen container as `Up ... (Paused)`; `exec` is refused until it is thawed;
//! `stop` thaws it before its stop signal.

use anyhow::{bail, Result};
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::Status;

use super::common::{self, report, EXIT_FAILED};
use super::container;

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `rvm pause` (`freeze`) or `rvm unpause`.
pub fn main(layout: &Layout, args: PauseArgs, freeze: bool) -> i32 {
    let runtime = match common::runtime() {
        Ok(runtime) => runtime,
        Err(err) => return report(&err, EXIT_FAILED),
    };
    let mut code = 0;
    for name in &args.containers {
        match runtime.block_on(set_frozen(layout, name, freeze)) {
            Ok(()) => println!("{name}"),
            Err(err) => code = report(&err.context("Error response from daemon"), EXIT_FAILED),
        }
    }
    code
}

async fn set_frozen(layout: &Layout, name: &str, freeze: bool) -> Result<()> {
    let containers = container::open(layout)?;
    let found = container::find(&containers, name)?;
    let id = &found.config.id;
    if found.state.status() != Status::Running {
        bail!("container {id} is not running");
    }
    match (freeze, found.state.is_paused()) {
        (true, true) => bail!("container {id} is already paused"),
        (false, false) => bail!("container {id} is not paused"),
        _ => {}
    }
    let session = container::connect(&containers, id).await?;
    session.pause(id, freeze).await?;
    containers.set_intent(id, |intent| intent.paused = freeze)?;
    Ok(())
}
