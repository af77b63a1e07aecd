//! `rvm logs [-f] [-t] [-n N] [--since T] [--until T] CONTAINER`: replays the json-file log,
//! stdout to stdout and stderr to stderr; `--since`/`--until` keep the entries written in that
//! window, `-n` the last N of them; `-f` follows the log until the container stops. The log is
//! read across its rotated files, oldest first, and followed through rotations.

use std::io::Write;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use clap::Args;
use rvm_runtime::sandbox::layout::Layout;
use rvm_runtime::sandbox::log::{self, LogDriver, LogEntry, Stream};
use rvm_runtime::sandbox::state::Status;
use rvm_runtime::sandbox::time;

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
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all", allow_hyphen_values = true)]
    tail: String,
    /// Show logs since timestamp (e.g. 2026-12-04T03:00:00Z) or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp (e.g. 2026-12-04T03:00:00Z) or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    until: Option<String>,
    container: String,
}

/// Which entries to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Selection {
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    /// The last N entries of the window; None for all.
    tail: Option<usize>,
}

impl Selection {
    fn parse(args: &LogsArgs, now: SystemTime) -> Result<Self> {
        let point = |flag: &str, text: &Option<String>| -> Result<Option<SystemTime>> {
            let Some(text) = text else { return Ok(None) };
            match time::parse_point(text, now) {
                Some(point) => Ok(Some(point)),
                None => bail!(
                    "invalid value for {flag}: {text:?} (an RFC 3339 time, Unix seconds or a duration such as 10m)"
                ),
            }
        };
        let tail = match args.tail.as_str() {
            "all" => None,
            text => match text.parse::<i64>() {
                // Docker takes a negative count as all.
                Ok(n) if n < 0 => None,
                Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(_) => bail!("invalid value for --tail: {text:?} (a number of lines or all)"),
            },
        };
        Ok(Self {
            since: point("--since", &args.since)?,
            until: point("--until", &args.until)?,
            tail,
        })
    }

    /// Whether `entry` was written inside the window (an unreadable time counts as inside).
    fn in_window(&self, entry: &LogEntry) -> bool {
        let Some(at) = time::parse_rfc3339(&entry.time) else {
            return true;
        };
        self.since.is_none_or(|since| at >= since) && self.until.is_none_or(|until| at <= until)
    }

    /// The entries of `entries` to show.
    fn pick<'a>(&self, entries: &'a [LogEntry]) -> Vec<&'a LogEntry> {
        let window: Vec<&LogEntry> = entries.iter().filter(|e| self.in_window(e)).collect();
        let skip = self
            .tail
            .map_or(0, |tail| window.len().saturating_sub(tail));
        window.into_iter().skip(skip).collect()
    }
}

pub fn main(layout: &Layout, args: LogsArgs) -> i32 {
    match run(layout, &args) {
        Ok(()) => 0,
        Err(err) => report(&err, EXIT_FAILED),
    }
}

fn run(layout: &Layout, args: &LogsArgs) -> Result<()> {
    let selection = Selection::parse(args, SystemTime::now())?;
    let containers = container::open(layout)?;
    let config = container::find(&containers, &args.container)?.config;
    if config.log.driver == LogDriver::None {
        bail!("configured logging driver does not support reading");
    }
    let id = config.id;
    let (entries, mut follower) = log::Follower::open(&layout.log_path(&id), config.log.max_file)?;
    show(&selection.pick(&entries), args.timestamps)?;
    // What is written from now on is new: no tail applies to it.
    let window = Selection {
        tail: None,
        ..selection
    };
    if !args.follow {
        return Ok(());
    }
    loop {
        let entries = follower.poll()?;
        show(&window.pick(&entries), args.timestamps)?;
        if !entries.is_empty() {
            continue;
        }
        let running = match containers.load(&id) {
            Ok(c) => c.state.status() != Status::Exited && c.state.monitor_alive(),
            Err(_) => false,
        };
        if !running {
            // One last read: output written just before the exit.
            let rest = follower.poll()?;
            return show(&window.pick(&rest), args.timestamps);
        }
        sleep(Duration::from_millis(100));
    }
}

fn show(entries: &[&LogEntry], timestamps: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    for entry in entries {
        let text = if timestamps {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        logs: LogsArgs,
    }

    fn selection(flags: &[&str], now: SystemTime) -> Result<Selection> {
        let mut argv = vec!["logs"];
        argv.extend_from_slice(flags);
        argv.push("x");
        Selection::parse(&Cli::try_parse_from(argv)?.logs, now)
    }

    fn entry(log: &str, time: &str) -> LogEntry {
        LogEntry {
            log: format!("{log}\n"),
            stream: Stream::Stdout,
            time: time.to_owned(),
        }
    }

    fn shown(selection: &Selection, entries: &[LogEntry]) -> Vec<String> {
        let pick = selection.pick(entries);
        pick.iter().map(|e| e.log.trim_end().to_owned()).collect()
    }

    #[test]
    fn tail_since_and_until_pick_entries() {
        let now = time::parse_rfc3339("2026-12-04T03:10:00Z").unwrap();
        let entries = [
            entry("one", "2026-12-04T03:00:00.000000001Z"),
            entry("two", "2026-12-04T03:05:00Z"),
            entry("three", "2026-12-04T03:09:00Z"),
        ];
        let pick = |flags: &[&str]| shown(&selection(flags, now).unwrap(), &entries);
        assert_eq!(pick(&[]), ["one", "two", "three"]);
        assert_eq!(pick(&["-n", "2"]), ["two", "three"]);
        assert_eq!(pick(&["--tail", "0"]), Vec::<String>::new());
        assert_eq!(pick(&["--tail", "-1"]), ["one", "two", "three"]);
        assert_eq!(pick(&["--tail", "all"]), ["one", "two", "three"]);
        assert_eq!(pick(&["--since", "6m"]), ["two", "three"]);
        assert_eq!(pick(&["--since", "2026-12-04T03:05:00Z"]), ["two", "three"]);
        assert_eq!(pick(&["--until", "2026-12-04T03:05:00Z"]), ["one", "two"]);
        assert_eq!(
            pick(&["--since", "9m", "--until", "2m", "-n", "1"]),
            ["two"]
        );
    }

    #[test]
    fn bad_values_are_named() {
        let now = SystemTime::now();
        for (flags, words) in [
            (&["--tail", "ten"][..], &["--tail", "ten"][..]),
            (&["--since", "yesterday"], &["--since", "yesterday"]),
            (&["--until", "5x"], &["--until", "5x"]),
        ] {
            let error = selection(flags, now).unwrap_err().to_string();
            for word in words {
                assert!(error.contains(word), "{error}");
            }
        }
    }
}
