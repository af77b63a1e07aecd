//! Starting a helper process from the multi-threaded agent: a raw clone(2) (optionally into new
//! namespaces) whose child only moves descriptors and calls execve, which is all that is safe
//! between fork and exec in a threaded process.
//!
//! A helper can also be born in an existing pid namespace (a pod's sandbox's): setns(2) with
//! CLONE_NEWPID changes only where the calling thread's *next* children are created, so a
//! short-lived thread joins the namespace, clones the helper and ends, taking that setting with
//! it; the agent's other threads are untouched.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sched::CloneFlags;

/// Descriptors below this are the helper's fixed slots (stdio, status, start).
const SLOTS: usize = 5;
/// Where sources are parked in the child before they are moved into their slots.
const PARK_BASE: RawFd = 100;

/// The namespaces a helper is born in.
#[derive(Debug, Clone, Copy)]
pub struct Namespaces<'a> {
    /// New namespaces of these kinds.
    pub new: CloneFlags,
    /// The existing pid namespace of this `/proc/PID/ns/pid` (then `new` has no CLONE_NEWPID).
    pub pid: Option<&'a Path>,
}

impl Namespaces<'_> {
    /// The agent's own namespaces.
    pub const AGENT: Namespaces<'static> = Namespaces {
        new: CloneFlags::empty(),
        pid: None,
    };
}

/// Starts `binary args...` with `fds[i]` as its fd `i` (`None` leaves that slot closed) in a
/// child created in `namespaces`. Returns the child's pid as the agent sees it.
pub fn spawn(
    binary: &Path,
    args: &[&str],
    fds: &[Option<RawFd>],
    namespaces: Namespaces<'_>,
) -> io::Result<i32> {
    let Namespaces {
        new: namespaces,
        pid: pid_namespace,
    } = namespaces;
    let Some(pid_namespace) = pid_namespace else {
        return spawn_here(binary, args, fds, namespaces);
    };
    if namespaces.contains(CloneFlags::CLONE_NEWPID) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a helper cannot both join a pid namespace and get a new one",
        ));
    }
    let namespace = File::open(pid_namespace)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", pid_namespace.display())))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(namespace.as_fd(), CloneFlags::CLONE_NEWPID).map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("join the pid namespace {}: {e}", pid_namespace.display()),
                    )
                })?;
                spawn_here(binary, args, fds, namespaces)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the spawning thread panicked")))
    })
}

/// [`spawn`] from the calling thread, into the pid namespace its children get.
fn spawn_here(
    binary: &Path,
    args: &[&str],
    fds: &[Option<RawFd>],
    namespaces: CloneFlags,
) -> io::Result<i32> {
    if fds.len() > SLOTS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many helper fds",
        ));
    }
    let invalid = |_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in helper argument");
    let path = CString::new(binary.as_os_str().as_bytes()).map_err(invalid)?;
    let mut argv_owned = vec![path.clone()];
    for arg in args {
        argv_owned.push(CString::new(*arg).map_err(invalid)?);
    }
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let env_owned: Vec<CString> = std::env::var("RVM_AGENT_LOG")
        .ok()
        .and_then(|v| CString::new(format!("RVM_AGENT_LOG={v}")).ok())
        .into_iter()
        .collect();
    let mut envp: Vec<*const libc::c_char> = env_owned.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut slots = [-1 as RawFd; SLOTS];
    for (slot, fd) in slots.iter_mut().zip(fds) {
        *slot = fd.unwrap_or(-1);
    }
    let flags = namespaces.bits() as libc::c_long | libc::SIGCHLD as libc::c_long;
    // SAFETY: a clone without CLONE_VM or a new stack behaves like fork: the child gets a copy
    // of the address space. The child runs only `exec_child`, which makes raw system calls
    // (fcntl, dup2, execve, _exit) on memory prepared above, no allocation or locking.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => exec_child(&slots, path.as_ptr(), argv.as_ptr(), envp.as_ptr()),
        pid => i32::try_from(pid).map_err(|_| io::Error::other("clone returned an invalid pid")),
    }
}

/// The child side: move `slots` into fds 0.., then execve. Never returns.
fn exec_child(
    slots: &[RawFd; SLOTS],
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    let mut parked = [-1 as RawFd; SLOTS];
    for (i, fd) in slots.iter().enumerate() {
        if *fd >= 0 {
            // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we were given; no memory involved.
            parked[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, PARK_BASE) };
            if parked[i] < 0 {
                // SAFETY: _exit ends this child immediately without running any destructor.
                unsafe { libc::_exit(120) };
            }
        }
    }
    for (i, fd) in parked.iter().enumerate() {
        let target = i as RawFd;
        if *fd >= 0 {
            // SAFETY: dup2 onto a fixed slot; it clears close-on-exec on the new descriptor.
            if unsafe { libc::dup2(*fd, target) } < 0 {
                // SAFETY: as above.
                unsafe { libc::_exit(121) };
            }
        } else {
            // SAFETY: closing a slot we leave empty; the descriptor table is this child's own.
            unsafe { libc::close(target) };
        }
    }
    // SAFETY: path, argv and envp are NUL-terminated strings and NULL-terminated arrays that
    // the parent built before clone and that stay valid in this copy of its memory.
    unsafe { libc::execve(path, argv, envp) };
    // SAFETY: as above.
    unsafe { libc::_exit(122) }
}
