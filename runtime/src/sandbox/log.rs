//! The container log in Docker's json-file format: one JSON object per line,
//! `{"log":"hello\n","stream":"stdout","time":"2026-11-23T11:00:00.123456789Z"}`, each line of
//! output one entry, so `rvm logs` can replay stdout and stderr in order.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::time;
use crate::host::private;

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

/// Appends output to a json-file log, line by line.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (creating or appending to) the log at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(private::FILE_MODE)
            .open(path)?;
        private::restrict(path, private::FILE_MODE)?;
        Ok(Self {
            file,
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
        let entry = LogEntry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream,
            time: time::now_rfc3339(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// Reads the complete entries from byte `offset` on; returns them and the offset after the last
/// complete line (a line still being written is left for the next call).
pub fn read_entries(path: &Path, offset: u64) -> io::Result<(Vec<LogEntry>, u64)> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(err) => return Err(err),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut position = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break;
        }
        position += read as u64;
        // A line that does not parse (a torn write after a crash) is skipped, not fatal.
        if let Ok(entry) = serde_json::from_slice(&line) {
            entries.push(entry);
        }
    }
    Ok((entries, position))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_entries_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = LogWriter::open(&path).unwrap();
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
    fn incomplete_last_line_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(
            &path,
            b"{\"log\":\"a\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n{\"log\"",
        )
        .unwrap();
        let (entries, offset) = read_entries(&path, 0).unwrap();
        assert_eq!(entries.len(), 1);
        let (more, again) = read_entries(&path, offset).unwrap();
        assert!(more.is_empty());
        assert_eq!(again, offset);
        assert_eq!(read_entries(&dir.path().join("none"), 7).unwrap().1, 7);
    }
}
