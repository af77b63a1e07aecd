//! The VMM's jail, entered once every file and socket the VM needs is open and before the guest
//! runs: an empty read-only root, no capabilities, an unprivileged user and group,
//! `no_new_privs`, and lower resource limits (descriptors, tasks, no core dumps). What the
//! process holds from then on is its open descriptors; nothing of the host's filesystem is
//! visible and no privilege can be regained.
//!
//! The namespaces are mostly the starter's part: the runtime starts `rvm-vmm` in new mount, PID,
//! IPC and UTS namespaces (and the VM's network namespace) and in the VM's own cgroup. [`enter`]
//! still makes one more mount namespace of its own first, so that its mounts never touch its
//! caller's. Capabilities, the bounding set and
//! credentials are per thread: [`enter`] refuses to run once a second thread exists.

#[cfg(debug_assertions)]
pub mod attack;

use std::path::Path;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::process::Signal;
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::config::JailSpec;

/// Highest capability number tried when emptying the bounding set; the kernel answers EINVAL
/// past its last one (`/proc/sys/kernel/cap_last_cap`, 40 in 6.x).
const MAX_CAPABILITY: u32 = 63;

/// A step of entering the jail that failed, naming it.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// Threads would keep the privileges this thread drops.
    #[error("the jail must be entered before any other thread starts ({0} threads run)")]
    Threads(usize),
    /// A mount, pivot or credential call failed.
    #[error("jail: {step}: {source}")]
    Step {
        /// What was being done.
        step: String,
        /// The system's answer.
        source: std::io::Error,
    },
    /// A check after the jail found a privilege left.
    #[error("jail: still privileged after dropping privileges: {0}")]
    Left(String),
}

fn step<T>(what: impl Into<String>, result: rustix::io::Result<T>) -> Result<T, JailError> {
    result.map_err(|errno| JailError::Step {
        step: what.into(),
        source: errno.into(),
    })
}

/// Enters the jail `spec` describes. On success the process's root is an empty read-only
/// tmpfs, it runs as `spec.uid:spec.gid` with no supplementary groups, every capability set
/// (effective, permitted, inheritable, ambient, bounding) is empty and `no_new_privs` is set.
pub fn enter(spec: &JailSpec) -> Result<(), JailError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(JailError::Threads(threads));
    }
    pivot_into_empty_root(&spec.root)?;
    drop_privileges(spec.uid, spec.gid)?;
    limit_resources()?;
    check_unprivileged()?;
    tracing::info!(
        uid = spec.uid,
        gid = spec.gid,
        root = %spec.root.display(),
        "jailed"
    );
    Ok(())
}

/// The number of threads of this process, from `/proc/self/task` (1 when it cannot be read:
/// the check is a guard against a programming error, not against the host).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |dir| dir.count())
}

/// Makes a new empty, read-only tmpfs on `dir` the root of this mount namespace; the host's
/// tree is detached. `dir` is left untouched on the host: the mounts happen in the VMM's own
/// mount namespace, made private first so that nothing propagates back.
fn pivot_into_empty_root(dir: &Path) -> Result<(), JailError> {
    // The runtime starts the VMM in a mount namespace of its own already; one more makes sure
    // that a VMM started by hand with --jail never pivots its caller's namespace.
    // SAFETY: only NEWNS is unshared, never FILES, so no thread loses sight of a descriptor
    // (and this process has one thread, checked by `enter`).
    let unshared = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) };
    step("enter a mount namespace of its own", unshared)?;
    step(
        "make every mount private",
        rustix::mount::mount_change(
            "/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        ),
    )?;
    let shown = dir.display().to_string();
    step(
        format!("mount an empty tmpfs on {shown}"),
        rustix::mount::mount(
            "rvm-jail",
            dir,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            c"mode=0555,size=4k,nr_inodes=8",
        ),
    )?;
    step(format!("enter {shown}"), rustix::process::chdir(dir))?;
    // pivot_root(".", ".") stacks the old root on the new one; detaching "." then drops it.
    step("pivot_root", rustix::process::pivot_root(".", "."))?;
    step(
        "detach the host's root",
        rustix::mount::unmount(".", UnmountFlags::DETACH),
    )?;
    step("enter the new root", rustix::process::chdir("/"))?;
    step(
        "make the root read-only",
        rustix::mount::mount_remount(
            "/",
            MountFlags::BIND
                | MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | MountFlags::NOEXEC,
            c"",
        ),
    )?;
    Ok(())
}

