//! A compromised VMM, for tests only (debug builds; absent from release builds): with
//! `RVM_VMM_ATTACK=NAME` in its environment, the jailed VMM tries what an attacker who took
//! over the process would, and says what happened on stderr (the VMM's log).
//!
//! [`before_filter`] runs right after the jail is entered and tries every attack: each must be
//! refused by the jail alone (`attack NAME: denied (...)`). [`after_filter`] runs right after
//! the seccomp filter is installed and tries attack NAME once more: the filter must kill the
//! process before the call is made. A line `attack NAME: SUCCEEDED` is a broken defence.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;

/// The environment variable naming the attack [`after_filter`] makes.
pub const ATTACK_VAR: &str = "RVM_VMM_ATTACK";

/// Every attack, by name.
pub const ATTACKS: &[&str] = &[
    "open-shadow",
    "connect-containerd",
    "execve",
    "ptrace",
    "mount",
    "setuid-root",
    "unlink-host-file",
];

/// What one attack got.
fn attempt(name: &str) -> std::io::Result<()> {
    match name {
        "open-shadow" => std::fs::File::open("/etc/shadow").map(drop),
        "connect-containerd" => UnixStream::connect("/run/containerd/containerd.sock").map(drop),
        "execve" => {
            let program = c"/bin/sh";
            let argv = [program.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: the program path and both arrays are NUL-terminated and live across the
            // call; execve only returns on failure, and then it has changed nothing.
            unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            Err(std::io::Error::last_os_error())
        }
        "ptrace" => {
            // The host's init; in the VMM's PID namespace, pid 1 is the VMM itself.
            // SAFETY: PTRACE_ATTACH takes a pid and no memory.
            let attached = unsafe { libc::ptrace(libc::PTRACE_ATTACH, 1, 0, 0) };
            result(attached as i32)
        }
        "mount" => rustix::mount::mount(
            "none",
            "/",
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            c"",
        )
        .map_err(Into::into),
        "setuid-root" => {
            // SAFETY: setresuid takes three integers and no memory.
            result(unsafe { libc::setresuid(0, 0, 0) })
        }
        "unlink-host-file" => {
            let path = CString::from(c"/etc/passwd");
            // SAFETY: `path` is NUL-terminated and outlives the call.
            result(unsafe { libc::unlink(path.as_ptr()) })
        }
        other => Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("no attack named {other:?}"),
        )),
    }
}

fn result(code: i32) -> std::io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The attack `RVM_VMM_ATTACK` names, if the variable is set.
fn wanted() -> Option<String> {
    std::env::var(ATTACK_VAR).ok()
}

/// Tries every attack under the jail alone and reports each.
pub fn before_filter() {
    if wanted().is_none() {
        return;
    }
    for name in ATTACKS {
        match attempt(name) {
            Ok(()) => eprintln!("rvm-vmm: attack {name}: SUCCEEDED under the jail"),
            Err(error) => eprintln!("rvm-vmm: attack {name}: denied by the jail ({error})"),
        }
    }
}

/// Tries the attack `RVM_VMM_ATTACK` names under the jail and the filter; the filter is
/// expected to kill the process inside this call.
pub fn after_filter() {
    let Some(name) = wanted() else {
        return;
    };
    eprintln!("rvm-vmm: attack {name}: trying under the seccomp filter");
    let outcome = attempt(&name);
    eprintln!("rvm-vmm: attack {name}: SURVIVED the seccomp filter ({outcome:?})");
    std::process::exit(99);
}
