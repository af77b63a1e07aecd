//! Starting a program in new namespaces as a direct child: `clone3` with new mount, PID, IPC
//! and UTS namespaces, straight into a cgroup (`CLONE_INTO_CGROUP`), with a pidfd
//! (`CLONE_PIDFD`), then `execve`. The standard library's `Command` cannot do this: a program
//! that only `unshare`s a PID namespace before `exec` is not in it itself and cannot start
//! threads, and moving it into a cgroup after the start leaves a window.
//!
//! Between `clone3` and `execve` the child is a copy of a multi-threaded process with one
//! thread: it makes only async-signal-safe system calls on data prepared before the clone (no
//! allocation, no lock), and reports a failure through a close-on-exec pipe as an errno.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `clone3`'s flags, from `linux/sched.h`.
const CLONE_NEWNS: u64 = 0x0002_0000;
const CLONE_PIDFD: u64 = 0x0000_1000;
const CLONE_NEWUTS: u64 = 0x0400_0000;
const CLONE_NEWIPC: u64 = 0x0800_0000;
const CLONE_NEWPID: u64 = 0x2000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `linux/sched.h` (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What the child is started with.
#[derive(Debug)]
pub struct Start<'a> {
    pub program: &'a Path,
    pub args: &'a [OsString],
    /// Its whole environment.
    pub env: Vec<(OsString, OsString)>,
    /// Its stdout and stderr.
    pub output: &'a File,
    /// A network namespace to join before `execve`.
    pub netns: Option<&'a File>,
    /// A cgroup v2 directory, open, to start in.
    pub cgroup: Option<&'a File>,
    /// Kept open in the child as descriptor 3 (a lock it holds for its life).
    pub keep: Option<&'a File>,
}

/// A started child: its pid in the caller's PID namespace and a pidfd for it.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// A failure to start the child, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0:?} has a NUL byte")]
    Nul(OsString),
    #[error("cannot make the start-up pipe: {0}")]
    Pipe(std::io::Error),
    #[error("clone3 failed: {0}")]
    Clone(std::io::Error),
    #[error("in the new child, before exec: {step} failed: {source}")]
    Child {
        step: &'static str,
        source: std::io::Error,
    },
}

/// The child's steps, numbered for its error report.
const STEPS: [&str; 6] = [
    "joining the network namespace",
    "redirecting stdin",
    "redirecting stdout and stderr",
    "keeping the lock descriptor",
    "setting the parent-death signal",
    "execve",
];

fn c_string(text: &OsStr) -> Result<CString, SpawnError> {
    CString::new(text.as_bytes()).map_err(|_| SpawnError::Nul(text.to_owned()))
}

/// Starts `start.program` as described; returns once it has called `execve` successfully.
pub fn spawn(start: &Start<'_>) -> Result<Spawned, SpawnError> {
    let program = c_string(start.program.as_os_str())?;
    let mut argv = vec![program.clone()];
    for arg in start.args {
        argv.push(c_string(arg)?);
    }
    let mut envp = Vec::with_capacity(start.env.len());
    for (key, value) in &start.env {
        let mut pair = key.clone();
        pair.push("=");
        pair.push(value);
        envp.push(c_string(&pair)?);
    }
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|arg| arg.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp
        .iter()
        .map(|pair| pair.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let null = File::open("/dev/null").map_err(SpawnError::Pipe)?;
    let (report_read, report_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|errno| SpawnError::Pipe(errno.into()))?;
    let child = ChildPlan {
        program: program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        stdin: null.as_raw_fd(),
        output: start.output.as_raw_fd(),
        netns: start.netns.map(AsRawFd::as_raw_fd),
        keep: start.keep.map(AsRawFd::as_raw_fd),
        report: report_write.as_raw_fd(),
    };
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(cgroup) = start.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup.as_raw_fd() as u64;
    }
    // SAFETY: clone3 with a valid, fully initialised clone_args of the size passed and no
    // CLONE_VM: the child gets a copy of this process's memory and returns here on the same
    // (copied) stack, like fork. `pidfd` is a live local the kernel writes to in the parent.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: this is the new child: `child` points at data the clone copied, and
        // `run_child` only makes async-signal-safe calls and never returns.
        unsafe { run_child(&child) }
    }
    if pid < 0 {
        return Err(SpawnError::Clone(std::io::Error::last_os_error()));
    }
    // SAFETY: CLONE_PIDFD made the kernel store a new descriptor, owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(report_write);
    let mut report = [0u8; 8];
    let mut got = 0;
    let mut reader = File::from(report_read);
    while got < report.len() {
        match reader.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let pid = u32::try_from(pid).map_err(|_| SpawnError::Clone(std::io::Error::other("pid")))?;
    if got == report.len() {
        let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]) as usize;
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        reap(&pidfd);
        return Err(SpawnError::Child {
            step: STEPS.get(step).copied().unwrap_or("an unknown step"),
            source: std::io::Error::from_raw_os_error(errno),
        });
    }
    Ok(Spawned { pid, pidfd })
}

/// Waits for a child that failed before exec, so it leaves no zombie.
fn reap(pidfd: &OwnedFd) {
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(pidfd)),
        rustix::process::WaitIdOptions::EXITED,
    );
}

/// Everything the child needs, as raw values prepared before the clone.
struct ChildPlan {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdin: RawFd,
    output: RawFd,
    netns: Option<RawFd>,
    keep: Option<RawFd>,
    report: RawFd,
}

