//! One container: its rootfs, cgroup, init process, execs, the pipes that hold its init
//! helper between create and start, and the host files it returns when the init exits.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::cgroups::Cgroup;
use super::host_dirs::PrivateCopy;
use super::host_files::ReturnedFile;
use super::process::Process;
use super::seccomp::SeccompPolicy;

/// The init helper's pipes until start: the start byte goes to `start`, the exec result comes on
/// `status`.
#[derive(Debug)]
pub struct PendingStart {
    pub start: File,
    pub status: BufReader<File>,
}

#[derive(Debug)]
pub struct Container {
    pub id: String,
    /// The agent's directory for this container (helper configs, rootfs mount point).
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    /// The rootfs is an overlay the agent mounted (and unmounts on removal).
    pub overlay: bool,
    /// The overlay's upper and work directories on the scratch disk.
    pub scratch_dirs: Vec<PathBuf>,
    pub cgroup: Cgroup,
    pub init: Arc<Process>,
    pub execs: Mutex<HashMap<String, Arc<Process>>>,
    pub pending_start: Mutex<Option<PendingStart>>,
    pub started: AtomicBool,
    pub shutdown_on_exit: bool,
    /// The filters of its init, which its execs get too.
    pub seccomp: SeccompPolicy,
    /// It lives in its pod sandbox's pid namespace, where its init is not PID 1: the init's exit
    /// does not end the rest of its processes by itself (the engine kills them, as runc's shim
    /// does for such a container).
    pub shares_pid_namespace: bool,
    /// The pids of its running exec helpers (in its cgroup, outside its pid namespace), which
    /// survive the kill of what is left at the init's exit to report their process's end.
    pub exec_helpers: Mutex<Vec<i32>>,
    /// Host files to read back when the init exits.
    pub returned_files: Vec<ReturnedFile>,
    /// Its private copies of host directories, which the host may update.
    pub copies: Vec<PrivateCopy>,
    /// What they held when it exited: (destination, last bytes).
    pub final_files: Mutex<Vec<(PathBuf, Vec<u8>)>>,
}

impl Container {
    pub fn execs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn exec_helpers(&self) -> std::sync::MutexGuard<'_, Vec<i32>> {
        self.exec_helpers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The init process ("") or the named exec.
    pub fn process(&self, exec_id: &str) -> Option<Arc<Process>> {
        if exec_id.is_empty() {
            Some(self.init.clone())
        } else {
            self.execs().get(exec_id).cloned()
        }
    }
}
