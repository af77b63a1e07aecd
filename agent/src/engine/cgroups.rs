//! A container's cgroup v2 directory: limits from the spec's linux.resources, membership,
//! freezing, OOM kill count, statistics and the process list.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;
use thiserror::Error;

use crate::init::mounts::enable_controllers_in;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("create cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Controllers(#[from] crate::init::mounts::MountError),
    #[error("cgroup {path} did not freeze within {seconds} s")]
    FreezeTimeout { path: PathBuf, seconds: u64 },
}

/// One container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    dir: PathBuf,
}

/// The parent of all container cgroups below the cgroup2 root, controllers enabled.
pub fn prepare_parent(cgroup_root: &Path) -> Result<PathBuf, CgroupError> {
    let parent = cgroup_root.join("rvm");
    fs::create_dir_all(&parent).map_err(|source| CgroupError::Create {
        path: parent.clone(),
        source,
    })?;
    enable_controllers_in(cgroup_root)?;
    enable_controllers_in(&parent)?;
    Ok(parent)
}

/// cgroup v1 cpu shares (2..262144) as a cgroup v2 cpu.weight (1..10000), as runc converts.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

impl Cgroup {
    /// Creates `parent/id`.
    pub fn create(parent: &Path, id: &str) -> Result<Self, CgroupError> {
        let dir = parent.join(id);
        fs::create_dir_all(&dir).map_err(|source| CgroupError::Create {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|source| CgroupError::Write {
            path,
            value: value.to_owned(),
            source,
        })
    }

    fn read(&self, file: &str) -> Result<String, CgroupError> {
        let path = self.dir.join(file);
        fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
    }

    /// Moves `pid` into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Applies memory.max, cpu.max, cpu.weight, pids.max and io.weight.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(memory) = resources.memory() {
            if let Some(limit) = memory.limit() {
                let value = if limit < 0 {
                    "max".to_owned()
                } else {
                    limit.to_string()
                };
                self.write("memory.max", &value)?;
            }
        }
        if let Some(cpu) = resources.cpu() {
            if cpu.quota().is_some() || cpu.period().is_some() {
                let quota = match cpu.quota() {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_owned(),
                };
                let period = cpu.period().unwrap_or(100_000);
                self.write("cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(shares) = cpu.shares() {
                self.write("cpu.weight", &shares_to_weight(shares).to_string())?;
            }
        }
        if let Some(pids) = resources.pids() {
            let limit = pids.limit();
            let value = if limit <= 0 {
                "max".to_owned()
            } else {
                limit.to_string()
            };
            self.write("pids.max", &value)?;
        }
        if let Some(weight) = resources.block_io().as_ref().and_then(|b| b.weight()) {
            // io.weight exists only with an IO cost model or BFQ in the kernel.
            if self.dir.join("io.weight").exists() {
                self.write("io.weight", &format!("default {weight}"))?;
            } else {
                tracing::warn!(cgroup = %self.dir.display(), weight, "io.weight is not available in this kernel; block IO weight ignored");
            }
        }
        Ok(())
    }

    /// The number of OOM kills recorded (memory.events oom_kill).
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.events")
            .map(|text| keyed(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// The pids in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.read("cgroup.procs")
            .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Freezes (true) or thaws the cgroup and waits until the kernel reports it done.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })?;
        let want = if frozen { 1 } else { 0 };
        for _ in 0..500 {
            let events = self.read("cgroup.events")?;
            if keyed(&events, "frozen") == want {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(CgroupError::FreezeTimeout {
            path: self.dir.clone(),
            seconds: 5,
        })
    }

    /// Kills every process in the cgroup (cgroup.kill).
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        self.write("cgroup.kill", "1")
    }

    /// Kills every process in the cgroup but those in `keep`, frozen meanwhile so that none
    /// forks past the list; thawed afterwards.
    pub fn kill_all_but(&self, keep: &[i32]) -> Result<(), CgroupError> {
        self.freeze(true)?;
        for pid in self.pids().into_iter().filter(|pid| !keep.contains(pid)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.freeze(false)
    }

    /// Removes the (empty) cgroup directory.
    pub fn remove(&self) {
        for _ in 0..100 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        tracing::warn!(cgroup = %self.dir.display(), "cgroup still busy; left in place");
    }

    /// Reads a flat-keyed or single-value file; missing files read as empty.
    pub fn read_or_empty(&self, file: &str) -> String {
        self.read(file).unwrap_or_default()
    }
}

/// The value of `key` in a flat-keyed cgroup file ("key value" lines); 0 when absent.
pub fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A single-value file: a number, or 0 for "max" and for anything unreadable.
pub fn single(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values() {
        let events = "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n";
        assert_eq!(keyed(events, "oom_kill"), 1);
        assert_eq!(keyed(events, "oom"), 2);
        assert_eq!(keyed(events, "missing"), 0);
        assert_eq!(single("max\n"), 0);
        assert_eq!(single("1234\n"), 1234);
    }

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }
}
