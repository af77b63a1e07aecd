//! The VMM's own seccomp filter: once the VM is built and before the guest runs, every thread of
//! the process may make only the system calls that running a VM needs. Everything else kills
//! the process (SIGSYS, after the handler here names the call): opening files, executing
//! programs, creating sockets or connecting them, removing files, mounting, tracing, forking.
//!
//! It is enforced by default (`--seccomp off` and `log` are for debugging). Two filters are
//! installed, both with TSYNC so that they cover the threads that exist and every thread
//! started later (vCPUs, device workers, the API thread):
//!
//! - the allowlist ([`rules`]): memory, threads, signals, time, I/O on descriptors opened
//!   before the filter (console, disks, TAP, eventfds, epoll, the listening sockets and the
//!   connections accepted on them, images received over the API; `ftruncate` for the console
//!   and stderr logs kept to size), timerfds, getrandom. Some
//!   calls only with given arguments:
//!   - `clone` only with the flags glibc's `pthread_create` passes (a thread, never a process);
//!   - `tgkill` only to this process (the vCPU kick, `raise`);
//!   - `ioctl` only the requests made after the filter is installed ([`allowed_ioctls`]);
//!   - `prctl` only PR_SET_NAME (naming threads).
//!
//!   No `socket`, `connect`, `unlink` or `unlinkat`: every socket is made before the filter,
//!   the vsock refuses guest-initiated connections instead of connecting for them, and the
//!   socket files stay when the VMM ends (the runtime removes their directory).
//! - a second, small one that makes `clone3` fail with ENOSYS, so that glibc falls back to
//!   `clone`, whose flags the allowlist can inspect (`clone3` passes them behind a pointer).
//!   The allowlist allows `clone3`: of two filters' verdicts the stricter wins, and ERRNO is
//!   stricter than ALLOW but not than TRAP.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use kvm_bindings::{kvm_regs, kvm_sregs};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::signal::register_signal_handler;
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr};

/// What to do about the filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// A system call outside the allowlist kills the process (SIGSYS).
    #[default]
    Enforce,
    /// Such a call is allowed and logged by the kernel (audit log, `dmesg`): for finding what a
    /// new code path needs.
    Log,
    /// No filter.
    Off,
}

impl FromStr for SeccompMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "enforce" => Ok(Self::Enforce),
            "log" => Ok(Self::Log),
            "off" => Ok(Self::Off),
            other => Err(format!("{other:?}: expected enforce, log or off")),
        }
    }
}

/// Errors while building or installing the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules do not make a filter (a bug in this module).
    #[error("cannot build the VMM's seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("cannot install the VMM's seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
    /// The handler that reports a blocked call could not be installed.
    #[error("cannot install the SIGSYS handler of the seccomp filter: {0}")]
    SigsysHandler(vmm_sys_util::errno::Error),
}

/// Offset of `si_syscall` in the kernel's `siginfo_t` for SIGSYS on x86_64: after `si_signo`,
/// `si_errno`, `si_code` (and padding to 16 bytes) comes `_sigsys { _call_addr: *void,
/// _syscall: int, _arch: uint }`.
const SI_SYSCALL_OFFSET: usize = 24;

