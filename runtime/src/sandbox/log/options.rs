//! The container's logging configuration: `--log-driver` (`json-file` or `none`) and the
//! json-file `--log-opt`s `max-size` and `max-file`, with Docker's meanings, parsed once at
//! `rvm create` and kept in `config.json`.
//!
//! Unlike Docker's json-file driver, whose log grows without limit unless told otherwise, rvm
//! bounds every container's log by default, as Docker's `local` driver does: 5 files of 20 MB
//! (`max-size=20m`, `max-file=5`), so a guest that writes without end costs the host at most
//! `max-size` × `max-file` bytes (plus one entry: a file is rotated before the entry that would
//! take it past `max-size`, so only an entry larger than `max-size` makes a file larger).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use thiserror::Error;

/// `max-size` when not given: 20 MB, as Docker's `local` driver.
pub const DEFAULT_MAX_SIZE: u64 = 20_000_000;
/// `max-file` when not given, as Docker's `local` driver.
pub const DEFAULT_MAX_FILE: u32 = 5;
/// The smallest `max-size` (Docker has none): a file holds a few entries (a partial line is cut
/// at [`super::MAX_PARTIAL`]), so that a guest writing lines does not make every one a rotation.
pub const MIN_MAX_SIZE: u64 = 64_000;

/// Where the container's output goes besides an attached client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    /// Docker's json-file format, rotated by size.
    JsonFile,
    /// Nowhere: `rvm logs` has nothing to read.
    None,
}

impl LogDriver {
    /// The name `--log-driver` takes and `inspect` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            LogDriver::JsonFile => "json-file",
            LogDriver::None => "none",
        }
    }
}

/// The container's log driver and its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    pub driver: LogDriver,
    /// Bytes after which the current file is rotated.
    pub max_size: u64,
    /// Files kept, the current one included (1: the current file is started anew).
    pub max_file: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            driver: LogDriver::JsonFile,
            max_size: DEFAULT_MAX_SIZE,
            max_file: DEFAULT_MAX_FILE,
        }
    }
}

/// A `--log-driver` or `--log-opt` that rvm refuses, named.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LogOptError {
    #[error("invalid --log-driver {0:?}: rvm supports json-file and none")]
    Driver(String),
    #[error("invalid --log-opt {0:?}: expected KEY=VALUE")]
    Format(String),
    #[error(
        "unknown log opt {key:?} for {driver} log driver (rvm supports max-size and max-file)"
    )]
    UnknownKey { key: String, driver: &'static str },
    #[error(
        "invalid --log-opt max-size={0:?}: expected a size such as 10m (k, m, g: powers of 1000)"
    )]
    Size(String),
    #[error("invalid --log-opt max-size={0:?}: at least 64k, so that one log entry fits")]
    SizeTooSmall(String),
    #[error("invalid --log-opt max-file={0:?}: expected a whole number of at least 1")]
    Files(String),
    #[error("--log-opt {0} is not used by the none log driver")]
    NotForNone(String),
}

impl LogConfig {
    /// Parses `--log-driver` (json-file when absent) and the `--log-opt KEY=VALUE`s; unset
    /// limits keep rvm's bounded defaults.
    pub fn parse(driver: Option<&str>, opts: &[String]) -> Result<Self, LogOptError> {
        let driver = match driver {
            None | Some("json-file") => LogDriver::JsonFile,
            Some("none") => LogDriver::None,
            Some(other) => return Err(LogOptError::Driver(other.to_owned())),
        };
        let mut config = Self {
            driver,
            ..Self::default()
        };
        for opt in opts {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| LogOptError::Format(opt.clone()))?;
            if driver == LogDriver::None {
                return Err(LogOptError::NotForNone(opt.clone()));
            }
            match key {
                "max-size" => config.max_size = parse_max_size(value)?,
                "max-file" => config.max_file = parse_max_file(value)?,
                _ => {
                    return Err(LogOptError::UnknownKey {
                        key: key.to_owned(),
                        driver: driver.as_str(),
                    })
                }
            }
        }
        Ok(config)
    }

    /// Docker's `HostConfig.LogConfig`: `{"Type": "json-file", "Config": {"max-size": "20m",
    /// "max-file": "5"}}`.
    pub fn docker_view(&self) -> Value {
        match self.driver {
            LogDriver::None => json!({"Type": "none", "Config": {}}),
            LogDriver::JsonFile => json!({
                "Type": "json-file",
                "Config": {
                    "max-size": format_size(self.max_size),
                    "max-file": self.max_file.to_string(),
                },
            }),
        }
    }
}

