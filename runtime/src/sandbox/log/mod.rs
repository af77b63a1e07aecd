//! The container log in Docker's json-file format: one JSON object per line,
//! `{"log":"hello\n","stream":"stdout","time":"2026-11-23T11:00:00.123456789Z"}`, each line of
//! output one entry, so `rvm logs` can replay stdout and stderr in order; rotated by size
//! (`options`: Docker's `max-size`/`max-file`, bounded by default), written by the monitor
//! (`writer`) and read across the rotated files, followed through rotations (`reader`).

mod options;
mod reader;
#[cfg(test)]
mod test_lines;
mod writer;

use serde::{Deserialize, Serialize};

pub use options::{LogConfig, LogDriver, LogOptError, DEFAULT_MAX_FILE, DEFAULT_MAX_SIZE};
pub use reader::{read_entries, read_log, Follower};
pub use writer::LogWriter;

/// A partial line longer than this is written as an entry of its own, as Docker does at 16 KiB.
pub const MAX_PARTIAL: usize = 16 << 10;

/// Which output of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of the log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub log: String,
    pub stream: Stream,
    pub time: String,
}

/// The `n`th rotated file of the log at `path` (`<path>.1` is the newest).
pub fn rotated_path(path: &std::path::Path, n: u32) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    std::path::PathBuf::from(name)
}