/// SIGSYS handler of [`SeccompMode::Enforce`]: writes which system call the filter blocked to
/// stderr, then makes the filter kill the process with SIGSYS. Uses only calls the filter allows
/// (write, rt_sigaction) besides that last one, and no allocation or lock.
extern "C" fn report_blocked_call(
    _: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let syscall = if info.is_null() {
        -1
    } else {
        let field = info
            .cast::<u8>()
            .wrapping_add(SI_SYSCALL_OFFSET)
            .cast::<i32>();
        // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler; for a SIGSYS
        // raised by seccomp its union holds `_sigsys`, whose `_syscall` int sits at
        // SI_SYSCALL_OFFSET, so `field` points at 4 initialised bytes inside it.
        unsafe { std::ptr::read_unaligned(field) }
    };
    let (digits, digit_count) = decimal(syscall);
    let mut message = [0u8; 128];
    let mut len = 0;
    for part in [
        &b"rvm-vmm: seccomp: system call "[..],
        &digits[..digit_count],
        &b" is not in the VMM's allowlist; stopping (run with --seccomp log to find its caller)\n"
            [..],
    ] {
        let end = (len + part.len()).min(message.len());
        message[len..end].copy_from_slice(&part[..end - len]);
        len = end;
    }
    write_stderr(&message[..len]);
    if TRACE_CALLER.load(Ordering::Relaxed) {
        report_caller(context.cast());
    }
    // SAFETY: restoring SIGSYS's default action is async-signal-safe and affects no memory.
    unsafe { libc::signal(libc::SIGSYS, libc::SIG_DFL) };
    // Not raise(SIGSYS): a jailed VMM is PID 1 of its PID namespace, and the kernel drops a
    // default-action signal that PID 1 sends itself. A call the filter traps makes the kernel
    // force SIGSYS, blocked or not, with its default action, which kills even PID 1.
    // SAFETY: a system call without arguments that the allowlist leaves out; the filter stops
    // it before it runs.
    unsafe { libc::syscall(DEATH_CALL) };
    // Unreachable under the filter; a plain exit if the handler were ever called without it.
    // SAFETY: _exit ends the process at once.
    unsafe { libc::_exit(128 + libc::SIGSYS) };
}

/// The system call the SIGSYS handler makes to die of the filter: never in the allowlist.
const DEATH_CALL: libc::c_long = libc::SYS_getppid;

/// Set from `RVM_VMM_SECCOMP_TRACE` when the filter is installed: the SIGSYS handler then also
/// writes the blocked call's instruction pointer and the stack words that look like return
/// addresses into the binary, with the address of a known function to compute the load base
/// (`addr2line -f -C -e rvm-vmm ADDRESS-BASE`, BASE from `nm rvm-vmm | grep report_blocked_call`).
static TRACE_CALLER: AtomicBool = AtomicBool::new(false);

/// Stack words examined above the stack pointer of the blocked call.
const TRACE_WORDS: usize = 64;
/// How far from a known function a stack word may be to count as a return address.
const TRACE_TEXT_SPAN: u64 = 256 << 20;

/// Writes `bytes` to stderr with write(2), which is async-signal-safe.
fn write_stderr(bytes: &[u8]) {
    // SAFETY: `bytes` is a valid, initialised slice for the length passed.
    unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
}

/// Writes `value` in hexadecimal to stderr, without allocating.
fn write_hex(value: u64) {
    let mut text = *b"0x0000000000000000";
    for (i, byte) in text[2..].iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * i)) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    write_stderr(&text);
}

/// The diagnostics of [`TRACE_CALLER`], from the signal's saved context.
fn report_caller(context: *const libc::ucontext_t) {
    if context.is_null() {
        return;
    }
    // SAFETY: for a SA_SIGINFO handler the kernel passes a valid ucontext_t as the third
    // argument; reading its saved registers is a plain memory read.
    let registers = unsafe { (*context).uc_mcontext.gregs };
    let rip = registers[libc::REG_RIP as usize] as u64;
    let rsp = registers[libc::REG_RSP as usize] as u64;
    let known = report_blocked_call as *const () as u64;
    write_stderr(b"rvm-vmm: seccomp: blocked at rip ");
    write_hex(rip);
    write_stderr(b"; report_blocked_call is at ");
    write_hex(known);
    write_stderr(b"; return addresses on the stack:");
    for index in 0..TRACE_WORDS {
        let address = rsp.wrapping_add(8 * index as u64) as *const u64;
        // SAFETY: a diagnostic read of the interrupted thread's stack, opted into with
        // RVM_VMM_SECCOMP_TRACE; TRACE_WORDS words above the stack pointer lie in the
        // thread's stack, whose outermost frames take more room than that.
        let word = unsafe { std::ptr::read_volatile(address) };
        if word.abs_diff(known) < TRACE_TEXT_SPAN {
            write_stderr(b" ");
            write_hex(word);
        }
    }
    write_stderr(b"\n");
}

/// `value` in decimal ASCII: the digits and their count, without allocating.
fn decimal(value: i32) -> ([u8; 12], usize) {
    let mut digits = [0u8; 12];
    let mut out = [0u8; 12];
    let mut n = i64::from(value).unsigned_abs();
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    if value < 0 {
        out[0] = b'-';
        len = 1;
    }
    for i in (0..count).rev() {
        out[len] = digits[i];
        len += 1;
    }
    (out, len)
}

