//! Where a container's files live: the state root (`/var/lib/rvm` or `--root`) and the runtime
//! directory for sockets (`/run/rvm`, or `<root>/run` when a root is given so tests stay isolated).

use std::path::{Path, PathBuf};

/// The default state root.
pub const DEFAULT_ROOT: &str = "/var/lib/rvm";
/// The default runtime directory.
pub const DEFAULT_RUN: &str = "/run/rvm";
/// Longest vsock socket path `rvm-vmm` accepts: `sun_path` holds 107 bytes, and the guest's
/// connections to host ports append `_<port>` to it.
pub const MAX_SOCKET_PATH: usize = 96;
/// Characters of the container ID that name its runtime directory (Docker's short ID): the full
/// 64 would leave too little of a socket path for the root's own path.
const RUN_DIR_ID_LEN: usize = 12;

/// The directories of one rvm installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
    run: PathBuf,
}

impl Layout {
    /// `root` is `--root`/`RVM_ROOT` when given; then sockets live under `<root>/run`.
    pub fn new(root: Option<PathBuf>) -> Self {
        match root {
            Some(root) => Self {
                run: root.join("run"),
                root,
            },
            None => Self {
                root: PathBuf::from(DEFAULT_ROOT),
                run: PathBuf::from(DEFAULT_RUN),
            },
        }
    }

    /// The layout of a root given as a plain path: the default root keeps the system runtime
    /// directory (`/run/rvm`), any other root holds its own (`<root>/run`).
    pub fn for_root(root: &Path) -> Self {
        if root == Path::new(DEFAULT_ROOT) {
            Self::new(None)
        } else {
            Self::new(Some(root.to_owned()))
        }
    }

    /// The state root (images, layers, containers, volumes).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The runtime directory (sockets; cleared on reboot).
    pub fn run(&self) -> &Path {
        &self.run
    }

    /// `<root>/containers`.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `<root>/containers/<id>`: state, config, log, scratch disk.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// `<run>/<short id>`: the container's sockets.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.run.join(id.get(..RUN_DIR_ID_LEN).unwrap_or(id))
    }

    /// The VMM's hybrid vsock socket of the container.
    pub fn vsock_path(&self, id: &str) -> PathBuf {
        self.run_dir(id).join("vsock")
    }

    /// `<root>/volumes`: named volumes as ext4 images.
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// The file of the container's state (`state.json`).
    pub fn state_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("state.json")
    }

    /// The file of the container's fixed configuration (`config.json`).
    pub fn config_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("config.json")
    }

    /// The container's log in Docker's json-file format.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(format!("{id}-json.log"))
    }

    /// The sparse ext4 scratch disk (overlay upper and work directories).
    pub fn scratch_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("scratch.ext4")
    }

    /// The guest's serial console, as the VMM writes it.
    pub fn console_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("console.log")
    }

    /// The monitor's own diagnostics.
    pub fn monitor_log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("monitor.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_root_holds_the_runtime_directory() {
        let layout = Layout::new(Some(PathBuf::from("/tmp/x")));
        assert_eq!(layout.run(), Path::new("/tmp/x/run"));
        assert_eq!(
            layout.vsock_path("abc"),
            PathBuf::from("/tmp/x/run/abc/vsock")
        );
    }

    #[test]
    fn default_root_as_a_path_keeps_the_system_run_directory() {
        assert_eq!(Layout::for_root(Path::new(DEFAULT_ROOT)), Layout::new(None));
        assert_eq!(
            Layout::for_root(Path::new("/tmp/r")).run(),
            Path::new("/tmp/r/run")
        );
    }

    #[test]
    fn default_layout_is_the_system_one() {
        let layout = Layout::new(None);
        assert_eq!(layout.root(), Path::new(DEFAULT_ROOT));
        assert_eq!(layout.run(), Path::new(DEFAULT_RUN));
        assert_eq!(
            layout.log_path("abc"),
            PathBuf::from("/var/lib/rvm/containers/abc/abc-json.log")
        );
    }
}
