//! `rvm-cri`: a small CRI client (a crictl of our own) that drives containerd's CRI plugin over
//! its Unix socket, for rvm's end-to-end tests (`shim/tests/lab-cri.sh`).

mod cli;
mod commands;
mod connect;
mod output;
mod sandbox;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rvm-cri: error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Exec's output must be out before the exit status is.
    let _ = std::io::stdout().flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rvm-cri: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error's causes joined by ": " on one line, skipping a cause whose text its parent already
/// ends with (tonic's transport errors repeat their source).
fn one_line(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_skips_repeated_causes_and_folds_newlines() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let error = anyhow::Error::new(io)
            .context("transport error: gone")
            .context("cannot connect\nto the socket");
        assert_eq!(
            one_line(&error),
            "cannot connect to the socket: transport error: gone"
        );
    }
}
