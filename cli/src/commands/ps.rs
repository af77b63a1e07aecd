//! `rvm ps [-a] [-q]`: the containers, as Docker's table (running ones unless `-a`).

use anyhow::Result;
use clap::Args;
use rvm_runtime::sandbox::id;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::state::{Container, Lifecycle, Status};
use rvm_runtime::sandbox::time;

use super::common::{report, EXIT_FAILED};
use super::container;
use super::human;

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
}

pub fn main(layout: &Layout, args: PsArgs) -> i32 {
    match run(layout, &args) {
        Ok(()) => 0,
        Err(err) => report(&err, EXIT_FAILED),
    }
}

fn run(layout: &Layout, args: &PsArgs) -> Result<()> {
    let containers = container::open(layout)?.list()?;
    let shown: Vec<&Container> = containers
        .iter()
        .filter(|c| args.all || c.state.status() == Status::Running)
        .collect();
    if args.quiet {
        for c in shown {
            println!("{}", short_or_full(&c.config.id, args.no_trunc));
        }
        return Ok(());
    }
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    let rows: Vec<[String; 7]> = shown
        .iter()
        .map(|c| {
            [
                short_or_full(&c.config.id, args.no_trunc),
                c.config.image.clone(),
                command(c, args.no_trunc),
                format!("{} ago", time::human_since(&c.config.created)),
                status(c),
                ports(c),
                c.config.name.clone(),
            ]
        })
        .collect();
    print!("{}", human::table(&header, &rows));
    Ok(())
}

fn short_or_full(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_owned()
    } else {
        id::short(id).to_owned()
    }
}

/// The command, quoted and truncated to 20 characters as Docker shows it.
fn command(c: &Container, no_trunc: bool) -> String {
    let command = c.config.command();
    let chars: Vec<char> = command.chars().collect();
    if no_trunc || chars.len() <= 20 {
        format!("\"{command}\"")
    } else {
        format!("\"{}…\"", chars[..19].iter().collect::<String>())
    }
}

/// Docker's PORTS column (`0.0.0.0:8080->80/tcp`), shown while the container runs.
fn ports(c: &Container) -> String {
    match (&c.config.endpoint, c.state.status()) {
        (Some(endpoint), Status::Running) => endpoint.ports_text(),
        _ => String::new(),
    }
}

/// Docker's STATUS column: `Up 3 seconds`, `Exited (0) 2 minutes ago`, `Created`.
pub fn status(c: &Container) -> String {
    let state = &c.state;
    let up = || time::human_since(state.started_at.as_deref().unwrap_or(&c.config.created));
    match &state.lifecycle {
        Lifecycle::Running => format!("Up {}", up()),
        Lifecycle::Paused => format!("Up {} (Paused)", up()),
        Lifecycle::Exited(ended) => format!(
            "Exited ({}) {} ago",
            ended.code,
            time::human_since(ended.finished_at.as_deref().unwrap_or(&c.config.created))
        ),
        Lifecycle::Created { .. } => "Created".to_owned(),
    }
}
