//! Docker's default seccomp profile, built as a BPF filter with seccompiler (pure Rust, so the
//! static agent needs no libseccomp).
//!
//! The profile is an allow list: every syscall of moby's `profiles/seccomp/default.json` that
//! Docker allows with its default capabilities, on x86_64; anything else fails with EPERM.
//! Arguments are checked as Docker does for `personality`, `socket` (no AF_VSOCK: the host's
//! port must stay the agent's) and `clone` (no new namespaces); `clone3` fails with ENOSYS so
//! that libc falls back to `clone`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("build the default seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("load the seccomp filter: {0}")]
    Load(std::io::Error),
}

macro_rules! syscalls {
    ($($name:ident),+ $(,)?) => {
        &[$(libc::$name),+]
    };
}

/// Allowed without conditions.
const ALLOWED: &[libc::c_long] = syscalls![
    SYS_accept,
    SYS_accept4,
    SYS_access,
    SYS_adjtimex,
    SYS_alarm,
    SYS_bind,
    SYS_brk,
    SYS_capget,
    SYS_capset,
    SYS_chdir,
    SYS_chmod,
    SYS_chown,
    SYS_chroot,
    SYS_clock_adjtime,
    SYS_clock_getres,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_close,
    SYS_close_range,
    SYS_connect,
    SYS_copy_file_range,
    SYS_creat,
    SYS_dup,
    SYS_dup2,
    SYS_dup3,
    SYS_epoll_create,
    SYS_epoll_create1,
    SYS_epoll_ctl,
    SYS_epoll_ctl_old,
    SYS_epoll_pwait,
    SYS_epoll_pwait2,
    SYS_epoll_wait,
    SYS_epoll_wait_old,
    SYS_eventfd,
    SYS_eventfd2,
    SYS_execve,
    SYS_execveat,
    SYS_exit,
    SYS_exit_group,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_fadvise64,
    SYS_fallocate,
    SYS_fanotify_mark,
    SYS_fchdir,
    SYS_fchmod,
    SYS_fchmodat,
    SYS_fchown,
    SYS_fchownat,
    SYS_fcntl,
    SYS_fdatasync,
    SYS_fgetxattr,
    SYS_flistxattr,
    SYS_flock,
    SYS_fork,
    SYS_fremovexattr,
    SYS_fsetxattr,
    SYS_fstat,
    SYS_fstatfs,
    SYS_fsync,
    SYS_ftruncate,
    SYS_futex,
    SYS_futex_waitv,
    SYS_futimesat,
    SYS_get_robust_list,
    SYS_get_thread_area,
    SYS_getcpu,
    SYS_getcwd,
    SYS_getdents,
    SYS_getdents64,
    SYS_getegid,
    SYS_geteuid,
    SYS_getgid,
    SYS_getgroups,
    SYS_getitimer,
    SYS_getpeername,
    SYS_getpgid,
    SYS_getpgrp,
    SYS_getpid,
    SYS_getppid,
    SYS_getpriority,
    SYS_getrandom,
    SYS_getresgid,
    SYS_getresuid,
    SYS_getrlimit,
    SYS_getrusage,
    SYS_getsid,
    SYS_getsockname,
    SYS_getsockopt,
    SYS_gettid,
    SYS_gettimeofday,
    SYS_getuid,
    SYS_getxattr,
    SYS_inotify_add_watch,
    SYS_inotify_init,
    SYS_inotify_init1,
    SYS_inotify_rm_watch,
    SYS_io_cancel,
    SYS_io_destroy,
    SYS_io_getevents,
    SYS_io_setup,
    SYS_io_submit,
    SYS_ioctl,
    SYS_ioprio_get,
    SYS_ioprio_set,
    SYS_kill,
    SYS_landlock_add_rule,
    SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self,
    SYS_lchown,
    SYS_lgetxattr,
    SYS_link,
    SYS_linkat,
    SYS_listen,
    SYS_listxattr,
    SYS_llistxattr,
    SYS_lremovexattr,
    SYS_lseek,
    SYS_lsetxattr,
    SYS_lstat,
    SYS_madvise,
    SYS_membarrier,
    SYS_memfd_create,
    SYS_memfd_secret,
    SYS_mincore,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_mknod,
    SYS_mknodat,
    SYS_mlock,
    SYS_mlock2,
    SYS_mlockall,
    SYS_mmap,
    SYS_mprotect,
    SYS_mq_getsetattr,
    SYS_mq_notify,
    SYS_mq_open,
    SYS_mq_timedreceive,
    SYS_mq_timedsend,
    SYS_mq_unlink,
    SYS_mremap,
    SYS_msgctl,
    SYS_msgget,
    SYS_msgrcv,
    SYS_msgsnd,
    SYS_msync,
    SYS_munlock,
    SYS_munlockall,
    SYS_munmap,
    SYS_name_to_handle_at,
    SYS_nanosleep,
    SYS_newfstatat,
    SYS_open,
    SYS_openat,
    SYS_openat2,
    SYS_pause,
    SYS_pidfd_getfd,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_pipe,
    SYS_pipe2,
    SYS_pkey_alloc,
    SYS_pkey_free,
    SYS_pkey_mprotect,
    SYS_poll,
    SYS_ppoll,
    SYS_prctl,
    SYS_pread64,
    SYS_preadv,
    SYS_preadv2,
    SYS_prlimit64,
    SYS_process_mrelease,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_pselect6,
    SYS_ptrace,
    SYS_pwrite64,
    SYS_pwritev,
    SYS_pwritev2,
    SYS_read,
    SYS_readahead,
    SYS_readlink,
    SYS_readlinkat,
    SYS_readv,
    SYS_recvfrom,
    SYS_recvmmsg,
    SYS_recvmsg,
    SYS_remap_file_pages,
    SYS_removexattr,
    SYS_rename,
    SYS_renameat,
    SYS_renameat2,
    SYS_restart_syscall,
    SYS_rmdir,
    SYS_rseq,
    SYS_rt_sigaction,
    SYS_rt_sigpending,
    SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn,
    SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait,
    SYS_rt_tgsigqueueinfo,
    SYS_sched_get_priority_max,
    SYS_sched_get_priority_min,
    SYS_sched_getaffinity,
    SYS_sched_getattr,
    SYS_sched_getparam,
    SYS_sched_getscheduler,
    SYS_sched_rr_get_interval,
    SYS_sched_setaffinity,
    SYS_sched_setattr,
    SYS_sched_setparam,
    SYS_sched_setscheduler,
    SYS_sched_yield,
    SYS_seccomp,
    SYS_select,
    SYS_semctl,
    SYS_semget,
    SYS_semop,
    SYS_semtimedop,
    SYS_sendfile,
    SYS_sendmmsg,
    SYS_sendmsg,
    SYS_sendto,
    SYS_set_robust_list,
    SYS_set_thread_area,
    SYS_set_tid_address,
    SYS_setfsgid,
    SYS_setfsuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_setitimer,
    SYS_setpgid,
    SYS_setpriority,
    SYS_setregid,
    SYS_setresgid,
    SYS_setresuid,
    SYS_setreuid,
    SYS_setrlimit,
    SYS_setsid,
    SYS_setsockopt,
    SYS_setuid,
    SYS_setxattr,
    SYS_shmat,
    SYS_shmctl,
    SYS_shmdt,
    SYS_shmget,
    SYS_shutdown,
    SYS_sigaltstack,
    SYS_signalfd,
    SYS_signalfd4,
    SYS_socketpair,
    SYS_splice,
    SYS_stat,
    SYS_statfs,
    SYS_statx,
    SYS_symlink,
    SYS_symlinkat,
    SYS_sync,
    SYS_sync_file_range,
    SYS_syncfs,
    SYS_sysinfo,
    SYS_tee,
    SYS_tgkill,
    SYS_time,
    SYS_timer_create,
    SYS_timer_delete,
    SYS_timer_getoverrun,
    SYS_timer_gettime,
    SYS_timer_settime,
    SYS_timerfd_create,
    SYS_timerfd_gettime,
    SYS_timerfd_settime,
    SYS_times,
    SYS_tkill,
    SYS_truncate,
    SYS_umask,
    SYS_uname,
    SYS_unlink,
    SYS_unlinkat,
    SYS_utime,
    SYS_utimensat,
    SYS_utimes,
    SYS_vfork,
    SYS_vmsplice,
    SYS_wait4,
    SYS_waitid,
    SYS_write,
    SYS_writev,
    SYS_arch_prctl,
    SYS_modify_ldt,
];

