//! `rvm logs [-f] CONTAINER`: replays the json-file log, stdout to stdout and stderr to stderr;
//! `-f` follows it until the container stops.

use std::io::Write;
use std::thread::sleep;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::log::{self, Stream};
use rvm_runtime::sandbox::state::Status;

use super::common::{report, EXIT_FAILED};
use super::container;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

pub fn main(layout: &Layout, args: LogsArgs) -> i32 {
    match run(layout, &args) {
        Ok(()) => 0,
        Err(err) => report(&err, EXIT_FAILED),
    }
}

fn run(layout: &Layout, args: &LogsArgs) -> Result<()> {
    let containers = container::open(layout)?;
    let id = container::find(&containers, &args.container)?.config.id;
    let path = layout.log_path(&id);
    let mut offset = 0;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        let (entries, next) = log::read_entries(&path, offset)?;
        offset = next;
        for entry in &entries {
            let text = if args.timestamps {
                format!("{} {}", entry.time, entry.log)
            } else {
                entry.log.clone()
            };
            match entry.stream {
                Stream::Stdout => stdout.lock().write_all(text.as_bytes())?,
                Stream::Stderr => stderr.lock().write_all(text.as_bytes())?,
            }
        }
        stdout.lock().flush()?;
        if !args.follow {
            return Ok(());
        }
        if entries.is_empty() {
            let running = match containers.load(&id) {
                Ok(c) => c.state.status != Status::Exited && c.state.monitor_alive(),
                Err(_) => false,
            };
            if !running {
                // One last read: output written just before the exit.
                let (rest, _) = log::read_entries(&path, offset)?;
                for entry in rest {
                    match entry.stream {
                        Stream::Stdout => stdout.lock().write_all(entry.log.as_bytes())?,
                        Stream::Stderr => stderr.lock().write_all(entry.log.as_bytes())?,
                    }
                }
                return Ok(());
            }
            sleep(Duration::from_millis(100));
        }
    }
}
