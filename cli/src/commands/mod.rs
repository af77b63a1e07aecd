//! One module per `rvm` command; `main.rs` only parses and dispatches. `common` and `container`
//! hold what the container commands share; `terminal` the caller's terminal.

pub mod common;
pub mod container;
pub mod create;
pub mod exec;
pub mod human;
pub mod images;
pub mod inspect;
pub mod kill;
pub mod load;
pub mod logs;
pub mod monitor;
pub mod pause;
pub mod port;
pub mod progress;
pub mod prune;
pub mod ps;
pub mod pull;
pub mod rename;
pub mod restart;
pub mod rm;
pub mod rmi;
pub mod run;
pub mod start;
pub mod stats;
pub mod stop;
pub mod tag;
pub mod terminal;
pub mod top;
pub mod volume;
pub mod wait;

use std::process::ExitCode;

use rvm_protocol::exit;
use rvm_runtime::escape;

/// Prints `err` the way Docker prints an engine error and returns exit status 125.
pub fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("rvm: Error response from daemon: {}", message(err));
    exit_code(exit::RUNTIME_ERROR)
}

/// `code` as `rvm`'s exit status (the container's own, 125, 126, 127, 1...); one that is no
/// status (outside 0..=255) is reported as an error of rvm itself.
pub fn exit_code(code: i32) -> ExitCode {
    match u8::try_from(code) {
        Ok(status) => ExitCode::from(status),
        // 125 is a status, so this ends here.
        Err(_) => exit_code(exit::RUNTIME_ERROR),
    }
}

/// The error and its causes on one line, `a: b: c`, skipping a cause whose text the message
/// already carries (our library errors include their source in their own message).
pub fn message(err: &anyhow::Error) -> String {
    escape::controls(&chain(err)).into_owned()
}

/// The error's causes on one line, each once.
fn chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_a_guest_are_escaped_once_each() {
        let agent = anyhow::anyhow!("exec failed: \u{1b}[2J\u{1b}]0;title\u{7}\u{9b}31m");
        let err = agent.context("cannot start the container");
        assert_eq!(
            message(&err),
            "cannot start the container: exec failed: \\x1b[2J\\x1b]0;title\\x07\\u009b31m"
        );
    }
}
