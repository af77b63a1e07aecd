//! The kernel filesystems of the guest and the cgroup2 hierarchy with cpu, memory, pids and io
//! delegated to children.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use thiserror::Error;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The controllers every container cgroup gets.
pub const CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "io"];

#[derive(Debug, Error)]
pub enum MountError {
    #[error("mount {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        source: nix::Error,
    },
    #[error("create mount point {path}: {source}")]
    MountPoint { path: PathBuf, source: io::Error },
    #[error("enable controllers {controllers} in {path}: {source}")]
    Controllers {
        controllers: String,
        path: PathBuf,
        source: io::Error,
    },
}

struct KernelMount {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const fn kernel_mount(
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
) -> KernelMount {
    KernelMount {
        fstype,
        target,
        flags,
        data,
    }
}

fn nosuid_nodev_noexec() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// Mounts /proc, /sys, /dev, /dev/pts, /dev/shm, /run and cgroup2, in that order.
pub fn mount_kernel_filesystems() -> Result<(), MountError> {
    let mounts = [
        kernel_mount("proc", "/proc", nosuid_nodev_noexec(), None),
        kernel_mount("sysfs", "/sys", nosuid_nodev_noexec(), None),
        kernel_mount("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        kernel_mount(
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        kernel_mount(
            "tmpfs",
            "/dev/shm",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        kernel_mount(
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        kernel_mount("cgroup2", CGROUP_ROOT, nosuid_nodev_noexec(), None),
    ];
    for entry in &mounts {
        mount_one(entry)?;
    }
    // /dev/ptmx of devtmpfs belongs to the initial devpts instance; point it at ours.
    let _ = fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    Ok(())
}

fn mount_one(entry: &KernelMount) -> Result<(), MountError> {
    let target = Path::new(entry.target);
    fs::create_dir_all(target).map_err(|source| MountError::MountPoint {
        path: target.to_owned(),
        source,
    })?;
    match mount(
        Some(entry.fstype),
        target,
        Some(entry.fstype),
        entry.flags,
        entry.data,
    ) {
        // The kernel mounts devtmpfs itself with CONFIG_DEVTMPFS_MOUNT once a rootfs exists.
        Ok(()) | Err(nix::Error::EBUSY) => Ok(()),
        Err(source) => Err(MountError::Mount {
            fstype: entry.fstype,
            target: target.to_owned(),
            source,
        }),
    }
}

/// Writes `+cpu +memory +pids +io` to `dir`'s cgroup.subtree_control, leaving out (with a
/// warning) any controller the hierarchy does not offer, e.g. on a cgroup v1 test host.
pub fn enable_controllers_in(dir: &Path) -> Result<(), MountError> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let available: Vec<&str> = available.split_whitespace().collect();
    let (usable, missing): (Vec<&str>, Vec<&str>) =
        CONTROLLERS.iter().partition(|c| available.contains(c));
    if !missing.is_empty() {
        tracing::warn!(cgroup = %dir.display(), ?missing, "cgroup controllers not available");
    }
    if usable.is_empty() {
        return Ok(());
    }
    let controllers = usable
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let path = dir.join("cgroup.subtree_control");
    fs::write(&path, &controllers).map_err(|source| MountError::Controllers {
        controllers,
        path,
        source,
    })
}

/// Enables the container controllers in the root cgroup.
pub fn enable_cgroup_controllers() -> Result<(), MountError> {
    enable_controllers_in(Path::new(CGROUP_ROOT))
}
