//! Numbered log lines for the reader's and writer's tests: written as `line NNNNN`, read back
//! as their numbers.

use super::{LogEntry, LogWriter, Stream};

/// Writes lines `lines` (about 80 bytes each in the json-file) as stdout.
pub fn write_lines(log: &mut LogWriter, lines: std::ops::Range<usize>) {
    for n in lines {
        log.write(Stream::Stdout, format!("line {n:05}\n").as_bytes())
            .unwrap();
    }
}

/// The numbers of entries written by [`write_lines`].
pub fn numbers(entries: &[LogEntry]) -> Vec<usize> {
    entries
        .iter()
        .map(|e| {
            e.log
                .trim_end()
                .trim_start_matches("line ")
                .parse()
                .unwrap()
        })
        .collect()
}
