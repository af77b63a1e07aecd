//! `rvm top CONTAINER`: the container's processes inside its microVM, as the agent lists them
//! (guest pids; the exec that started each one, when the agent started it).

use anyhow::{bail, Result};
use clap::Args;
use rvm_protocol::agent::ProcessInfo;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::Status;

use super::common::{self, report, EXIT_FAILED};
use super::container;
use super::human;

#[derive(Debug, Args)]
pub struct TopArgs {
    container: String,
}

pub fn main(layout: &Layout, args: TopArgs) -> i32 {
    let result = common::runtime().and_then(|runtime| runtime.block_on(top(layout, &args)));
    match result {
        Ok(table) => {
            print!("{table}");
            0
        }
        Err(err) => report(&err.context("Error response from daemon"), EXIT_FAILED),
    }
}

async fn top(layout: &Layout, args: &TopArgs) -> Result<String> {
    let containers = container::open(layout)?;
    let found = container::find(&containers, &args.container)?;
    if found.state.status() != Status::Running {
        bail!("container {} is not running", found.config.id);
    }
    let session = container::connect(&containers, &found.config.id).await?;
    let processes = session.list_processes(&found.config.id).await?;
    Ok(table(&processes))
}

/// `UID PID PPID CMD`, one line per process, in pid order, columns aligned.
fn table(processes: &[ProcessInfo]) -> String {
    let mut sorted: Vec<&ProcessInfo> = processes.iter().collect();
    sorted.sort_by_key(|p| p.pid);
    let rows: Vec<[String; 4]> = sorted
        .into_iter()
        .map(|p| {
            let uid = match p.uid {
                0 => "root".to_owned(),
                uid => uid.to_string(),
            };
            [
                uid,
                p.pid.to_string(),
                p.ppid.to_string(),
                p.command.clone(),
            ]
        })
        .collect();
    human::table(&["UID", "PID", "PPID", "CMD"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32, ppid: u32, uid: u32, command: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid,
            uid,
            command: command.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn processes_in_pid_order_with_aligned_columns() {
        let table = table(&[
            process(12, 1, 1000, "sleep 600"),
            process(1, 0, 0, "sh -c trap"),
        ]);
        assert_eq!(
            table,
            "UID    PID   PPID   CMD\n\
             root   1     0      sh -c trap\n\
             1000   12    1      sleep 600\n"
        );
    }
}
