//! The VMM's own seccomp filter: once the VM is built and before the guest runs, every thread of
//! the process may make only the system calls that running a VM needs. Opening files, executing
//! programs, creating non-Unix sockets, mounting, tracing and the rest kill the process.
//!
//! The filter is one allowlist for the whole process, installed with TSYNC so that it covers the
//! threads that exist and every thread started later (vCPUs, device workers). `ioctl` is allowed
//! only for the requests the running VM makes (KVM_RUN, the TAP's offloads, FIONBIO on the
//! vsock's sockets), `socket` only for Unix sockets (vsock connections to the host),
//! `prctl` only for naming threads.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::ioctl_io_nr;
use vmm_sys_util::signal::register_signal_handler;

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
/// stderr, then lets SIGSYS kill the process. Uses only calls the filter allows (write,
/// rt_sigaction, rt_sigprocmask, getpid, gettid, tgkill) and no allocation or lock.
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
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the sigset_t that `set` provides room for.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    // SAFETY: `set` was initialised just above; adding a valid signal number to it.
    unsafe { libc::sigaddset(set.as_mut_ptr(), libc::SIGSYS) };
    // SAFETY: unblocking SIGSYS on this thread with an initialised set; no old set is wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut()) };
    // SAFETY: raising SIGSYS, now unblocked and with its default action, ends the process as a
    // killing filter would.
    unsafe { libc::raise(libc::SIGSYS) };
}

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
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
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
    // Unix sockets of the hybrid vsock (socket itself is filtered below) and of the host API
    // (`--api`: accept4, recvmsg taking the images' descriptors as SCM_RIGHTS, write).
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    // The vsock's and the API's listening socket files are removed when the VMM ends.
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    // virtio-rng.
    libc::SYS_getrandom,
];

/// KVM's ioctl type.
const KVMIO: libc::c_uint = 0xAE;
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);

/// `ioctl` requests the running VM makes: vCPUs entering the guest, the TAP taking the
/// offloads the guest's driver accepted when it activates virtio-net, and the vsock's Unix
/// sockets made non-blocking (the standard library does that with FIONBIO).
fn allowed_ioctls() -> [u64; 3] {
    [KVM_RUN(), libc::TUNSETOFFLOAD, libc::FIONBIO]
}

/// The allowlist as seccompiler rules.
fn rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let ioctls = allowed_ioctls()
        .into_iter()
        .map(|request| arg_equals(1, request))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctls);
    rules.insert(libc::SYS_socket, vec![arg_equals(0, libc::AF_UNIX as u64)?]);
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

/// The filter for `mode` as a BPF program (`None` for [`SeccompMode::Off`]).
pub fn program(mode: SeccompMode) -> Result<Option<BpfProgram>, SeccompError> {
    let mismatch = match mode {
        // Trap, not kill: the SIGSYS handler names the call, then the process dies of SIGSYS.
        SeccompMode::Enforce => SeccompAction::Trap,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Off => return Ok(None),
    };
    let filter = SeccompFilter::new(rules()?, mismatch, SeccompAction::Allow, TargetArch::x86_64)?;
    Ok(Some(BpfProgram::try_from(filter)?))
}

/// Installs the filter for `mode` on every thread of the process (and so on every thread
/// started later).
pub fn install(mode: SeccompMode) -> Result<(), SeccompError> {
    if let Some(program) = program(mode)? {
        if mode == SeccompMode::Enforce {
            TRACE_CALLER.store(
                std::env::var_os("RVM_VMM_SECCOMP_TRACE").is_some(),
                Ordering::Relaxed,
            );
            register_signal_handler(libc::SIGSYS, report_blocked_call)
                .map_err(SeccompError::SigsysHandler)?;
        }
        seccompiler::apply_filter_all_threads(&program)?;
        tracing::debug!("seccomp filter installed ({mode:?})");
    }
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
        Command::new(std::env::current_exe().unwrap())
            .envs(env.iter().copied())
            .args([
                "--exact",
                "seccomp::tests::child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RVM_SECCOMP_CHILD", mode)
            .output()
            .unwrap()
    }

    /// The child's side of [`child_opening_a_file`]; does nothing in a normal test run.
    #[test]
    fn child() {
        let Ok(mode) = std::env::var("RVM_SECCOMP_CHILD") else {
            return;
        };
        install(mode.parse().unwrap()).unwrap();
        // Allowed calls keep working under the filter.
        let thread = std::thread::spawn(std::time::Instant::now);
        thread.join().unwrap();
        // Opening a file is not something a running VMM does.
        std::fs::File::open("/proc/self/status").unwrap();
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
        assert!(child_opening_a_file("log").status.success());
        assert!(child_opening_a_file("off").status.success());
    }

    #[test]
    fn the_filter_compiles() {
        assert!(program(SeccompMode::Enforce).unwrap().is_some());
        assert!(program(SeccompMode::Off).unwrap().is_none());
    }
}
