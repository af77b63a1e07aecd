//! Container environment in Docker's terms: `-e KEY=VALUE` and `-e KEY` (taken from the caller's
//! environment), `--env-file` files, and merging over the image's `Env` by key.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EnvError {
    #[error("cannot read env file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("env file {} line {line}: variable {name:?} contains whitespaces", path.display())]
    Whitespace {
        path: PathBuf,
        line: usize,
        name: String,
    },
    #[error("invalid environment variable: {0:?} (the name is empty)")]
    EmptyName(String),
}

/// Resolves one `-e` value: `KEY=VALUE` as is, `KEY` from `lookup` (dropped when unset).
pub fn resolve_entry(
    entry: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, EnvError> {
    let name = entry.split('=').next().unwrap_or_default();
    if name.is_empty() {
        return Err(EnvError::EmptyName(entry.to_owned()));
    }
    if entry.contains('=') {
        return Ok(Some(entry.to_owned()));
    }
    Ok(lookup(name).map(|value| format!("{name}={value}")))
}

/// Parses an env file as Docker does: one variable per line, `#` comments and blank lines
/// skipped, leading whitespace trimmed, a bare name taken from `lookup`.
pub fn parse_env_file(
    path: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, EnvError> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split('=').next().unwrap_or_default();
        if name.contains(char::is_whitespace) {
            return Err(EnvError::Whitespace {
                path: path.to_owned(),
                line: index + 1,
                name: name.to_owned(),
            });
        }
        if let Some(entry) = resolve_entry(line, &lookup)? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Reads and parses an env file from disk, taking bare names from this process's environment.
pub fn read_env_file(path: &Path) -> Result<Vec<String>, EnvError> {
    let text = std::fs::read_to_string(path).map_err(|source| EnvError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_env_file(path, &text, |name| std::env::var(name).ok())
}

fn key(entry: &str) -> &str {
    entry.split('=').next().unwrap_or(entry)
}

/// `base` with each entry of `overrides` replacing the entry of the same name or appended.
pub fn merge(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut merged: Vec<String> = base.to_vec();
    for entry in overrides {
        match merged.iter_mut().find(|e| key(e) == key(entry)) {
            Some(slot) => slot.clone_from(entry),
            None => merged.push(entry.clone()),
        }
    }
    merged
}

/// Whether `env` defines `name`.
pub fn has(env: &[String], name: &str) -> bool {
    env.iter().any(|e| key(e) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "HOME_SET").then(|| "from-host".to_owned())
    }

    #[test]
    fn entries_with_and_without_value() {
        assert_eq!(resolve_entry("A=1", lookup).unwrap(), Some("A=1".into()));
        assert_eq!(resolve_entry("A=", lookup).unwrap(), Some("A=".into()));
        assert_eq!(
            resolve_entry("HOME_SET", lookup).unwrap(),
            Some("HOME_SET=from-host".into())
        );
        assert_eq!(resolve_entry("UNSET", lookup).unwrap(), None);
        assert!(matches!(
            resolve_entry("=x", lookup),
            Err(EnvError::EmptyName(_))
        ));
    }

    #[test]
    fn env_file_follows_docker() {
        let text = "# comment\n\n  A=1\nB=two words\nHOME_SET\nUNSET\nC=x=y\n";
        let entries = parse_env_file(Path::new("f.env"), text, lookup).unwrap();
        assert_eq!(
            entries,
            vec!["A=1", "B=two words", "HOME_SET=from-host", "C=x=y"]
        );
    }

    #[test]
    fn env_file_name_with_space_is_refused_with_line() {
        let error = parse_env_file(Path::new("f.env"), "OK=1\nBAD NAME=1\n", lookup).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("f.env line 2"), "{message}");
        assert!(message.contains("BAD NAME"), "{message}");
    }

    #[test]
    fn merge_replaces_by_name_and_keeps_order() {
        let base = vec!["PATH=/bin".to_owned(), "A=1".to_owned()];
        let merged = merge(&base, &["A=2".to_owned(), "B=3".to_owned()]);
        assert_eq!(merged, vec!["PATH=/bin", "A=2", "B=3"]);
        assert!(has(&merged, "B"));
        assert!(!has(&merged, "PAT"));
    }
}
