//! The VMM's own cgroup v2, `<cgroup2 mount>/rvm/<vm id>`: the VMM starts in it and it bounds
//! what a runaway VMM can take: memory (guest RAM plus the VMM's overhead), tasks and CPU.
//! Controllers missing on the host (a cgroup v1 host, a delegated subtree without them) leave
//! their limit out; [`VmCgroup::limits`] says what was applied.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// What the VMM may use beyond guest RAM: its own code, page tables, device buffers, and the
/// page cache of its disk I/O (reclaimable, so the limit makes it shrink, not kill).
pub const VMM_OVERHEAD_MIB: u64 = 64;
/// Tasks beyond one per vCPU: the main thread, device workers, the API thread.
pub const EXTRA_TASKS: u32 = 32;
/// The controllers a VMM's cgroup uses.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// The subtree of every VMM cgroup under the cgroup2 mount.
const PARENT: &str = "rvm";

/// A failure to make the cgroup, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {}: {source}", path.display())]
pub struct CgroupError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A VMM's cgroup, removed on drop once empty.
#[derive(Debug)]
pub struct VmCgroup {
    dir: PathBuf,
    handle: File,
    limits: Vec<String>,
}

impl VmCgroup {
    /// Makes the cgroup of VM `id` with `memory_mib` of guest RAM and `vcpus` vCPUs under the
    /// cgroup2 mount `mount`.
    pub fn create(
        mount: &Path,
        id: &str,
        memory_mib: u64,
        vcpus: u32,
    ) -> Result<Self, CgroupError> {
        let parent = mount.join(PARENT);
        enable_controllers(mount);
        make_dir(&parent)?;
        enable_controllers(&parent);
        let dir = parent.join(id);
        // A cgroup left by a VMM of the same id that died with its owner: empty by now.
        let _ = std::fs::remove_dir(&dir);
        make_dir(&dir)?;
        let handle = File::open(&dir).map_err(|source| CgroupError {
            path: dir.clone(),
            source,
        })?;
        let mut cgroup = Self {
            dir,
            handle,
            limits: Vec::new(),
        };
        let memory = (memory_mib + VMM_OVERHEAD_MIB) << 20;
        cgroup.limit("memory.max", &memory.to_string());
        cgroup.limit("memory.swap.max", "0");
        cgroup.limit("pids.max", &(vcpus + EXTRA_TASKS).to_string());
        cgroup.limit("cpu.weight", "100");
        cgroup.limit(
            "cpu.max",
            &format!("{} 100000", (u64::from(vcpus) + 1) * 100_000),
        );
        Ok(cgroup)
    }

    /// Writes `value` to the cgroup's `file` if the host offers it; records it when written.
    fn limit(&mut self, file: &str, value: &str) {
        let path = self.dir.join(file);
        if !path.exists() {
            return;
        }
        match std::fs::write(&path, value) {
            Ok(()) => self.limits.push(format!("{file}={value}")),
            Err(err) => tracing::warn!(file = %path.display(), %err, "cannot set a VMM limit"),
        }
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory, open, for `CLONE_INTO_CGROUP`.
    pub fn handle(&self) -> &File {
        &self.handle
    }

    /// The limits applied, as `file=value`.
    pub fn limits(&self) -> &[String] {
        &self.limits
    }
}

impl Drop for VmCgroup {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir(&self.dir) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), %err, "cannot remove the VMM's cgroup");
            }
        }
    }
}

/// How long [`remove_leftover`] waits for a killed VMM to leave its cgroup.
const LEFTOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Removes the cgroup of VM `id` if its owner could not (a monitor or shim killed with its VMM
/// takes its cleanup with it): waits a little for a VMM still exiting, as its cgroup cannot go
/// while it holds a task.
pub fn remove_leftover(id: &str) {
    let Some(mount) = cgroup2_mount() else {
        return;
    };
    let dir = mount.join(PARENT).join(id);
    let deadline = std::time::Instant::now() + LEFTOVER_GRACE;
    loop {
        match std::fs::remove_dir(&dir) {
            Ok(()) => return,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                if std::time::Instant::now() >= deadline {
                    tracing::warn!(dir = %dir.display(), "the VMM's cgroup still has tasks; left in place");
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(err) => {
                tracing::warn!(dir = %dir.display(), %err, "cannot remove the VMM's cgroup");
                return;
            }
        }
    }
}

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Turns on, for `dir`'s children, the controllers of [`CONTROLLERS`] that `dir` has. A
/// refusal (a cgroup with processes of its own, say) leaves those limits out, as on a host
/// without the controller.
fn enable_controllers(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = CONTROLLERS
        .iter()
        .filter(|name| available.split_whitespace().any(|have| have == **name))
        .map(|name| format!("+{name}"))
        .collect();
    if wanted.is_empty() {
        return;
    }
    if let Err(err) = std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" ")) {
        tracing::debug!(dir = %dir.display(), %err, "cannot enable the VMM's cgroup controllers");
    }
}

/// Where cgroup v2 is mounted, from `/proc/self/mountinfo`; None on a host without it.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_of(&mountinfo)
}

/// The first cgroup2 mount point in a mountinfo text.
fn mount_of(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        if filesystem.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        mount.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let info = "25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw\n\
                    33 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mount_of(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(mount_of("25 30 0:22 / /x rw - tmpfs tmpfs rw\n"), None);
    }
}