/// System calls allowed with any arguments.
const ALLOWED: &[libc::c_long] = &[
    // Memory: thread stacks, allocator.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    // Threads: vCPUs, device workers started when the guest's driver activates a device.
    // `clone` is filtered (thread flags only) in `rules`; `clone3` is allowed here so that the
    // clone3 filter's ENOSYS wins over this filter's verdict.
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Signals: the vCPU kick, stop signals through a signalfd.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Time.
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    // File descriptors already open: console, disks, TAP, eventfds, epoll, sockets, and the
    // disk images the API receives (sized with statx/fstat or lseek, checked with fcntl).
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    // The bounded log files are cut to size (`logging/bounded.rs`). No power that `fallocate`
    // (discard, write-zeroes) does not already give over the same descriptors.
    libc::SYS_ftruncate,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    libc::SYS_fcntl,
    libc::SYS_close,
    libc::SYS_dup,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // The vsock muxer's timer (made when the guest's driver activates the device).
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    // Connections accepted on the Unix sockets bound before the filter: the hybrid vsock's and
    // the host API's (`--api`: recvmsg takes the images' descriptors as SCM_RIGHTS);
    // getsockopt reads their peer's credentials (SO_PEERCRED).
    libc::SYS_accept4,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    // virtio-rng; the standard library's hash map keys on new threads.
    libc::SYS_getrandom,
];

/// KVM's ioctl type.
const KVMIO: libc::c_uint = 0xAE;
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);

/// The `clone` flags of glibc's `pthread_create` (`create_thread` in
/// `sysdeps/unix/sysv/linux/createthread.c`): a thread sharing everything, never a process.
const THREAD_CLONE_FLAGS: libc::c_int = libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID;

/// Every `ioctl` request made once the filter is installed (`Machine::run` installs it after
/// the vCPUs are created and configured, the devices registered with KVM, the TAP opened and
/// its vnet header size set):
/// - KVM_RUN: the vCPU run loop (`vstate/vcpu.rs`, `Vcpu::run_loop`);
/// - KVM_GET_REGS, KVM_GET_SREGS: the registers logged on a triple fault
///   (`vstate/vcpu.rs`, `Vcpu::log_triple_fault`);
/// - TUNSETOFFLOAD: virtio-net's activation by the guest's driver, giving the TAP the offloads
///   the driver accepted (`devices/virtio/net/tap.rs`, `Tap::set_offload`);
/// - FIONBIO: connections accepted on the vsock's and the API's sockets made non-blocking
///   (the standard library's `set_nonblocking`, in `devices/virtio/vsock/muxer.rs` and
///   `api/server.rs`).
///
/// Not here: KVM_IRQFD and KVM_IOEVENTFD, made when a device is added (`Machine::
/// add_virtio_device`), before the filter; device activation and reset make no KVM ioctl.
fn allowed_ioctls() -> [u64; 5] {
    [
        KVM_RUN(),
        KVM_GET_REGS(),
        KVM_GET_SREGS(),
        libc::TUNSETOFFLOAD,
        libc::FIONBIO,
    ]
}

/// The allowlist as seccompiler rules, for the process whose pid is `pid`.
fn rules(pid: u32) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let ioctls = allowed_ioctls()
        .into_iter()
        .map(|request| arg_equals(1, request))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctls);
    rules.insert(
        libc::SYS_clone,
        vec![arg_equals(0, THREAD_CLONE_FLAGS as u32 as u64)?],
    );
    // Signals to a thread of this process only: tgkill's first argument is the thread group.
    rules.insert(libc::SYS_tgkill, vec![arg_equals(0, u64::from(pid))?]);
    rules.insert(
        libc::SYS_prctl,
        vec![arg_equals(0, libc::PR_SET_NAME as u64)?],
    );
    Ok(rules)
}

/// A rule matching when argument `index` (its low 32 bits) equals `value`.
fn arg_equals(index: u8, value: u64) -> Result<SeccompRule, SeccompError> {
    let condition = SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?;
    Ok(SeccompRule::new(vec![condition])?)
}

