//! Reads the json-file log across its rotated files, oldest first (`<log>.<max-file - 1>` …
//! `<log>.1`, then `<log>`), and follows it through rotations for `rvm logs -f`.
//!
//! Files are told apart by inode, not by name: the writer renames files while a reader reads,
//! so a reader that opened the current file keeps reading that file even once it is `<log>.1`,
//! and a file met twice under two names is read once. A follower that finds a new file at
//! `<log>` first finishes the one it held (complete once renamed), then reads the rotated files
//! newer than it, then the new current file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{rotated_path, LogEntry};

/// One log file held open, and how far it has been read.
#[derive(Debug)]
struct OpenLog {
    file: File,
    /// Device and inode.
    id: (u64, u64),
    offset: u64,
}

impl OpenLog {
    /// Opens `path`; None when it does not exist.
    fn open(path: &Path) -> io::Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let meta = file.metadata()?;
        Ok(Some(Self {
            file,
            id: (meta.dev(), meta.ino()),
            offset: 0,
        }))
    }

    /// The complete entries after what was read before.
    fn read_more(&mut self) -> io::Result<Vec<LogEntry>> {
        let (entries, offset) = read_file(&mut self.file, self.offset)?;
        self.offset = offset;
        Ok(entries)
    }
}

/// Reads the complete entries of `file` from byte `offset` on; returns them and the offset after
/// the last complete line (a line still being written is left for the next call).
fn read_file(file: &mut File, offset: u64) -> io::Result<(Vec<LogEntry>, u64)> {
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

/// Reads the complete entries of the one file at `path` from byte `offset` on (none when it
/// does not exist); returns them and the offset after the last complete line.
pub fn read_entries(path: &Path, offset: u64) -> io::Result<(Vec<LogEntry>, u64)> {
    match OpenLog::open(path)? {
        Some(mut log) => read_file(&mut log.file, offset),
        None => Ok((Vec::new(), offset)),
    }
}

/// Every entry of the log at `path` rotated into up to `max_file` files, oldest first.
pub fn read_log(path: &Path, max_file: u32) -> io::Result<Vec<LogEntry>> {
    Follower::open(path, max_file).map(|(entries, _)| entries)
}

/// Follows the log at `path` as it grows and rotates.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    max_file: u32,
    /// The file last seen at `path`; None while there is none.
    current: Option<OpenLog>,
}

impl Follower {
    /// Reads the whole log (every file, oldest first) and returns its entries with a follower
    /// that goes on from there.
    pub fn open(path: &Path, max_file: u32) -> io::Result<(Vec<LogEntry>, Self)> {
        // The current file first: a rotation from here on renames it, and it is then skipped
        // under its new name.
        let current = OpenLog::open(path)?;
        let mut seen: Vec<(u64, u64)> = current.iter().map(|log| log.id).collect();
        let mut entries = Vec::new();
        for n in (1..max_file).rev() {
            let Some(mut older) = OpenLog::open(&rotated_path(path, n))? else {
                continue;
            };
            if seen.contains(&older.id) {
                continue;
            }
            seen.push(older.id);
            entries.extend(older.read_more()?);
        }
        let mut follower = Self {
            path: path.to_owned(),
            max_file,
            current,
        };
        if let Some(current) = follower.current.as_mut() {
            entries.extend(current.read_more()?);
        }
        Ok((entries, follower))
    }

    /// The entries written since the last call, across any rotation in between.
    pub fn poll(&mut self) -> io::Result<Vec<LogEntry>> {
        let mut entries = match self.current.as_mut() {
            Some(current) => current.read_more()?,
            None => Vec::new(),
        };
        // Looked for at every call, not only when the file held nothing new: a writer faster
        // than the reader would otherwise rotate twice between two looks.
        let Some(mut newest) = OpenLog::open(&self.path)? else {
            return Ok(entries);
        };
        if let Some(old) = self.current.as_mut() {
            if old.id == newest.id {
                return Ok(entries);
            }
            // Renamed away, so complete: what was added since the read above, then the files
            // rotated after it.
            entries.extend(old.read_more()?);
            for mut newer in rotated_after(&self.path, self.max_file, old.id)? {
                entries.extend(newer.read_more()?);
            }
        }
        entries.extend(newest.read_more()?);
        self.current = Some(newest);
        Ok(entries)
    }
}

/// The rotated files of the log at `path` newer than the file `id`, oldest first (all of them
/// when that file was deleted: only the oldest ever is).
fn rotated_after(path: &Path, max_file: u32, id: (u64, u64)) -> io::Result<Vec<OpenLog>> {
    let mut newer = Vec::new();
    for n in 1..max_file {
        match OpenLog::open(&rotated_path(path, n))? {
            Some(log) if log.id == id => break,
            Some(log) => newer.push(log),
            None => {}
        }
    }
    newer.reverse();
    Ok(newer)
}

#[cfg(test)]
mod tests {
    use super::super::test_lines::{numbers, write_lines};
    use super::super::{LogConfig, LogDriver, LogWriter};
    use super::*;

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

    fn writer(path: &Path, max_file: u32) -> LogWriter {
        let config = LogConfig {
            driver: LogDriver::JsonFile,
            max_size: 1000,
            max_file,
        };
        LogWriter::open(path, config).unwrap()
    }

    #[test]
    fn a_follower_goes_on_through_rotations() {
        for max_file in [1, 2, 4] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c-json.log");
            let (first, mut follower) = Follower::open(&path, max_file).unwrap();
            assert!(first.is_empty());
            let mut log = writer(&path, max_file);
            let mut seen = Vec::new();
            // A poll after every line, then after every few lines (one rotation between two
            // polls at most: a file holds about 13 lines).
            for n in 0..100 {
                write_lines(&mut log, n..n + 1);
                seen.extend(numbers(&follower.poll().unwrap()));
            }
            for n in 100..300 {
                write_lines(&mut log, n..n + 1);
                if n % 10 == 0 {
                    seen.extend(numbers(&follower.poll().unwrap()));
                }
            }
            seen.extend(numbers(&follower.poll().unwrap()));
            assert_eq!(seen, (0..300).collect::<Vec<_>>(), "max-file={max_file}");
        }
    }

    #[test]
    fn a_follower_catches_up_over_several_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = writer(&path, 4);
        for n in 0..5 {
            write_lines(&mut log, n..n + 1);
        }
        let (first, mut follower) = Follower::open(&path, 4).unwrap();
        assert_eq!(numbers(&first), [0, 1, 2, 3, 4]);
        // Two rotations before the next poll: the file followed is now `.2`.
        for n in 5..30 {
            write_lines(&mut log, n..n + 1);
        }
        assert!(rotated_path(&path, 2).exists());
        assert_eq!(
            numbers(&follower.poll().unwrap()),
            (5..30).collect::<Vec<_>>()
        );
        assert!(follower.poll().unwrap().is_empty());
    }

    #[test]
    fn a_file_met_under_two_names_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = writer(&path, 3);
        for n in 0..20 {
            write_lines(&mut log, n..n + 1);
        }
        // As if the current file were rotated between the reader's opening it and `.1`.
        std::fs::hard_link(&path, rotated_path(&path, 2)).unwrap();
        let entries = read_log(&path, 3).unwrap();
        let mut sorted = numbers(&entries);
        sorted.dedup();
        assert_eq!(sorted.len(), entries.len());
    }
}
