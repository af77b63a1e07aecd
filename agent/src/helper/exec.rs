//! The exec helper: joins a running container's cgroup and namespaces, forks the process (which
//! lands in the container's pid namespace), reports its pid, waits for it and reports how it
//! ended.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sched::{setns, CloneFlags};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe2, ForkResult};

use super::{close_status_on_exec, fail, read_config};
use crate::engine::command::Command;
use crate::engine::handoff::{self, ExecConfig, HelperMessage};
use crate::engine::process_setup;

/// The namespaces an exec joins, mount last (it changes how /proc resolves).
const NAMESPACES: [(&str, CloneFlags); 4] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn join(config: &ExecConfig) -> Result<(), String> {
    let procs = config.cgroup.join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("join cgroup {}: {e}", procs.display()))?;
    let mut files = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{}/ns/{name}", config.init_pid);
        let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        files.push((path, file, flag));
    }
    for (path, file, flag) in &files {
        setns(file.as_fd(), *flag).map_err(|e| format!("setns {path}: {e}"))?;
    }
    Ok(())
}

fn child(mut status: File, config: &ExecConfig, ready: OwnedFd) -> ! {
    let env = match process_setup::setup(&config.process, config.terminal, &config.seccomp) {
        Ok(env) => env,
        Err(e) => fail(&mut status, e.to_string()),
    };
    let args = config.process.args().clone().unwrap_or_default();
    close_status_on_exec();
    let failure = match Command::prepare(&args, &env) {
        Ok(command) => command.exec(),
        Err(failure) => failure,
    };
    let _ = handoff::send(
        &mut status,
        &HelperMessage::ExecFailed {
            failure: failure.clone(),
        },
    );
    drop(ready);
    std::process::exit(failure.status)
}

/// Points fds 0-2 of the helper at /dev/null, so that only the process holds its stdio.
fn release_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = dup2_stdin(&null);
        let _ = dup2_stdout(&null);
        let _ = dup2_stderr(&null);
    }
}

pub(super) fn run(mut status: File, config_path: &Path) -> ! {
    let config: ExecConfig = read_config(&mut status, config_path);
    if let Err(message) = join(&config) {
        fail(&mut status, message);
    }
    // Closed (end of file) when the child execs or exits.
    let (mut ready_read, ready_write) = match pipe2(OFlag::O_CLOEXEC) {
        Ok((r, w)) => (File::from(r), w),
        Err(e) => fail(&mut status, format!("create exec pipe: {e}")),
    };
    // SAFETY: the helper is single-threaded (a fresh exec of the agent binary that has started
    // no threads), so the child may run arbitrary code.
    match unsafe { fork() } {
        Err(e) => fail(&mut status, format!("fork the exec process: {e}")),
        Ok(ForkResult::Child) => {
            drop(ready_read);
            child(status, &config, ready_write)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ready_write);
            release_stdio();
            let mut rest = Vec::new();
            let _ = ready_read.read_to_end(&mut rest);
            let _ = handoff::send(
                &mut status,
                &HelperMessage::Started {
                    pid: child.as_raw(),
                },
            );
            let raw_status = loop {
                let mut raw = 0;
                // SAFETY: waitpid writes the status into `raw`, a live local.
                let rc = unsafe { libc::waitpid(child.as_raw(), &mut raw, 0) };
                if rc == child.as_raw() {
                    break raw;
                }
                if nix::Error::last() != nix::Error::EINTR {
                    break 255 << 8;
                }
            };
            let _ = handoff::send(&mut status, &HelperMessage::Exited { raw_status });
            std::process::exit(0)
        }
    }
}
