//! The helper processes: `rvm-agent __rvm-helper init|exec CONFIG`, started by the engine in a
//! fresh single-threaded process (see `engine::spawn`), so that mount-namespace changes, setns
//! and the final execve never run inside the multi-threaded agent.

mod exec;
mod init;

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::engine::handoff::{self, HelperMessage, STATUS_FD};

/// Runs the helper named by `args` (the arguments after `__rvm-helper`). Never returns.
pub fn main(args: &[String]) -> ! {
    // SAFETY: the engine starts every helper with its status pipe at STATUS_FD and nothing else
    // owns that descriptor in this fresh process.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let (kind, config) = match args {
        [kind, config] => (kind.as_str(), Path::new(config)),
        _ => fail(&mut status, format!("helper: bad arguments {args:?}")),
    };
    match kind {
        "init" => init::run(status, config),
        "exec" => exec::run(status, config),
        other => fail(&mut status, format!("helper: unknown kind {other:?}")),
    }
}

fn read_config<T: DeserializeOwned>(status: &mut File, path: &Path) -> T {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) => fail(
            status,
            format!("read helper config {}: {e}", path.display()),
        ),
    };
    match serde_json::from_slice(&text) {
        Ok(config) => config,
        Err(e) => fail(
            status,
            format!("parse helper config {}: {e}", path.display()),
        ),
    }
}

/// Reports a setup failure and exits 1.
fn fail(status: &mut impl Write, message: String) -> ! {
    let _ = handoff::send(status, &HelperMessage::SetupFailed { message });
    std::process::exit(1)
}

/// Marks the status pipe close-on-exec, so that a successful execve shows as end of file.
fn close_status_on_exec() {
    // SAFETY: F_SETFD with FD_CLOEXEC only changes a descriptor flag.
    unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
}
