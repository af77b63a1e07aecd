//! `rvm start [-a] [-i] CONTAINER...`: boots a created or stopped container's microVM (its
//! scratch disk kept); with `-a`, attached to this terminal as `rvm run` is, exiting with the
//! container's code.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use rvm_protocol::exit;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::{Containers, Status};

use super::common::{self, report, EXIT_FAILED};
use super::container::{self, Started};
use super::run::{self, Terminal};

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short, long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short, long)]
    interactive: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn main(layout: &Layout, args: StartArgs) -> i32 {
    if args.attach || args.interactive {
        return match args.containers.as_slice() {
            [name] => start_attached(layout, name, args.interactive)
                .unwrap_or_else(|err| report(&err, exit::RUNTIME_ERROR)),
            _ => report(
                &anyhow!("you cannot start and attach multiple containers at once"),
                exit::RUNTIME_ERROR,
            ),
        };
    }
    let mut code = 0;
    for name in &args.containers {
        match start(layout, name) {
            Ok(()) => println!("{name}"),
            Err(err) => code = report(&err, EXIT_FAILED),
        }
    }
    code
}

/// Boots container `name` unless it runs already. Shared with `rvm restart`.
pub fn start(layout: &Layout, name: &str) -> Result<()> {
    let containers = container::open(layout)?;
    let Some(id) = prepare_start(&containers, name)? else {
        return Ok(());
    };
    container::spawn_monitor(&containers, &id, None)?;
    match container::wait_started(&containers, &id)? {
        Started::Running | Started::Exited { .. } => Ok(()),
        Started::Failed { message, .. } => {
            bail!("Error response from the container's microVM: {message}")
        }
    }
}

/// Checks that container `name` can be started: its ID, or None when it runs already. Its
/// earlier run is cleared when its monitor is started ([`container::spawn_monitor`]).
fn prepare_start(containers: &Containers, name: &str) -> Result<Option<String>> {
    let found = container::find(containers, name)?;
    let id = found.config.id;
    if found.state.status() == Status::Running {
        return Ok(None);
    }
    if found.state.monitor_alive() {
        bail!("container {name} is still being stopped; try again");
    }
    common::require_bootable_kvm()?;
    Ok(Some(id))
}

/// `start -a [-i]`: boots the container attached to this terminal; its exit code. A container
/// that runs already cannot be attached to (rvm has no `attach` yet).
fn start_attached(layout: &Layout, name: &str, interactive: bool) -> Result<i32> {
    let containers = container::open(layout)?;
    let Some(id) = prepare_start(&containers, name)? else {
        bail!("container {name} is already running; attaching to a running container is not supported");
    };
    let config = containers.load(&id)?.config;
    let terminal = Terminal {
        tty: config.tty,
        interactive: interactive && config.open_stdin,
    };
    run::start_attached(&containers, &id, terminal)
}