/// Empties the bounding and ambient sets, becomes `uid:gid` with no supplementary groups
/// (which empties the permitted and effective sets), empties the inheritable set, and sets
/// `no_new_privs`. The parent-death signal, which the kernel clears on a change of
/// credentials, is set again.
fn drop_privileges(uid: u32, gid: u32) -> Result<(), JailError> {
    for capability in 0..=MAX_CAPABILITY {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and reads no memory; a number past
        // the kernel's last capability fails with EINVAL, which ends the loop.
        let dropped = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) };
        if dropped != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EINVAL) && capability > 0 {
                break;
            }
            return Err(JailError::Step {
                step: format!("drop capability {capability} from the bounding set"),
                source: error,
            });
        }
    }
    step(
        "clear the ambient capabilities",
        rustix::thread::clear_ambient_capability_set(),
    )?;
    step(
        "drop the supplementary groups",
        rustix::thread::set_thread_groups(&[]),
    )?;
    let (uid, gid) = (
        rustix::process::Uid::from_raw(uid),
        rustix::process::Gid::from_raw(gid),
    );
    step(
        format!("become group {}", gid.as_raw()),
        rustix::thread::set_thread_res_gid(gid, gid, gid),
    )?;
    step(
        format!("become user {}", uid.as_raw()),
        rustix::thread::set_thread_res_uid(uid, uid, uid),
    )?;
    step(
        "empty the capability sets",
        rustix::thread::set_capabilities(
            None,
            CapabilitySets {
                effective: CapabilitySet::empty(),
                permitted: CapabilitySet::empty(),
                inheritable: CapabilitySet::empty(),
            },
        ),
    )?;
    step("set no_new_privs", rustix::thread::set_no_new_privs(true))?;
    step(
        "set the parent-death signal again",
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL)),
    )?;
    Ok(())
}

/// Open descriptors a jailed VMM may hold: its disks, TAP, eventfds and the host's vsock and API
/// connections, with room to spare.
pub const MAX_OPEN_FILES: u64 = 4096;
/// Tasks (threads) the VMM's user may run: its own user, so this bounds the VMM alone: up to 32
/// vCPUs, device workers, the API thread.
pub const MAX_TASKS: u64 = 256;

/// Lowers the VMM's resource limits, soft and hard: descriptors, tasks, and no core dump (a
/// core would hold guest memory).
fn limit_resources() -> Result<(), JailError> {
    for (name, resource, limit) in [
        (
            "open files",
            rustix::process::Resource::Nofile,
            MAX_OPEN_FILES,
        ),
        ("tasks", rustix::process::Resource::Nproc, MAX_TASKS),
        ("core dumps", rustix::process::Resource::Core, 0),
    ] {
        let rlimit = rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        };
        step(
            format!("limit {name} to {limit}"),
            rustix::process::setrlimit(resource, rlimit),
        )?;
    }
    Ok(())
}

/// Checks what [`drop_privileges`] promised, as the kernel sees it.
fn check_unprivileged() -> Result<(), JailError> {
    let sets = step("read the capabilities", rustix::thread::capabilities(None))?;
    if !sets.effective.is_empty() || !sets.permitted.is_empty() || !sets.inheritable.is_empty() {
        return Err(JailError::Left(format!("capabilities {sets:?}")));
    }
    if rustix::process::getuid().is_root() || rustix::process::geteuid().is_root() {
        return Err(JailError::Left("user 0".to_owned()));
    }
    if !step("read no_new_privs", rustix::thread::no_new_privs())? {
        return Err(JailError::Left("no_new_privs is not set".to_owned()));
    }
    Ok(())
}
