//! `rvm container-monitor ID [--attach]` (hidden): the process that owns a container's VM. It
//! leaves the caller's session, serves `rvm run`'s attach socket (its stdin, with `--attach`),
//! logs to `monitor.log` (its stderr) and runs the container to its end.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream as StdUnixStream;

use anyhow::{Context, Result};
use clap::Args;
use rvm_protocol::exit;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::monitor;
use tokio::net::UnixStream;

use super::common::{self, report};
use super::container;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The container's full ID.
    id: String,
    /// Stdin is the attach socket of `rvm run`.
    #[arg(long)]
    attach: bool,
}

/// Runs the monitor; returns the container's exit code.
pub fn main(layout: &Layout, args: MonitorArgs) -> i32 {
    // A new session: the caller's terminal signals (^C, hang-up) are not ours.
    let _ = rustix::process::setsid();
    common::init_tracing_for_monitor();
    match run(layout, &args) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            report(&err, exit::RUNTIME_ERROR)
        }
    }
}

/// Takes the attach socket from stdin and puts /dev/null in its place, so that the socket
/// closes (and the client sees the end) when the monitor drops it.
fn take_attach_socket() -> Result<StdUnixStream> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot take the attach socket from stdin")?;
    let null = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
    rustix::stdio::dup2_stdin(&null).context("cannot replace stdin")?;
    let socket = StdUnixStream::from(fd);
    socket
        .set_nonblocking(true)
        .context("cannot set up the attach socket")?;
    Ok(socket)
}

fn run(layout: &Layout, args: &MonitorArgs) -> Result<i32> {
    let containers = container::open(layout)?;
    let attach = args.attach.then(take_attach_socket).transpose()?;
    let runtime = common::runtime()?;
    let result = runtime.block_on(async {
        let attach = attach
            .map(UnixStream::from_std)
            .transpose()
            .context("cannot use the attach socket")?;
        monitor::run(&containers, &args.id, attach)
            .await
            .with_context(|| format!("monitor of container {}", args.id))
    });
    runtime.shutdown_background();
    result
}