/// The allowlist for `mode` as a BPF program (`None` for [`SeccompMode::Off`]).
pub fn program(mode: SeccompMode) -> Result<Option<BpfProgram>, SeccompError> {
    let mismatch = match mode {
        // Trap, not kill: the SIGSYS handler names the call, then the process dies of SIGSYS.
        SeccompMode::Enforce => SeccompAction::Trap,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Off => return Ok(None),
    };
    let filter = SeccompFilter::new(
        rules(std::process::id())?,
        mismatch,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(Some(BpfProgram::try_from(filter)?))
}

/// The filter that makes `clone3` fail with ENOSYS and allows everything else (the allowlist
/// decides): glibc then creates threads with `clone`.
pub fn clone3_program() -> Result<BpfProgram, SeccompError> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )?;
    Ok(BpfProgram::try_from(filter)?)
}

/// Makes every thread allocate from glibc's main arena. A thread arena's heap, when a free
/// leaves enough room at its top, is shrunk, and the first shrink reads
/// `/proc/sys/vm/overcommit_memory` (glibc's `check_may_shrink_heap`): an `openat` under the
/// filter, seen killing the VMM when the vsock's many connections freed their buffers. The main
/// arena grows and shrinks with brk and reads no file. To be called first thing in `main`,
/// before any thread (and so any thread arena) exists.
pub fn single_malloc_arena() {
    // SAFETY: mallopt only sets an allocator tunable; M_ARENA_MAX takes any positive count.
    let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    if set != 1 {
        tracing::warn!(
            "mallopt(M_ARENA_MAX, 1) failed: a heap shrink may open a file under the filter"
        );
    }
}

