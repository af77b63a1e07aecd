//! The seccomp filters of a container's processes, and loading them. A container gets the
//! profile of its spec's `linux.seccomp` (compiled by [`super::seccomp_oci`]), else Docker's
//! default profile, or no filter with the annotation `org.rvm.seccomp=unconfined`.
//!
//! Docker's default profile is built as a BPF filter with seccompiler (pure Rust, so the static
//! agent needs no libseccomp). It is an allow list: every syscall of moby's
//! `profiles/seccomp/default.json` that Docker allows with its default capabilities, on x86_64;
//! anything else fails with EPERM. Arguments are checked as Docker does for `personality`,
//! `socket` (no AF_VSOCK: the host's port must stay the agent's) and `clone` (no new
//! namespaces); `clone3` fails with ENOSYS so that libc falls back to `clone`.

use std::collections::BTreeMap;

use oci_spec::runtime::Spec;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::seccomp_oci::{self, ProfileError};

/// The annotation that turns seccomp off ("unconfined"), whatever the spec asks for.
pub const SECCOMP_ANNOTATION: &str = rvm_protocol::annotations::SECCOMP;

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("build the default seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("load the seccomp filter: {0}")]
    Load(std::io::Error),
}

/// A BPF program and the seccomp(2) flags (`SECCOMP_FILTER_FLAG_*`) to load it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub program: BpfProgram,
    pub flags: libc::c_ulong,
}

/// What filters a container's processes (its init and its execs) get. Travels to the helper in
/// its configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompPolicy {
    /// No filter.
    Unconfined,
    /// Docker's default profile (compiled by the helper).
    DockerDefault,
    /// The spec's profile, compiled by the agent: `program` holds the BPF instructions as
    /// `(code, jt, jf, k)`.
    Profile {
        flags: u64,
        program: Vec<(u16, u8, u8, u32)>,
    },
}

impl SeccompPolicy {
    /// The policy `spec` asks for: none with the unconfined annotation, else its
    /// `linux.seccomp` compiled, else Docker's default. A bad profile is an error.
    pub fn for_spec(spec: &Spec) -> Result<Self, ProfileError> {
        let unconfined = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SECCOMP_ANNOTATION))
            .is_some_and(|v| v == "unconfined");
        if unconfined {
            return Ok(Self::Unconfined);
        }
        match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(profile) => Ok(Self::from_filter(seccomp_oci::compile(profile)?)),
            None => Ok(Self::DockerDefault),
        }
    }

    fn from_filter(filter: Filter) -> Self {
        Self::Profile {
            flags: filter.flags,
            program: filter
                .program
                .iter()
                .map(|i| (i.code, i.jt, i.jf, i.k))
                .collect(),
        }
    }

    /// The filters to load, in order.
    pub fn filters(&self) -> Result<Vec<Filter>, SeccompError> {
        Ok(match self {
            Self::Unconfined => Vec::new(),
            Self::DockerDefault => vec![unflagged(default_filter()?), unflagged(clone3_filter()?)],
            Self::Profile { flags, program } => vec![Filter {
                program: program
                    .iter()
                    .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
                    .collect(),
                flags: *flags,
            }],
        })
    }
}

