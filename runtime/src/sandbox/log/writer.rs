//! Writes the json-file log: output turned into entries line by line, and the file rotated as
//! Docker's json-file driver does: when the next entry would take the current file past
//! `max-size`, it becomes `<log>.1`, `<log>.1` becomes `<log>.2` and so on, the file that would
//! be `<log>.<max-file>` is deleted, and a new current file is started; with `max-file=1` the
//! current file is simply started anew. The writer is the monitor, the only one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{rotated_path, LogConfig, LogDriver, LogEntry, Stream, MAX_PARTIAL};
use crate::host::private;
use crate::sandbox::time;

/// Appends output to a json-file log, line by line, rotating it by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    config: LogConfig,
    /// The current file; None with the `none` driver (output is dropped).
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    pending: [Vec<u8>; 2],
}

fn open_current(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(private::FILE_MODE)
        .open(path)?;
    private::restrict(path, private::FILE_MODE)?;
    Ok(file)
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl LogWriter {
    /// Opens (creating or appending to) the log at `path`, to be kept within `config`.
    pub fn open(path: &Path, config: LogConfig) -> io::Result<Self> {
        let file = match config.driver {
            LogDriver::JsonFile => Some(open_current(path)?),
            LogDriver::None => None,
        };
        let size = match &file {
            Some(file) => file.metadata()?.len(),
            None => 0,
        };
        Ok(Self {
            path: path.to_owned(),
            config,
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        })
    }

    fn slot(stream: Stream) -> usize {
        match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }

    /// Records `bytes` of `stream`: complete lines now, the rest when its line ends.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        let slot = Self::slot(stream);
        self.pending[slot].extend_from_slice(bytes);
        while let Some(end) = self.pending[slot].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending[slot].drain(..=end).collect();
            self.append(stream, &line)?;
        }
        if self.pending[slot].len() >= MAX_PARTIAL {
            let partial = std::mem::take(&mut self.pending[slot]);
            self.append(stream, &partial)?;
        }
        Ok(())
    }

    /// Writes out unterminated output (at the end of the stream).
    pub fn flush_partial(&mut self, stream: Stream) -> io::Result<()> {
        let slot = Self::slot(stream);
        if !self.pending[slot].is_empty() {
            let partial = std::mem::take(&mut self.pending[slot]);
            self.append(stream, &partial)?;
        }
        Ok(())
    }

    fn append(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let entry = LogEntry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream,
            time: time::now_rfc3339(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.config.max_size {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Shifts the rotated files up by one (dropping the oldest), makes the current one `.1`
    /// and starts a new current file.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let keep = self.config.max_file;
        if keep >= 2 {
            ignore_missing(std::fs::remove_file(rotated_path(&self.path, keep - 1)))?;
            for n in (2..keep).rev() {
                let from = rotated_path(&self.path, n - 1);
                ignore_missing(std::fs::rename(&from, rotated_path(&self.path, n)))?;
            }
            ignore_missing(std::fs::rename(&self.path, rotated_path(&self.path, 1)))?;
        } else {
            // A new file rather than a truncated one: a follower sees the change of inode.
            ignore_missing(std::fs::remove_file(&self.path))?;
        }
        self.file = Some(open_current(&self.path)?);
        self.size = 0;
        tracing::debug!(log = %self.path.display(), "container log rotated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_lines::{numbers, write_lines};
    use super::super::{read_entries, read_log, LogDriver};
    use super::*;

    fn config(max_size: u64, max_file: u32) -> LogConfig {
        LogConfig {
            driver: LogDriver::JsonFile,
            max_size,
            max_file,
        }
    }

    #[test]
    fn lines_become_entries_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = LogWriter::open(&path, LogConfig::default()).unwrap();
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"oops\n").unwrap();
        log.write(Stream::Stdout, b"lo\nwor").unwrap();
        log.flush_partial(Stream::Stdout).unwrap();
        let (entries, offset) = read_entries(&path, 0).unwrap();
        let got: Vec<(&str, Stream)> = entries.iter().map(|e| (e.log.as_str(), e.stream)).collect();
        assert_eq!(
            got,
            vec![
                ("oops\n", Stream::Stderr),
                ("hello\n", Stream::Stdout),
                ("wor", Stream::Stdout)
            ]
        );
        assert_eq!(offset, std::fs::metadata(&path).unwrap().len());
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["stream"], "stderr");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn rotation_keeps_max_file_files_of_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = LogWriter::open(&path, config(1000, 3)).unwrap();
        write_lines(&mut log, 0..200);
        let mut files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["c-json.log", "c-json.log.1", "c-json.log.2"]);
        for file in &files {
            let size = std::fs::metadata(dir.path().join(file)).unwrap().len();
            assert!(size <= 1000, "{file}: {size} bytes");
        }
        // What is kept is the newest output, in order, without a gap.
        let entries = read_log(&path, 3).unwrap();
        let kept = numbers(&entries);
        assert_eq!(kept.last(), Some(&199));
        assert!(kept.len() > 20, "{kept:?}");
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
        let oldest = numbers(&read_entries(&rotated_path(&path, 2), 0).unwrap().0);
        assert_eq!(oldest.first(), kept.first());
    }

    #[test]
    fn one_file_is_started_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = LogWriter::open(&path, config(1000, 1)).unwrap();
        write_lines(&mut log, 0..100);
        assert!(!rotated_path(&path, 1).exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
        assert_eq!(numbers(&read_log(&path, 1).unwrap()).last(), Some(&99));
    }

    #[test]
    fn reopening_counts_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = LogWriter::open(&path, config(1000, 2)).unwrap();
        write_lines(&mut log, 0..8);
        drop(log);
        let mut log = LogWriter::open(&path, config(1000, 2)).unwrap();
        write_lines(&mut log, 8..16);
        assert!(std::fs::metadata(&path).unwrap().len() <= 1000);
        assert!(rotated_path(&path, 1).exists());
        assert_eq!(
            numbers(&read_log(&path, 2).unwrap()),
            (0..16).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_none_driver_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let none = LogConfig {
            driver: LogDriver::None,
            ..LogConfig::default()
        };
        let mut log = LogWriter::open(&path, none).unwrap();
        log.write(Stream::Stdout, b"secret\n").unwrap();
        log.flush_partial(Stream::Stdout).unwrap();
        assert!(!path.exists());
    }
}
