//! Text from a guest or an image, made safe to print on the user's terminal: control characters
//! (C0, DEL and C1: ESC, which starts ANSI sequences that set the window title, clear the
//! screen or rewrite what was printed before, and U+009B, CSI in one character) are shown as
//! escapes, as Go's `strconv.Quote` writes them (`\x1b`, `\u009b`), which is what Docker shows
//! in `docker ps`. Used for error messages (an agent's error, the console tail of a VM that
//! failed to boot) and table cells (`ps`'s COMMAND from the image, `top`'s processes); the
//! container's own output (`rvm logs`, attached streams) stays raw bytes, as Docker writes it.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with its C0, DEL and C1 characters (`char::is_control`) escaped, but newlines and tabs
/// with `keep_lines`.
fn escape(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let kept = |c: char| keep_lines && (c == '\n' || c == '\t');
    if !text.chars().any(|c| c.is_control() && !kept(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !c.is_control() || kept(c) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\n' => out.write_str("\\n"),
            '\t' => out.write_str("\\t"),
            '\r' => out.write_str("\\r"),
            c if u32::from(c) < 0x80 => write!(out, "\\x{:02x}", u32::from(c)),
            c => write!(out, "\\u{:04x}", u32::from(c)),
        };
    }
    Cow::Owned(out)
}

/// `text` with its control characters escaped, newlines and tabs kept: for messages.
pub fn controls(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// `text` with every control character escaped, newlines and tabs too: for one line, a table
/// cell.
pub fn controls_in_line(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_sequences_are_shown_not_run() {
        let title = "\x1b]0;title\x07rest";
        assert_eq!(controls(title), "\\x1b]0;title\\x07rest");
        assert_eq!(controls("\x1b[2J"), "\\x1b[2J");
        assert_eq!(controls("a\u{9b}31mb"), "a\\u009b31mb");
        assert_eq!(controls("del\x7f"), "del\\x7f");
        assert_eq!(controls("cr\rover"), "cr\\rover");
    }

    #[test]
    fn messages_keep_lines_and_tabs_and_cells_do_not() {
        assert_eq!(controls("one\n\ttwo"), "one\n\ttwo");
        assert_eq!(controls_in_line("one\n\ttwo"), "one\\n\\ttwo");
        assert_eq!(controls_in_line("sh -c \x1b[2J"), "sh -c \\x1b[2J");
    }

    #[test]
    fn plain_text_is_untouched() {
        for text in [
            "",
            "hello",
            "/bin/sh -c 'echo …'",
            "naïve ünïcode ✓",
            "back\\slash",
        ] {
            assert!(matches!(controls(text), Cow::Borrowed(t) if t == text));
            assert!(matches!(controls_in_line(text), Cow::Borrowed(t) if t == text));
        }
    }
}