/// Installs the filters for `mode` on every thread of the process (and so on every thread
/// started later).
pub fn install(mode: SeccompMode) -> Result<(), SeccompError> {
    let Some(allowlist) = program(mode)? else {
        return Ok(());
    };
    let clone3 = clone3_program()?;
    if mode == SeccompMode::Enforce {
        TRACE_CALLER.store(
            std::env::var_os("RVM_VMM_SECCOMP_TRACE").is_some(),
            Ordering::Relaxed,
        );
        register_signal_handler(libc::SIGSYS, report_blocked_call)
            .map_err(SeccompError::SigsysHandler)?;
    }
    // The clone3 filter first: installing a filter takes prctl(PR_SET_NO_NEW_PRIVS) and
    // seccomp(2), which the allowlist forbids once it is in place.
    seccompiler::apply_filter_all_threads(&clone3)?;
    seccompiler::apply_filter_all_threads(&allowlist)?;
    tracing::debug!("seccomp filter installed ({mode:?})");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("enforce".parse(), Ok(SeccompMode::Enforce));
        assert_eq!("log".parse(), Ok(SeccompMode::Log));
        assert_eq!("off".parse(), Ok(SeccompMode::Off));
        assert!("strict"
            .parse::<SeccompMode>()
            .unwrap_err()
            .contains("strict"));
    }

    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// Runs this test binary again as a child that installs the filter in `mode` and then opens
    /// a file; returns how the child ended.
    fn child_opening_a_file(mode: &str) -> std::process::Output {
        child_opening_a_file_with(mode, &[])
    }

    /// [`child_opening_a_file`] with extra environment variables.
    fn child_opening_a_file_with(mode: &str, env: &[(&str, &str)]) -> std::process::Output {
        child_doing(mode, "open", env)
    }

    /// Runs this test binary again as a child that installs the filter in `mode` and then does
    /// `action` (see [`child`]); returns how the child ended.
    fn child_doing(mode: &str, action: &str, env: &[(&str, &str)]) -> std::process::Output {
        Command::new(std::env::current_exe().unwrap())
            .envs(env.iter().copied())
            .args([
                "--exact",
                "seccomp::tests::child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RVM_SECCOMP_CHILD", mode)
            .env("RVM_SECCOMP_CHILD_ACTION", action)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    }

    /// The child's side of [`child_doing`]; does nothing in a normal test run.
    #[test]
    fn child() {
        let Ok(mode) = std::env::var("RVM_SECCOMP_CHILD") else {
            return;
        };
        let action = std::env::var("RVM_SECCOMP_CHILD_ACTION").unwrap();
        if std::env::var_os("RVM_SECCOMP_CHILD_ONE_ARENA").is_some() {
            single_malloc_arena();
        }
        // A log file is opened before the filter, as `main` opens the console log.
        let bounded_log = std::env::var_os("RVM_SECCOMP_CHILD_FILE").map(|path| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let limits = crate::logging::bounded::Limits {
                head: 100,
                tail: 1000,
            };
            crate::logging::bounded::BoundedFile::new(file, limits).unwrap()
        });
        install(mode.parse().unwrap()).unwrap();
        // Allowed calls keep working under the filter: threads (that start threads), joined.
        let thread = std::thread::spawn(|| {
            let inner = std::thread::Builder::new()
                .name("inner".into())
                .spawn(std::time::Instant::now)
                .unwrap();
            inner.join().unwrap()
        });
        thread.join().unwrap();
        match action.as_str() {
            // Opening a file is not something a running VMM does.
            "open" => drop(std::fs::File::open("/proc/self/status").unwrap()),
            "threads" => {
                let threads: Vec<_> = (0..8).map(|i| std::thread::spawn(move || i * 2)).collect();
                let sum: i32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
                assert_eq!(sum, 56);
                // clone3 is answered ENOSYS (glibc's cue to use clone) by the second filter,
                // before the kernel would look at the (null) argument.
                // SAFETY: clone3 with a null `struct clone_args` makes no process: the filter
                // fails it with ENOSYS, and without the filter the kernel fails it with EFAULT.
                let rc = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
                let errno = std::io::Error::last_os_error().raw_os_error();
                eprintln!("CLONE3 {rc} {errno:?}");
            }
            "fork" => {
                // SAFETY: a raw clone with SIGCHLD alone is fork(2). In the child (rc 0) only
                // _exit runs, which is async-signal-safe; the parent goes on.
                let rc = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
                if rc == 0 {
                    // SAFETY: ends the forked child at once, without running anything else.
                    unsafe { libc::_exit(0) };
                }
                eprintln!("FORKED {rc}");
            }
            "tgkill-other" => {
                // Signal 0 to pid 1: checks permission only, delivers nothing.
                // SAFETY: tgkill takes integers only; signal 0 sends no signal.
                let rc = unsafe { libc::syscall(libc::SYS_tgkill, 1, 1, 0) };
                eprintln!("TGKILL {rc}");
            }
            "socket" => {
                let socket = std::os::unix::net::UnixStream::pair();
                eprintln!("SOCKETPAIR {}", socket.is_ok());
                let socket = std::os::unix::net::UnixDatagram::unbound();
                eprintln!("SOCKET {}", socket.is_ok());
            }
            "connect" => {
                // SAFETY: connect on descriptor -1 fails with EBADF before the kernel reads
                // the (null, empty) address.
                let rc = unsafe { libc::connect(-1, std::ptr::null(), 0) };
                eprintln!("CONNECT {rc}");
            }
            "socket-connect" => {
                let _ = std::os::unix::net::UnixStream::connect("/nonexistent");
                eprintln!("CONNECTED");
            }
            "unlink" => {
                let _ = std::fs::remove_file("/nonexistent/file");
                eprintln!("UNLINKED");
            }
            "thread-heap" => {
                // What the vsock's connection workers do: a thread fills its heap with buffers
                // below the mmap threshold, then frees them, which shrinks a thread arena.
                let worker = std::thread::spawn(|| {
                    let buffers: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 << 10]).collect();
                    let total: usize = buffers.iter().map(Vec::len).sum();
                    drop(buffers);
                    total
                });
                eprintln!("HEAP {}", worker.join().unwrap());
            }
            "bounded-log" => {
                use std::io::Write;
                let mut log = bounded_log.unwrap();
                for n in 0..1000 {
                    writeln!(log, "console line {n:04}").unwrap();
                }
                eprintln!("LOGGED");
            }
            other => panic!("unknown action {other}"),
        }
    }

    /// Runs `action` in an enforcing child: how it ended and its stderr.
    fn enforcing(action: &str) -> (std::process::ExitStatus, String) {
        let output = child_doing("enforce", action, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status, stderr)
    }

    #[test]
    fn threads_start_under_enforce_and_clone3_is_enosys() {
        let (status, stderr) = enforcing("threads");
        assert!(status.success(), "{status:?} {stderr}");
        assert!(
            stderr.contains(&format!("CLONE3 -1 Some({})", libc::ENOSYS)),
            "{stderr}"
        );
    }

    #[test]
    fn enforce_forbids_fork_signals_to_others_sockets_and_unlink() {
        // System call numbers on x86_64: clone 56, tgkill 234, socket 41, connect 42,
        // unlink 87.
        for (action, call) in [
            ("fork", 56),
            ("tgkill-other", 234),
            ("socket-connect", 41),
            ("connect", 42),
            ("unlink", 87),
        ] {
            let (status, stderr) = enforcing(action);
            assert_eq!(status.signal(), Some(libc::SIGSYS), "{action}: {stderr}");
            assert!(
                stderr.contains(&format!("system call {call} is not in the VMM's allowlist")),
                "{action}: {stderr}"
            );
        }
        // socketpair (53) is not allowed either.
        let (status, stderr) = enforcing("socket");
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{stderr}");
        assert!(stderr.contains("system call 53 "), "{stderr}");
    }

    #[test]
    fn the_allowlist_names_what_it_constrains() {
        let rules = rules(42).unwrap();
        for nr in [
            libc::SYS_connect,
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_fork,
            libc::SYS_vfork,
        ] {
            assert!(!rules.contains_key(&nr), "{nr} is allowed");
        }
        for nr in [
            libc::SYS_clone,
            libc::SYS_tgkill,
            libc::SYS_ioctl,
            libc::SYS_prctl,
        ] {
            assert!(
                rules.get(&nr).is_some_and(|r| !r.is_empty()),
                "{nr} is not conditioned"
            );
        }
        assert_eq!(THREAD_CLONE_FLAGS, 0x003d_0f00);
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS(), 0x8138_ae83);
    }

    #[test]
    fn enforce_kills_the_process_on_a_call_outside_the_allowlist() {
        let output = child_opening_a_file("enforce");
        assert_eq!(output.status.signal(), Some(libc::SIGSYS), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // openat is system call 257 on x86_64.
        assert!(
            stderr.contains("rvm-vmm: seccomp: system call 257 is not in the VMM's allowlist"),
            "{stderr}"
        );
    }

    #[test]
    fn trace_names_where_the_call_was_made() {
        let output = child_opening_a_file_with("enforce", &[("RVM_VMM_SECCOMP_TRACE", "1")]);
        assert_eq!(output.status.signal(), Some(libc::SIGSYS), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("system call 257"), "{stderr}");
        assert!(stderr.contains("blocked at rip 0x"), "{stderr}");
        assert!(
            stderr.contains("return addresses on the stack: 0x"),
            "{stderr}"
        );
    }

    #[test]
    fn decimal_formats_without_allocating() {
        for value in [0, 7, 257, -1, i32::MAX, i32::MIN] {
            let (digits, len) = decimal(value);
            assert_eq!(
                std::str::from_utf8(&digits[..len]).unwrap(),
                value.to_string()
            );
        }
    }

    #[test]
    fn log_and_off_allow_it() {
        for mode in ["log", "off"] {
            let output = child_opening_a_file(mode);
            assert!(output.status.success(), "{mode}: {output:?}");
        }
    }

    #[test]
    fn the_filter_compiles() {
        assert!(program(SeccompMode::Enforce).unwrap().is_some());
        assert!(program(SeccompMode::Off).unwrap().is_none());
    }

    #[test]
    fn the_handler_dies_by_a_call_the_filter_traps() {
        let rules = rules(std::process::id()).unwrap();
        assert!(!rules.contains_key(&DEATH_CALL));
    }

    #[test]
    fn a_bounded_log_is_cut_under_the_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, b"").unwrap();
        let output = child_doing(
            "enforce",
            "bounded-log",
            &[("RVM_SECCOMP_CHILD_FILE", path.to_str().unwrap())],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("LOGGED"), "{stderr}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() < 2100 + 200, "{} bytes", text.len());
        assert!(text.contains("bytes of output cut here"), "{text}");
        assert!(text.ends_with("console line 0999\n"), "{text}");
    }

    #[test]
    fn a_thread_freeing_its_heap_survives_the_filter_with_one_arena() {
        let output = child_doing(
            "enforce",
            "thread-heap",
            &[("RVM_SECCOMP_CHILD_ONE_ARENA", "1")],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(stderr.contains("HEAP 4194304"), "{stderr}");
    }
}