/// The child between clone3 and execve.
///
/// # Safety
/// Only to be called in the child of a clone without CLONE_VM, with `plan`'s pointers valid
/// (they point into the parent's memory, which the child has a copy of).
unsafe fn run_child(plan: &ChildPlan) -> ! {
    // Every call below is a plain, async-signal-safe system call on integers or on pointers
    // prepared before the clone; none allocates or takes a lock.
    let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: initialises the set `none` provides room for.
    unsafe { libc::sigemptyset(none.as_mut_ptr()) };
    // SAFETY: `none` was initialised just above. Signals blocked in the parent's thread would
    // otherwise stay blocked across exec.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut()) };
    // SAFETY: restores the default action of SIGPIPE (Rust programs ignore it); no memory.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if let Some(fd) = plan.netns {
        // SAFETY: setns takes two integers; a bad descriptor fails, reported below.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
            fail(plan.report, 0);
        }
    }
    // SAFETY: dup2 takes two integers.
    if unsafe { libc::dup2(plan.stdin, 0) } < 0 {
        fail(plan.report, 1);
    }
    // SAFETY: as above.
    if unsafe { libc::dup2(plan.output, 1) } < 0 {
        fail(plan.report, 2);
    }
    // SAFETY: as above.
    if unsafe { libc::dup2(plan.output, 2) } < 0 {
        fail(plan.report, 2);
    }
    if let Some(fd) = plan.keep {
        // SAFETY: as above.
        if unsafe { libc::dup2(fd, 3) } < 0 {
            fail(plan.report, 3);
        }
        // dup2 onto itself keeps close-on-exec: clear it explicitly.
        // SAFETY: F_SETFD takes an integer flag argument.
        if unsafe { libc::fcntl(3, libc::F_SETFD, 0) } != 0 {
            fail(plan.report, 3);
        }
    }
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; the other arguments are unused.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        fail(plan.report, 4);
    }
    // SAFETY: the caller guarantees the program, argv and envp pointers: NUL-terminated
    // strings and NULL-terminated arrays of them; execve returns only on failure.
    unsafe { libc::execve(plan.program, plan.argv, plan.envp) };
    fail(plan.report, 5)
}

/// Writes step `index` and errno to the report pipe, then exits 127 without running any of the
/// parent's exit handlers. Async-signal-safe; for the child only.
fn fail(report: RawFd, index: usize) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut message = [0u8; 8];
    message[..4].copy_from_slice(&(index as u32).to_ne_bytes());
    message[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writes 8 bytes from a live array to a descriptor; a closed one fails harmlessly.
    unsafe { libc::write(report, message.as_ptr().cast(), message.len()) };
    // SAFETY: _exit ends the process at once; nothing is borrowed across it.
    unsafe { libc::_exit(127) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn wait(spawned: &Spawned) -> i32 {
        let status = rustix::process::waitid(
            rustix::process::WaitId::PidFd(spawned.pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        )
        .unwrap()
        .unwrap();
        status.exit_status().unwrap()
    }

    fn needs_root() -> bool {
        let missing =
            (!rustix::process::geteuid().is_root()).then(|| "new namespaces need root".to_owned());
        crate::sandbox::prerequisite::prerequisite(missing)
    }

    #[test]
    fn the_child_is_pid_1_of_new_namespaces_with_the_given_environment() {
        if !needs_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out");
        let output = File::create(&out_path).unwrap();
        let script = "echo pid=$$ var=$RVM_TEST_VAR; \
                      [ \"$(readlink /proc/self/ns/mnt)\" != \"$HOST_MNT\" ] && echo own-mnt";
        let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let args = [OsString::from("-c"), OsString::from(script)];
        let spawned = spawn(&Start {
            program: Path::new("/bin/sh"),
            args: &args,
            env: vec![
                ("RVM_TEST_VAR".into(), "x y".into()),
                ("HOST_MNT".into(), host_mnt.into_os_string()),
            ],
            output: &output,
            netns: None,
            cgroup: None,
            keep: None,
        })
        .unwrap();
        assert!(spawned.pid > 1);
        assert_eq!(wait(&spawned), 0);
        let text = std::fs::read_to_string(&out_path).unwrap();
        assert_eq!(text, "pid=1 var=x y\nown-mnt\n");
    }

    #[test]
    fn a_failed_exec_is_reported_with_its_errno() {
        if !needs_root() {
            return;
        }
        let output = tempfile::tempfile().unwrap();
        let err = spawn(&Start {
            program: Path::new("/nonexistent/rvm-vmm"),
            args: &[],
            env: Vec::new(),
            output: &output,
            netns: None,
            cgroup: None,
            keep: None,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "in the new child, before exec: execve failed: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn the_kept_descriptor_is_3_in_the_child() {
        if !needs_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let kept = File::create(dir.path().join("lock")).unwrap();
        let out_path = dir.path().join("out");
        let output = File::create(&out_path).unwrap();
        let args = [
            OsString::from("-c"),
            OsString::from("readlink /proc/self/fd/3"),
        ];
        let spawned = spawn(&Start {
            program: Path::new("/bin/sh"),
            args: &args,
            env: Vec::new(),
            output: &output,
            netns: None,
            cgroup: None,
            keep: Some(&kept),
        })
        .unwrap();
        assert_eq!(wait(&spawned), 0);
        let text = std::fs::read_to_string(&out_path).unwrap();
        assert!(text.trim_end().ends_with("/lock"), "{text}");
    }
}
