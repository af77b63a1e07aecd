//! Turning the current (helper) process into the container process described by an OCI
//! Process: session and terminal, rlimits, user and groups, cwd, env, umask, capabilities,
//! no_new_privs and seccomp. Runs after the process is in the container's namespaces.
//!
//! Like runc, seccomp is loaded as late as it can be, so that a profile need allow few of the
//! set-up's own calls: with no_new_privs, after the uid and capability changes (then only the
//! helper's status write, its start read, the command lookup and execve follow); without it,
//! before them (loading a filter then needs CAP_SYS_ADMIN, which the uid change drops).

use std::path::Path;

use nix::unistd::{chdir, setgroups, setresgid, setresuid, setsid, Gid, Uid};
use oci_spec::runtime::Process;
use thiserror::Error;

use super::capabilities::{self, CapabilityError, CapabilitySets};
use super::rlimits::{self, RlimitError};
use super::seccomp::{self, SeccompError, SeccompPolicy};
use super::user::{Accounts, UserError};

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{0}")]
    User(#[from] UserError),
    #[error("chdir to cwd ({cwd:?}) set in config.json failed: {source}")]
    Cwd { cwd: String, source: nix::Error },
    #[error(transparent)]
    Rlimit(#[from] RlimitError),
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("{what}: {source}")]
    Syscall {
        what: &'static str,
        source: nix::Error,
    },
}

fn syscall(what: &'static str) -> impl FnOnce(nix::Error) -> SetupError {
    move |source| SetupError::Syscall { what, source }
}

/// The final environment: the spec's, plus HOME from passwd when unset.
pub fn environment(process: &Process, home: &str) -> Vec<String> {
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", super::command::DEFAULT_PATH));
    }
    env
}

/// The user the process asks for as a Docker-style string: the spec's `username` when set (the
/// host passes `-u` through unchanged), else "uid:gid".
fn user_spec(process: &Process) -> String {
    let user = process.user();
    match user.username() {
        Some(name) if !name.is_empty() => name.clone(),
        _ => format!("{}:{}", user.uid(), user.gid()),
    }
}

/// Sets the process up (seccomp as late as it can be); returns its environment.
pub fn setup(
    process: &Process,
    terminal: bool,
    seccomp: &SeccompPolicy,
) -> Result<Vec<String>, SetupError> {
    let filters = seccomp.filters()?;
    setsid().map_err(syscall("setsid"))?;
    if terminal {
        // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is the pty slave we were given.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(SetupError::Syscall {
                what: "make the pty the controlling terminal",
                source: nix::Error::last(),
            });
        }
    }
    rlimits::apply(process.rlimits().as_deref().unwrap_or_default())?;
    let mut identity = Accounts::read(Path::new("/")).resolve(&user_spec(process))?;
    for gid in process.user().additional_gids().iter().flatten() {
        if !identity.groups.contains(gid) {
            identity.groups.push(*gid);
        }
    }
    let env = environment(process, &identity.home);
    let cwd = process.cwd().display().to_string();
    chdir(process.cwd()).map_err(|source| SetupError::Cwd { cwd, source })?;
    if let Some(umask) = process.user().umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    let caps = CapabilitySets::from_spec(process.capabilities().as_ref())?;
    capabilities::drop_bounding(&caps)?;
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    if no_new_privs {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(SetupError::Syscall {
                what: "set no_new_privs",
                source: nix::Error::last(),
            });
        }
    }
    if !no_new_privs {
        seccomp::load_all(&filters)?;
    }
    // Keep the permitted set across the uid change; the sets are then cut to the spec's.
    // SAFETY: PR_SET_KEEPCAPS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(SetupError::Syscall {
            what: "set keepcaps",
            source: nix::Error::last(),
        });
    }
    let groups: Vec<Gid> = identity.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).map_err(syscall("setgroups"))?;
    let gid = Gid::from_raw(identity.gid);
    setresgid(gid, gid, gid).map_err(syscall("setresgid"))?;
    let uid = Uid::from_raw(identity.uid);
    setresuid(uid, uid, uid).map_err(syscall("setresuid"))?;
    capabilities::apply(&caps)?;
    if no_new_privs {
        seccomp::load_all(&filters)?;
    }
    Ok(env)
}
