//! Where a container's files live: the state root (`/var/lib/rvm` or `--root`) and the runtime
//! directory for sockets (`/run/rvm`, or `<root>/run` when a root is given so tests stay isolated).
//! Every directory here is private (0700, see [`crate::host::private`]).

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::host::private;

/// The default state root.
pub const DEFAULT_ROOT: &str = "/var/lib/rvm";
/// The default runtime directory.
pub const DEFAULT_RUN: &str = "/run/rvm";

/// A directory or file of the layout that could not be created private.
#[derive(Debug, Error)]
#[error("cannot create {} private: {source}", path.display())]
pub struct CreateError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Creates directory `path` (and parents) private, naming it on failure.
fn private_dir(path: &Path) -> Result<(), CreateError> {
    private::create_dir_all(path).map_err(|source| CreateError {
        path: path.to_owned(),
        source,
    })
}

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

    /// `<run>/<id>`: the container's sockets, named by the full ID so that two IDs sharing a
    /// prefix never share sockets. Their paths may exceed `sun_path`: reach them through
    /// [`crate::host::unix_path`].
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.run.join(id)
    }

    /// Creates the state root and `<root>/containers` as 0700 (narrowing them if they exist).
    pub fn create_root(&self) -> Result<(), CreateError> {
        private_dir(&self.root)?;
        private_dir(&self.containers_dir())
    }

    /// Creates the runtime directory and the container's run directory as 0700 (narrowing them
    /// if they exist): the VMM's sockets inside are then reachable by root alone.
    pub fn create_run_dir(&self, id: &str) -> Result<PathBuf, CreateError> {
        private_dir(&self.run)?;
        let dir = self.run_dir(id);
        private_dir(&dir)?;
        Ok(dir)
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

    /// The VMM's own diagnostics (its stderr).
    pub fn vmm_log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("vmm.log")
    }

    /// Before a VM boots: its container and run directories as 0700 (with the root's), and its
    /// console and VMM logs as empty 0600 files, so that whoever opens them later (the VMM, the
    /// VMM's spawner) keeps them private. Existing directories are narrowed, existing logs kept.
    pub fn create_vm_files(&self, id: &str) -> Result<(), CreateError> {
        self.create_root()?;
        private_dir(&self.container_dir(id))?;
        self.create_run_dir(id)?;
        for log in [self.console_path(id), self.vmm_log_path(id)] {
            private::file_options()
                .append(true)
                .create(true)
                .open(&log)
                .and_then(|_| private::restrict(&log, private::FILE_MODE))
                .map_err(|source| CreateError { path: log, source })?;
        }
        Ok(())
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
    fn run_directories_are_named_by_the_full_id() {
        let layout = Layout::new(Some(PathBuf::from("/r")));
        let a = format!("{}a", "0".repeat(63));
        let b = format!("{}b", "0".repeat(63));
        assert_eq!(layout.run_dir(&a), Path::new("/r/run").join(&a));
        assert_ne!(layout.vsock_path(&a), layout.vsock_path(&b));
    }

    #[test]
    fn the_layouts_directories_are_private() {
        use crate::host::private::tests::mode_of;
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(Some(tmp.path().join("root")));
        layout.create_root().unwrap();
        let run_dir = layout.create_run_dir("abc").unwrap();
        for dir in [
            layout.root(),
            &layout.containers_dir(),
            layout.run(),
            &run_dir,
        ] {
            assert_eq!(mode_of(dir), 0o700, "{}", dir.display());
        }
    }

    #[test]
    fn a_vms_files_are_private() {
        use crate::host::private::tests::mode_of;
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(Some(tmp.path().join("root")));
        std::fs::create_dir_all(layout.container_dir("abc")).unwrap();
        std::fs::write(layout.console_path("abc"), b"earlier boot\n").unwrap();
        std::fs::set_permissions(
            layout.console_path("abc"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        layout.create_vm_files("abc").unwrap();
        assert_eq!(mode_of(&layout.container_dir("abc")), 0o700);
        assert_eq!(mode_of(&layout.run_dir("abc")), 0o700);
        assert_eq!(mode_of(&layout.vmm_log_path("abc")), 0o600);
        assert_eq!(mode_of(&layout.console_path("abc")), 0o600);
        let kept = std::fs::read(layout.console_path("abc")).unwrap();
        assert_eq!(kept, b"earlier boot\n");
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