/// `max-size` as Docker's json-file driver reads it (`units.FromHumanSize`): a decimal number
/// with an optional unit k, m, g, t or p in powers of 1000, case-insensitive, an optional `i`
/// and `b` after it (`10m`, `10MB`, `1.5g`, `500000`).
fn parse_max_size(text: &str) -> Result<u64, LogOptError> {
    let bad = || LogOptError::Size(text.to_owned());
    let lower = text.to_ascii_lowercase();
    let number_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(number_end);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "p" => 1e15,
        _ => return Err(bad()),
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    let bytes = bytes as u64;
    if bytes < MIN_MAX_SIZE {
        return Err(LogOptError::SizeTooSmall(text.to_owned()));
    }
    Ok(bytes)
}

fn parse_max_file(text: &str) -> Result<u32, LogOptError> {
    match text.parse::<u32>() {
        Ok(files) if files >= 1 => Ok(files),
        _ => Err(LogOptError::Files(text.to_owned())),
    }
}

/// A size in the shortest exact decimal notation (`20m`, `1500k`, `65537`).
fn format_size(bytes: u64) -> String {
    for (unit, scale) in [("g", 1_000_000_000), ("m", 1_000_000), ("k", 1_000)] {
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(driver: Option<&str>, opts: &[&str]) -> Result<LogConfig, LogOptError> {
        let opts: Vec<String> = opts.iter().map(|s| (*s).to_owned()).collect();
        LogConfig::parse(driver, &opts)
    }

    #[test]
    fn defaults_bound_the_log() {
        let config = parse(None, &[]).unwrap();
        assert_eq!(config, LogConfig::default());
        assert_eq!(config.max_size, 20_000_000);
        assert_eq!(config.max_file, 5);
        assert_eq!(
            config.docker_view(),
            json!({"Type": "json-file", "Config": {"max-size": "20m", "max-file": "5"}})
        );
    }

    #[test]
    fn options_in_docker_notation() {
        let config = parse(Some("json-file"), &["max-size=10m", "max-file=3"]).unwrap();
        assert_eq!((config.max_size, config.max_file), (10_000_000, 3));
        for (text, bytes) in [
            ("10MB", 10_000_000),
            ("1.5g", 1_500_000_000),
            ("100k", 100_000),
            ("64kb", 64_000),
            ("2 MiB", 2_000_000),
            ("500000", 500_000),
        ] {
            assert_eq!(parse_max_size(text), Ok(bytes), "{text}");
        }
        let only_files = parse(None, &["max-file=1"]).unwrap();
        assert_eq!(only_files.max_size, DEFAULT_MAX_SIZE);
        assert_eq!(
            parse(None, &["max-size=1500k"]).unwrap().docker_view()["Config"]["max-size"],
            "1500k"
        );
        let none = parse(Some("none"), &[]).unwrap();
        assert_eq!(none.driver, LogDriver::None);
        assert_eq!(none.docker_view()["Type"], "none");
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (driver, opts, words) in [
            (None, &["max-size=abc"][..], &["max-size", "abc"][..]),
            (None, &["max-size=10x"], &["max-size", "10x"]),
            (None, &["max-size=-1m"], &["max-size", "-1m"]),
            (None, &["max-size=1k"], &["max-size", "1k", "64k"]),
            (None, &["max-file=0"], &["max-file", "0"]),
            (None, &["max-file=two"], &["max-file", "two"]),
            (None, &["compress=true"], &["compress", "json-file"]),
            (None, &["max-size"], &["max-size", "KEY=VALUE"]),
            (Some("syslog"), &[], &["--log-driver", "syslog"]),
            (Some("none"), &["max-size=1m"], &["max-size=1m", "none"]),
        ] {
            let error = parse(driver, opts).unwrap_err().to_string();
            for word in words {
                assert!(error.contains(word), "{error} lacks {word}");
            }
        }
    }

    #[test]
    fn a_config_without_log_settings_reads_as_the_defaults() {
        #[derive(Deserialize)]
        struct Old {
            #[serde(default)]
            log: LogConfig,
        }
        let old: Old = serde_json::from_str("{}").unwrap();
        assert_eq!(old.log, LogConfig::default());
        let text = serde_json::to_string(&LogConfig::default()).unwrap();
        assert!(text.contains("\"json-file\""), "{text}");
    }
}