/// io_pgetevents(2) on x86_64 (not named by the libc crate).
const SYS_IO_PGETEVENTS: libc::c_long = 333;

/// The namespace flags of clone(2) that Docker refuses without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;
/// The personality(2) personas Docker allows: PER_LINUX, UNAME26, PER_LINUX32|UNAME26 and the
/// query value.
const PERSONAS: [u64; 4] = [0x0, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        op,
        value,
    )?)
}

fn rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, Vec::new())).collect();
    rules.insert(SYS_IO_PGETEVENTS, Vec::new());
    let personas = PERSONAS
        .iter()
        .map(|p| Ok(SeccompRule::new(vec![condition(0, SeccompCmpOp::Eq, *p)?])?))
        .collect::<Result<Vec<_>, SeccompError>>()?;
    rules.insert(libc::SYS_personality, personas);
    rules.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(vec![condition(
            0,
            SeccompCmpOp::Ne,
            AF_VSOCK,
        )?])?],
    );
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![condition(
            0,
            SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
            0,
        )?])?],
    );
    Ok(rules)
}

/// Compiles Docker's default profile for x86_64.
pub fn default_filter() -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules()?,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(BpfProgram::try_from(filter)?)
}

/// A separate filter making clone3 fail with ENOSYS (stacked filters: the strictest action wins,
/// and ERRNO(ENOSYS) beats ALLOW from the main filter only for clone3).
fn clone3_filter() -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )?;
    Ok(BpfProgram::try_from(filter)?)
}

/// Loads `program` on the calling thread. Unlike seccompiler's own loader this does not force
/// no_new_privs: we still hold CAP_SYS_ADMIN here, and no_new_privs follows the spec.
pub fn load(program: &BpfProgram) -> Result<(), SeccompError> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| SeccompError::Load(std::io::Error::from_raw_os_error(libc::E2BIG)))?,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `program`'s instructions, which outlive the call; the kernel
    // copies the filter before returning.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Load(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Loads Docker's default profile (both filters) on the calling thread.
pub fn load_default() -> Result<(), SeccompError> {
    // The kernel runs the newest filter first and keeps its action among equal ones, so the
    // clone3 filter goes last for its ENOSYS to win over the main filter's EPERM.
    load(&default_filter()?)?;
    load(&clone3_filter()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles() {
        let program = default_filter().unwrap();
        assert!(program.len() > ALLOWED.len());
        assert!(program.len() < usize::from(u16::MAX));
        clone3_filter().unwrap();
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        for nr in [
            libc::SYS_mount,
            libc::SYS_reboot,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_pivot_root,
        ] {
            assert!(!ALLOWED.contains(&nr), "syscall {nr} must not be allowed");
        }
    }
}
