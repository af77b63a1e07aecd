//! Sizes, ages and tables as Docker prints them (`4.26MB`, `2 weeks ago`, padded columns).

use std::time::Duration;

use rvm_runtime::escape;

/// Columns padded to their widest cell plus three spaces, as Docker's tabwriter does.
/// Cells are shown with their control characters escaped: they hold text from images and guests
/// (`ps`'s COMMAND, `top`'s processes).
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let rows: Vec<[String; N]> = rows
        .iter()
        .map(|row| {
            row.clone()
                .map(|cell| escape::controls_in_line(&cell).into_owned())
        })
        .collect();
    let rows = rows.as_slice();
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < N {
                let pad = widths[i] - cell.chars().count() + 3;
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Decimal units, three significant digits: `4.26MB`, `512B`.
pub fn size(bytes: u64) -> String {
    scaled(bytes, 1000.0, ["B", "kB", "MB", "GB", "TB", "PB"])
}

/// Binary units, three significant digits, as `docker stats` shows memory: `50MiB`, `1.5GiB`.
pub fn binary_size(bytes: u64) -> String {
    scaled(bytes, 1024.0, ["B", "KiB", "MiB", "GiB", "TiB", "PiB"])
}

/// `bytes` in the largest of `units` (each `step` times the last) that keeps it at least 1.
fn scaled(bytes: u64, step: f64, units: [&str; 6]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= step && unit + 1 < units.len() {
        value /= step;
        unit += 1;
    }
    format!("{}{}", significant(value, unit == 0), units[unit])
}

/// `value` with three significant digits and no trailing zeros (a whole number of bytes as is).
fn significant(value: f64, whole: bool) -> String {
    let decimals = if whole || value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// How long ago, in Docker's words: `Less than a second`, `About an hour`, `3 days`.
pub fn duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    match () {
        () if seconds < 1 => "Less than a second".to_owned(),
        () if seconds == 1 => "1 second".to_owned(),
        () if seconds < 60 => format!("{seconds} seconds"),
        () if minutes == 1 => "About a minute".to_owned(),
        () if minutes < 60 => format!("{minutes} minutes"),
        () if hours == 1 => "About an hour".to_owned(),
        () if hours < 48 => format!("{hours} hours"),
        () if days < 14 => format!("{days} days"),
        () if days < 90 => format!("{} weeks", days / 7),
        () if days < 730 => format!("{} months", days / 30),
        () => format!("{} years", days / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let rows = [["abc".to_owned(), "x".to_owned()]];
        let text = table(&["ID", "NAME"], &rows);
        assert_eq!(text, "ID    NAME\nabc   x\n");
    }

    #[test]
    fn table_cells_are_escaped_and_padded_as_shown() {
        let rows = [["sh -c \u{1b}[2J".to_owned(), "x".to_owned()]];
        let text = table(&["COMMAND", "NAME"], &rows);
        assert_eq!(text, "COMMAND         NAME\nsh -c \\x1b[2J   x\n");
    }

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(4_261_000), "4.26MB");
        assert_eq!(size(12_500), "12.5kB");
        assert_eq!(size(128_000_000), "128MB");
        assert_eq!(size(1_000_000_000), "1GB");
    }

    #[test]
    fn ages_read_like_dockers() {
        assert_eq!(duration(Duration::from_millis(10)), "Less than a second");
        assert_eq!(duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(duration(Duration::from_secs(3 * 3600)), "3 hours");
        assert_eq!(duration(Duration::from_secs(20 * 86400)), "2 weeks");
        assert_eq!(duration(Duration::from_secs(800 * 86400)), "2 years");
    }
}