fn unflagged(program: BpfProgram) -> Filter {
    Filter { program, flags: 0 }
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

/// Loads `filter` on the calling thread with seccomp(2). Unlike seccompiler's own loader this
/// does not force no_new_privs: without it the caller needs CAP_SYS_ADMIN, and no_new_privs
/// follows the spec.
pub fn load(filter: &Filter) -> Result<(), SeccompError> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(filter.program.len())
            .map_err(|_| SeccompError::Load(std::io::Error::from_raw_os_error(libc::E2BIG)))?,
        filter: filter.program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at the program's instructions (seccompiler's `sock_filter` has the
    // kernel's layout), which outlive the call; the kernel copies the filter before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
            filter.flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Load(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Loads `filters` on the calling thread, in order. For Docker's default profile the kernel runs
/// the newest filter first and keeps its action among equal ones, so the clone3 filter goes last
/// for its ENOSYS to win over the main filter's EPERM.
pub fn load_all(filters: &[Filter]) -> Result<(), SeccompError> {
    filters.iter().try_for_each(load)
}

/// Running filters in a forked child, for the behavioural tests of this module and of
/// [`super::seccomp_oci`].
#[cfg(test)]
pub(crate) mod testing {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    use super::{load_all, Filter};

    /// A system call whose arguments are plain integers: its result, or the errno it failed with.
    pub fn call(nr: libc::c_long, args: [u64; 3]) -> Result<libc::c_long, i32> {
        // SAFETY: callers only name calls that take integers (or null pointers), so the kernel
        // dereferences no memory of ours.
        let rc = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
        if rc < 0 {
            Err(nix::errno::Errno::last_raw())
        } else {
            Ok(rc)
        }
    }

    /// uname(2) into a buffer on the stack.
    pub fn uname() -> Result<(), i32> {
        let mut name = std::mem::MaybeUninit::<libc::utsname>::uninit();
        // SAFETY: uname writes one utsname into the buffer we own.
        let rc = unsafe { libc::uname(name.as_mut_ptr()) };
        if rc < 0 {
            Err(nix::errno::Errno::last_raw())
        } else {
            Ok(())
        }
    }

    /// getcwd(2) into a buffer on the stack.
    pub fn getcwd() -> Result<(), i32> {
        let mut buffer = [0u8; 4096];
        // SAFETY: getcwd writes at most `buffer.len()` bytes into the buffer we own.
        let rc = unsafe { libc::syscall(libc::SYS_getcwd, buffer.as_mut_ptr(), buffer.len()) };
        if rc < 0 {
            Err(nix::errno::Errno::last_raw())
        } else {
            Ok(())
        }
    }

    /// Forks a child that sets no_new_privs, loads `filters`, runs `body` and exits with its
    /// status (98: no_new_privs failed, 99: loading failed); returns how the child ended.
    pub fn in_child(filters: &[Filter], body: fn() -> i32) -> WaitStatus {
        // SAFETY: the child makes system calls only (no allocation, no locks another thread of
        // the test process could hold) until it calls _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => child(filters, body),
            ForkResult::Parent { child } => waitpid(child, None).unwrap(),
        }
    }

    fn child(filters: &[Filter], body: fn() -> i32) -> ! {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads the rlimit we own. (No core file for the SIGSYS deaths.)
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        let status = if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            98
        } else if load_all(filters).is_err() {
            99
        } else {
            body()
        };
        // SAFETY: _exit ends the forked child at once, without the parent's exit handlers.
        unsafe { libc::_exit(status) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    use nix::sys::wait::WaitStatus;
    use oci_spec::runtime::{LinuxBuilder, LinuxSeccompAction, LinuxSeccompBuilder, SpecBuilder};

    use super::testing::{call, in_child};

    fn spec(annotation: Option<&str>, profile: bool) -> Spec {
        let mut linux = LinuxBuilder::default();
        if profile {
            let seccomp = LinuxSeccompBuilder::default()
                .default_action(LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap();
            linux = linux.seccomp(seccomp);
        }
        let mut spec = SpecBuilder::default().linux(linux.build().unwrap());
        if let Some(value) = annotation {
            spec = spec.annotations(HashMap::from([(
                SECCOMP_ANNOTATION.to_owned(),
                value.to_owned(),
            )]));
        }
        spec.build().unwrap()
    }

    #[test]
    fn the_policy_follows_the_spec() {
        assert_eq!(
            SeccompPolicy::for_spec(&spec(None, false)).unwrap(),
            SeccompPolicy::DockerDefault
        );
        assert_eq!(
            SeccompPolicy::for_spec(&spec(Some("default"), false)).unwrap(),
            SeccompPolicy::DockerDefault
        );
        assert_eq!(
            SeccompPolicy::for_spec(&spec(Some("unconfined"), false)).unwrap(),
            SeccompPolicy::Unconfined
        );
        assert!(matches!(
            SeccompPolicy::for_spec(&spec(None, true)).unwrap(),
            SeccompPolicy::Profile { .. }
        ));
        // The annotation is rvm's explicit opt-out: it wins over a profile in the spec.
        assert_eq!(
            SeccompPolicy::for_spec(&spec(Some("unconfined"), true)).unwrap(),
            SeccompPolicy::Unconfined
        );
        assert!(SeccompPolicy::Unconfined.filters().unwrap().is_empty());
        assert_eq!(SeccompPolicy::DockerDefault.filters().unwrap().len(), 2);
    }

    #[test]
    fn a_compiled_profile_survives_the_helper_config() {
        let policy = SeccompPolicy::for_spec(&spec(None, true)).unwrap();
        let json = serde_json::to_string(&policy).unwrap();
        let back: SeccompPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, policy);
        let linux = spec(None, true).linux().clone().unwrap();
        let compiled = seccomp_oci::compile(linux.seccomp().as_ref().unwrap()).unwrap();
        assert_eq!(back.filters().unwrap(), vec![compiled]);
    }

    /// Docker's default profile, as a container without `linux.seccomp` gets it.
    fn under_docker_default() -> i32 {
        const PER_LINUX32: u64 = 0x0008;
        if call(libc::SYS_getppid, [0; 3]).is_err() {
            return 1;
        }
        if call(libc::SYS_personality, [PER_LINUX32, 0, 0]) != Err(libc::EPERM) {
            return 2;
        }
        if call(libc::SYS_unshare, [0; 3]) != Err(libc::EPERM) {
            return 3;
        }
        if call(libc::SYS_clone3, [0; 3]) != Err(libc::ENOSYS) {
            return 4;
        }
        let vsock = u64::try_from(libc::AF_VSOCK).unwrap_or_default();
        if call(libc::SYS_socket, [vsock, 1, 0]) != Err(libc::EPERM) {
            return 5;
        }
        0
    }

    #[test]
    fn docker_default_applies_without_a_profile() {
        let policy = SeccompPolicy::for_spec(&spec(None, false)).unwrap();
        let filters = policy.filters().unwrap();
        let status = in_child(&filters, under_docker_default);
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    }

    fn unconfined() -> i32 {
        match call(libc::SYS_personality, [0xffff_ffff, 0, 0]) {
            Ok(_) => 0,
            Err(_) => 1,
        }
    }

    #[test]
    fn unconfined_loads_nothing() {
        let status = in_child(&SeccompPolicy::Unconfined.filters().unwrap(), unconfined);
        assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    }

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
