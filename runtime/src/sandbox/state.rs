//! The container store: `<root>/containers/<id>/{config.json,state.json,intent.json}`, written
//! crash-safely, names unique under a store-wide lock, and the liveness rule: a container whose
//! monitor is gone is exited, with the reason recorded.
//!
//! One writer per file, so that no update is lost:
//! - `state.json` is written only by the container's monitor while it lives. Anyone else writes
//!   it only under the container's lock after finding no live monitor: the liveness rule
//!   ([`ContainerState::reconcile`], applied by `load`) records a dead monitor's end, and
//!   [`Containers::launch`] resets an ended container and records the pid of the monitor it
//!   starts. That monitor's first write takes the same lock, so it waits until its pid is
//!   recorded; a monitor dying before it wrote anything is still seen dead by the liveness rule.
//!   Every write is a read-modify-write under the lock, so the monitor never overwrites a
//!   liveness record with stale data either (it is alive, so there is none).
//! - `intent.json` (pause, restart intent) is written only by the CLI, under the same lock; the
//!   monitor only reads it.
//! - `config.json` is written at creation and by `rename`, under the store lock.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::jail::JailInfo;
use thiserror::Error;

use super::config::ContainerConfig;
use super::files::{write_atomic, Lock};
use super::id;
use super::layout::Layout;
use super::process::ProcessId;
use super::time;
use super::wait::{self, DirWatch};
use crate::host::private;

/// The exit code recorded when a container ended without its exit status being known.
pub const UNKNOWN_EXIT: i32 = 255;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("container store: cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("container store: {} is corrupt: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("container {0} still has a running monitor")]
    MonitorRunning(String),
    #[error("multiple containers match {0:?}: give more of the ID")]
    Ambiguous(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
}

type Result<T> = std::result::Result<T, StateError>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The status strings rvm shows (`inspect`'s `State.Status`, `ps` filtering), as Docker spells
/// them. A paused container shows as running, as rvm always has (its `Paused` flag says more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Prepared; the VM may be booting.
    Created,
    /// The container's process runs.
    Running,
    /// The process ended (or its monitor died).
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// How a run of the container ended, or why it could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub code: i32,
    pub oom_killed: bool,
    /// Why the container ended or could not start, when that was not its own doing.
    pub error: Option<String>,
    pub finished_at: Option<String>,
}

/// Where a container is in its life: one value, so that a paused container that has exited,
/// or a running one with an exit code, cannot be written down. `rvm restart`'s intent is not a
/// state of its own: the container is running, then exited, then running again
/// ([`Intent::restart`] only tells the monitor to keep a `--rm` container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Prepared; the VM may be booting. `failed`: the last start failed, and Docker keeps such
    /// a container "created", with the exit code and error.
    Created { failed: Option<Ended> },
    /// The container's process runs.
    Running,
    /// It runs with its cgroup frozen by `rvm pause` (from [`Intent::paused`]: the monitor
    /// never writes this one).
    Paused,
    /// The process ended (or its monitor died).
    Exited(Ended),
}

impl Lifecycle {
    /// The status string shown for it.
    pub fn status(&self) -> Status {
        match self {
            Self::Created { .. } => Status::Created,
            Self::Running | Self::Paused => Status::Running,
            Self::Exited(_) => Status::Exited,
        }
    }

    /// How the last run ended (or failed to start), if it did.
    pub fn ended(&self) -> Option<&Ended> {
        match self {
            Self::Created { failed } => failed.as_ref(),
            Self::Running | Self::Paused => None,
            Self::Exited(ended) => Some(ended),
        }
    }
}

/// What changes over a container's life (`state.json`; on disk in the flat shape of `Record`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Record", into = "Record")]
pub struct ContainerState {
    pub lifecycle: Lifecycle,
    /// The monitor process owning the VM, while there is one.
    pub monitor: Option<ProcessId>,
    /// The `rvm-vmm` process.
    pub vmm: Option<ProcessId>,
    /// The container's init pid inside the guest (kept after it ended, for `inspect`).
    pub guest_pid: Option<u32>,
    /// When the last run started (kept after it ended, as Docker keeps it).
    pub started_at: Option<String>,
    /// The jail of the last run's VMM.
    pub jail: Option<JailInfo>,
}

/// `state.json` as written since the first version: flat, so that an older rvm reads what this
/// one writes (its `paused` and `restarting` default to false when missing).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    status: Status,
    monitor: Option<ProcessId>,
    vmm: Option<ProcessId>,
    guest_pid: Option<u32>,
    exit_code: Option<i32>,
    #[serde(default)]
    oom_killed: bool,
    error: Option<String>,
    started_at: Option<String>,
    finished_at: Option<String>,
    /// Written only when known, so that a state without one keeps the first version's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jail: Option<JailInfo>,
}

impl From<Record> for ContainerState {
    fn from(record: Record) -> Self {
        let ended = |code| Ended {
            code,
            oom_killed: record.oom_killed,
            error: record.error.clone(),
            finished_at: record.finished_at.clone(),
        };
        let lifecycle = match record.status {
            Status::Created => Lifecycle::Created {
                failed: record.exit_code.map(ended),
            },
            Status::Running => Lifecycle::Running,
            // An exit whose status was never recorded is an unknown one.
            Status::Exited => Lifecycle::Exited(ended(record.exit_code.unwrap_or(UNKNOWN_EXIT))),
        };
        Self {
            lifecycle,
            monitor: record.monitor,
            vmm: record.vmm,
            guest_pid: record.guest_pid,
            started_at: record.started_at,
            jail: record.jail,
        }
    }
}

impl From<ContainerState> for Record {
    fn from(state: ContainerState) -> Self {
        let status = state.lifecycle.status();
        let ended = state.lifecycle.ended().cloned();
        Self {
            status,
            monitor: state.monitor,
            vmm: state.vmm,
            guest_pid: state.guest_pid,
            exit_code: ended.as_ref().map(|e| e.code),
            oom_killed: ended.as_ref().is_some_and(|e| e.oom_killed),
            error: ended.as_ref().and_then(|e| e.error.clone()),
            started_at: state.started_at,
            finished_at: ended.and_then(|e| e.finished_at),
            jail: state.jail,
        }
    }
}

/// What the CLI records about a container while its monitor may live (`intent.json`): the
/// monitor only reads it. Cleared by [`Containers::launch`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Intent {
    /// `rvm pause` froze the container's cgroup (meaningful while it runs).
    pub paused: bool,
    /// `rvm restart` is stopping the container to start it again: the monitor keeps a `--rm`
    /// container instead of removing it.
    pub restart: bool,
}

impl ContainerState {
    /// A freshly created container.
    pub fn created() -> Self {
        Self {
            lifecycle: Lifecycle::Created { failed: None },
            monitor: None,
            vmm: None,
            guest_pid: None,
            started_at: None,
            jail: None,
        }
    }

    /// The status string shown for it.
    pub fn status(&self) -> Status {
        self.lifecycle.status()
    }

    /// The exit code of the last run (or failed start), if it ended.
    pub fn exit_code(&self) -> Option<i32> {
        self.lifecycle.ended().map(|ended| ended.code)
    }

    /// Whether the container runs with its cgroup frozen by `rvm pause`.
    pub fn is_paused(&self) -> bool {
        self.lifecycle == Lifecycle::Paused
    }

    /// Whether a monitor is recorded and still alive.
    pub fn monitor_alive(&self) -> bool {
        self.monitor.is_some_and(|m| m.is_alive())
    }

    /// Applies the liveness rule: a created or running container whose monitor is gone has
    /// exited (keeping the code and error of a failed start). Returns whether anything changed.
    pub fn reconcile(&mut self) -> bool {
        if matches!(self.lifecycle, Lifecycle::Exited(_)) {
            return false;
        }
        let Some(monitor) = self.monitor else {
            return false;
        };
        if monitor.is_alive() {
            return false;
        }
        let failed = self.lifecycle.ended().cloned().unwrap_or(Ended {
            code: UNKNOWN_EXIT,
            oom_killed: false,
            error: None,
            finished_at: None,
        });
        self.lifecycle = Lifecycle::Exited(Ended {
            error: failed.error.or_else(|| {
                Some(format!(
                    "the container's monitor process (pid {}) died; its VM is gone",
                    monitor.pid
                ))
            }),
            finished_at: failed.finished_at.or_else(|| Some(time::now_rfc3339())),
            ..failed
        });
        self.monitor = None;
        if let Some(vmm) = self.vmm.take() {
            // Normally the VMM dies with its monitor (parent-death signal); make sure of it.
            vmm.signal(rustix::process::Signal::KILL);
        }
        true
    }

    /// This state as seen with the CLI's `intent`: a running container it paused is paused.
    fn with_intent(mut self, intent: &Intent) -> Self {
        if intent.paused && self.lifecycle == Lifecycle::Running {
            self.lifecycle = Lifecycle::Paused;
        }
        self
    }
}

/// A container's configuration and current state.
#[derive(Debug, Clone)]
pub struct Container {
    pub config: ContainerConfig,
    pub state: ContainerState,
    pub intent: Intent,
}

/// A start of a container under way: holds the container's lock, so that its new monitor
/// cannot write `state.json` before its pid is recorded (see the module doc).
#[derive(Debug)]
pub struct Launch<'a> {
    containers: &'a Containers,
    id: String,
    state: ContainerState,
    _lock: Lock,
}

impl Launch<'_> {
    /// Records `pid` as the container's monitor, so that its death is noticed even if it dies
    /// before it could record itself; releases the lock.
    pub fn record_monitor(mut self, pid: u32) -> Result<()> {
        self.state.monitor = ProcessId::of(pid);
        let path = self.containers.layout.state_path(&self.id);
        self.containers.write_json(&path, &self.state)
    }
}

/// The containers under one root.
#[derive(Debug, Clone)]
pub struct Containers {
    layout: Layout,
}

impl Containers {
    /// Opens the store, creating `<root>/containers` when missing.
    pub fn open(layout: &Layout) -> Result<Self> {
        layout
            .create_root()
            .map_err(|e| io_err("create", &e.path)(e.source))?;
        Ok(Self {
            layout: layout.clone(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn store_lock(&self) -> Result<Lock> {
        let path = self.layout.containers_dir().join(".lock");
        Lock::exclusive(&path).map_err(io_err("lock", &path))
    }

    fn container_lock(&self, id: &str) -> Result<Lock> {
        let path = self.layout.container_dir(id).join(".lock");
        Lock::exclusive(&path).map_err(|source| match source.kind() {
            // The container's directory is gone: removed meanwhile.
            io::ErrorKind::NotFound => StateError::NotFound(id.to_owned()),
            _ => io_err("lock", &path)(source),
        })
    }

    /// Records a new container; refuses a name already in use. With `config.name` empty, a
    /// free generated name is chosen and stored. Returns the stored configuration.
    pub fn create(&self, mut config: ContainerConfig) -> Result<ContainerConfig> {
        let _lock = self.store_lock()?;
        let existing = self.load_all_unlocked()?;
        if config.name.is_empty() {
            config.name = (0..)
                .map(|attempt| id::generated_name(&config.id, attempt))
                .find(|name| !existing.iter().any(|c| c.config.name == *name))
                .unwrap_or_default();
        } else if let Some(other) = existing.iter().find(|c| c.config.name == config.name) {
            return Err(StateError::NameInUse {
                name: config.name.clone(),
                id: other.config.id.clone(),
            });
        }
        let dir = self.layout.container_dir(&config.id);
        private::create_dir(&dir).map_err(io_err("create", &dir))?;
        let result = self
            .write_json(&self.layout.config_path(&config.id), &config)
            .and_then(|()| {
                self.write_json(
                    &self.layout.state_path(&config.id),
                    &ContainerState::created(),
                )
            });
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        result.map(|()| config)
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StateError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(path, &bytes).map_err(io_err("write", path))
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, path: &Path, id: &str) -> Result<T> {
        let bytes = fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StateError::NotFound(id.to_owned()),
            _ => StateError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            },
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
            path: path.to_owned(),
            source,
        })
    }

    /// The IDs of every container, in no particular order.
    pub fn ids(&self) -> Result<Vec<String>> {
        let dir = self.layout.containers_dir();
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().join("config.json").is_file() {
                ids.push(name);
            }
        }
        Ok(ids)
    }

    fn load_all_unlocked(&self) -> Result<Vec<Container>> {
        let mut all = Vec::new();
        for id in self.ids()? {
            match self.load_raw(&id) {
                Ok(container) => all.push(container),
                // Removed meanwhile.
                Err(StateError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(all)
    }

    fn load_raw(&self, id: &str) -> Result<Container> {
        let state: ContainerState = self.read_json(&self.layout.state_path(id), id)?;
        let intent = self.read_intent(id)?;
        Ok(Container {
            config: self.read_json(&self.layout.config_path(id), id)?,
            state: state.with_intent(&intent),
            intent,
        })
    }

    fn intent_path(&self, id: &str) -> PathBuf {
        self.layout.container_dir(id).join("intent.json")
    }

    fn read_intent(&self, id: &str) -> Result<Intent> {
        match self.read_json(&self.intent_path(id), id) {
            Err(StateError::NotFound(_)) => Ok(Intent::default()),
            other => other,
        }
    }

    /// Read-modify-write of the CLI's intent (`intent.json`) under the container's lock.
    pub fn set_intent(&self, id: &str, change: impl FnOnce(&mut Intent)) -> Result<Intent> {
        let _lock = self.container_lock(id)?;
        // A container removed meanwhile must not get its directory back.
        self.read_json::<ContainerState>(&self.layout.state_path(id), id)?;
        let mut intent = self.read_intent(id)?;
        let before = intent.clone();
        change(&mut intent);
        if intent != before {
            self.write_json(&self.intent_path(id), &intent)?;
        }
        Ok(intent)
    }

    /// Begins a start of container `id`: under its lock, refuses when a monitor lives, and
    /// otherwise resets what an earlier run left (state and intent) to a created container.
    /// The caller starts the monitor and records it with [`Launch::record_monitor`].
    pub fn launch(&self, id: &str) -> Result<Launch<'_>> {
        let lock = self.container_lock(id)?;
        let path = self.layout.state_path(id);
        let mut state: ContainerState = self.read_json(&path, id)?;
        state.reconcile();
        if state.monitor_alive() {
            return Err(StateError::MonitorRunning(id.to_owned()));
        }
        state = ContainerState {
            started_at: state.started_at,
            ..ContainerState::created()
        };
        let intent = self.intent_path(id);
        match fs::remove_file(&intent) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &intent)(err))
            }
            _ => {}
        }
        self.write_json(&path, &state)?;
        Ok(Launch {
            containers: self,
            id: id.to_owned(),
            state,
            _lock: lock,
        })
    }

    /// Loads a container, applying (and recording) the liveness rule.
    pub fn load(&self, id: &str) -> Result<Container> {
        let container = self.load_raw(id)?;
        if container.state.status() == Status::Exited || container.state.monitor_alive() {
            return Ok(container);
        }
        let state = self.update(id, |_| {})?.with_intent(&container.intent);
        Ok(Container { state, ..container })
    }

    /// Every container, newest first, with the liveness rule applied.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut all = Vec::new();
        for id in self.ids()? {
            match self.load(&id) {
                Ok(container) => all.push(container),
                Err(StateError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        all.sort_by(|a, b| b.config.created.cmp(&a.config.created));
        Ok(all)
    }

    /// Gives container `id` the name `name` (checked by the caller), refusing one in use by
    /// another container; under the store lock, as [`Containers::create`] names containers.
    pub fn rename(&self, id: &str, name: &str) -> Result<()> {
        let _lock = self.store_lock()?;
        let existing = self.load_all_unlocked()?;
        if let Some(other) = existing
            .iter()
            .find(|c| c.config.name == name && c.config.id != id)
        {
            return Err(StateError::NameInUse {
                name: name.to_owned(),
                id: other.config.id.clone(),
            });
        }
        let path = self.layout.config_path(id);
        let mut config: ContainerConfig = self.read_json(&path, id)?;
        config.name = name.to_owned();
        self.write_json(&path, &config)
    }

    /// Refuses `name` when a container already has it (Docker's "Conflict" message).
    pub fn check_name_free(&self, name: &str) -> Result<()> {
        match self
            .load_all_unlocked()?
            .into_iter()
            .find(|c| c.config.name == name)
        {
            Some(other) => Err(StateError::NameInUse {
                name: name.to_owned(),
                id: other.config.id,
            }),
            None => Ok(()),
        }
    }

    /// Finds a container by full ID, name, or unique ID prefix (as Docker does).
    pub fn find(&self, reference: &str) -> Result<String> {
        let all = self.load_all_unlocked()?;
        if let Some(c) = all
            .iter()
            .find(|c| c.config.id == reference || c.config.name == reference)
        {
            return Ok(c.config.id.clone());
        }
        let mut matching = all
            .iter()
            .filter(|c| !reference.is_empty() && c.config.id.starts_with(reference));
        match (matching.next(), matching.next()) {
            (Some(c), None) => Ok(c.config.id.clone()),
            (Some(_), Some(_)) => Err(StateError::Ambiguous(reference.to_owned())),
            _ => Err(StateError::NotFound(reference.to_owned())),
        }
    }

    /// Read-modify-write of the state under the container's lock; the liveness rule is applied
    /// before `change`. Returns the new state. Only the monitor (and the liveness rule, once the
    /// monitor is dead) may change `state.json`: see the module doc.
    pub(crate) fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerState),
    ) -> Result<ContainerState> {
        let _lock = self.container_lock(id)?;
        let path = self.layout.state_path(id);
        let mut state: ContainerState = self.read_json(&path, id)?;
        let before = state.clone();
        state.reconcile();
        change(&mut state);
        if state != before {
            self.write_json(&path, &state)?;
        }
        Ok(state)
    }

    /// Waits until `check` returns something for container `id` (`None` given to it once the
    /// container is removed), re-checking on every change of its files and when its monitor
    /// dies (the liveness rule is applied at each check). Returns `None` when `timeout` passed
    /// first; a removed container `check` does not accept is an error, as nothing can change.
    pub fn wait_until<T>(
        &self,
        id: &str,
        timeout: Option<Duration>,
        mut check: impl FnMut(Option<&Container>) -> Option<T>,
    ) -> Result<Option<T>> {
        let deadline = wait::deadline(timeout);
        let dir = self.layout.container_dir(id);
        // Set up before the first read: see `wait` for why no change slips through.
        let watch = match DirWatch::new(&dir) {
            Ok(watch) => Some(watch),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(io_err("watch", &dir)(err)),
        };
        loop {
            let container = match self.load(id) {
                Ok(container) => Some(container),
                Err(StateError::NotFound(_)) => None,
                Err(err) => return Err(err),
            };
            if let Some(found) = check(container.as_ref()) {
                return Ok(Some(found));
            }
            let (Some(watch), Some(container)) = (&watch, container) else {
                return Err(StateError::NotFound(id.to_owned()));
            };
            // A dead monitor has been dealt with by `load`; only a live one is worth watching.
            let monitor = match container.state.monitor.map(wait::pidfd) {
                // It died since `load` looked: look again, so that the liveness rule records it
                // (once exited, nothing more is recorded for a dead monitor).
                Some(None) if container.state.status() != Status::Exited => continue,
                pidfd => pidfd.flatten(),
            };
            if !wait::block(watch, monitor.as_ref(), deadline).map_err(io_err("watch", &dir))? {
                return Ok(None);
            }
        }
    }

    /// Deletes the container's files and sockets. The caller has made sure nothing runs.
    pub fn remove(&self, id: &str) -> Result<()> {
        // The address, TAP and port forwards go first: the config says which they are.
        if let Ok(container) = self.load(id) {
            if let Some(endpoint) = &container.config.endpoint {
                if let Err(err) =
                    crate::network::endpoint::release(self.layout.root(), id, endpoint)
                {
                    tracing::warn!(%err, "cannot release the container's network");
                }
            }
        }
        crate::jail::cgroup::remove_leftover(id);
        for dir in [self.layout.run_dir(id), self.layout.container_dir(id)] {
            match fs::remove_dir_all(&dir) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(StateError::Io {
                        action: "remove",
                        path: dir,
                        source: err,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A container store in a temporary directory and a minimal container config, for the tests of
/// the store and of the modules that drive it (the monitor).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::sandbox::config::{NetworkMode, VmSize};

    pub(crate) fn store() -> (tempfile::TempDir, Containers) {
        let dir = tempfile::tempdir().unwrap();
        let containers = Containers::open(&Layout::for_root(dir.path())).unwrap();
        (dir, containers)
    }

    pub(crate) fn config(id: &str) -> ContainerConfig {
        ContainerConfig {
            id: id.into(),
            name: String::new(),
            image: "busybox".into(),
            image_id: "sha256:x".into(),
            created: String::new(),
            spec: oci_spec::runtime::Spec::default(),
            layers: Vec::new(),
            scratch: "/c/scratch.ext4".into(),
            volumes: Vec::new(),
            vm: VmSize {
                memory_mib: 256,
                vcpus: 1,
            },
            network: NetworkMode::None,
            endpoint: None,
            tty: false,
            open_stdin: false,
            auto_remove: false,
            stop_signal: None,
            privileged: false,
            devices: Vec::new(),
            log: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{config, store};
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    /// Long enough never to be reached by a working waiter; a broken one fails instead of hanging.
    const NEVER: Duration = Duration::from_secs(60);

    /// A process standing in for a monitor: `cat` lives until its stdin closes.
    fn monitor_process() -> (std::process::Child, ProcessId) {
        let child = Command::new("cat").stdin(Stdio::piped()).spawn().unwrap();
        let id = ProcessId::of(child.id()).unwrap();
        (child, id)
    }

    #[test]
    fn a_containers_files_are_private() {
        use crate::host::private::tests::mode_of;
        let (_dir, containers) = store();
        containers.create(config("p1")).unwrap();
        containers
            .set_intent("p1", |intent| intent.paused = true)
            .unwrap();
        let layout = containers.layout();
        assert_eq!(mode_of(layout.root()), 0o700);
        assert_eq!(mode_of(&layout.containers_dir()), 0o700);
        assert_eq!(mode_of(&layout.container_dir("p1")), 0o700);
        for file in ["config.json", "state.json", "intent.json"] {
            let path = layout.container_dir("p1").join(file);
            assert_eq!(mode_of(&path), 0o600, "{file}");
        }
    }

    #[test]
    fn a_waiter_is_woken_by_a_state_change() {
        let (_dir, containers) = store();
        containers.create(config("a1")).unwrap();
        let (checked_tx, checked_rx) = mpsc::channel();
        let writer = {
            let containers = containers.clone();
            std::thread::spawn(move || {
                // Only after the waiter has seen the old state: the change must wake it.
                checked_rx.recv().unwrap();
                containers
                    .update("a1", |state| state.lifecycle = Lifecycle::Running)
                    .unwrap();
            })
        };
        let mut checks = 0;
        let status = containers
            .wait_until("a1", Some(NEVER), |found| {
                checks += 1;
                let status = found.unwrap().state.status();
                if checks == 1 {
                    checked_tx.send(()).unwrap();
                }
                (status == Status::Running).then_some(status)
            })
            .unwrap();
        writer.join().unwrap();
        assert_eq!(status, Some(Status::Running));
        assert!(checks >= 2, "the first check saw the old state");
    }

    #[test]
    fn a_waiter_notices_a_monitor_dying_without_writing() {
        let (_dir, containers) = store();
        containers.create(config("b2")).unwrap();
        let (mut child, monitor) = monitor_process();
        containers
            .update("b2", |state| {
                state.lifecycle = Lifecycle::Running;
                state.monitor = Some(monitor);
            })
            .unwrap();
        let mut stdin = child.stdin.take();
        let state = containers
            .wait_until("b2", Some(NEVER), |found| {
                let state = &found.unwrap().state;
                // The monitor ends after the first check, writing nothing.
                drop(stdin.take());
                (state.status() == Status::Exited).then(|| state.clone())
            })
            .unwrap()
            .unwrap();
        child.wait().unwrap();
        let Lifecycle::Exited(ended) = state.lifecycle else {
            panic!("not exited: {state:?}");
        };
        assert_eq!(ended.code, UNKNOWN_EXIT);
        assert!(ended.error.unwrap().contains("monitor process"));
        assert_eq!(state.monitor, None);
    }

    #[test]
    fn a_waiter_sees_the_container_removed() {
        let (_dir, containers) = store();
        containers.create(config("c3")).unwrap();
        let mut removed = false;
        let waited = containers
            .wait_until("c3", Some(NEVER), |found| {
                if found.is_none() {
                    return Some("gone");
                }
                if !removed {
                    removed = true;
                    containers.remove("c3").unwrap();
                }
                None
            })
            .unwrap();
        assert_eq!(waited, Some("gone"));
    }

    #[test]
    fn a_waiter_gives_up_at_its_timeout() {
        let (_dir, containers) = store();
        containers.create(config("d4")).unwrap();
        let waited = containers
            .wait_until("d4", Some(Duration::ZERO), |_| None::<()>)
            .unwrap();
        assert_eq!(waited, None);
    }

    #[test]
    fn launch_clears_the_last_run_and_records_the_monitor() {
        let (_dir, containers) = store();
        containers.create(config("e5")).unwrap();
        containers
            .update("e5", |state| {
                state.lifecycle = Lifecycle::Exited(Ended {
                    code: 3,
                    oom_killed: false,
                    error: None,
                    finished_at: Some("then".into()),
                });
            })
            .unwrap();
        containers
            .set_intent("e5", |intent| {
                intent.paused = true;
                intent.restart = true;
            })
            .unwrap();
        let (mut child, monitor) = monitor_process();
        containers
            .launch("e5")
            .unwrap()
            .record_monitor(monitor.pid)
            .unwrap();
        let container = containers.load("e5").unwrap();
        assert_eq!(
            container.state.lifecycle,
            Lifecycle::Created { failed: None }
        );
        assert_eq!(container.state.monitor, Some(monitor));
        assert_eq!(container.intent, Intent::default());

        let refused = containers.launch("e5").unwrap_err();
        assert!(
            matches!(refused, StateError::MonitorRunning(_)),
            "{refused}"
        );
        drop(child.stdin.take());
        child.wait().unwrap();
    }

    #[test]
    fn the_monitors_writes_keep_the_cli_intent() {
        let (_dir, containers) = store();
        containers.create(config("f6")).unwrap();
        containers
            .set_intent("f6", |intent| intent.paused = true)
            .unwrap();
        containers
            .update("f6", |state| state.lifecycle = Lifecycle::Running)
            .unwrap();
        let container = containers.load("f6").unwrap();
        assert!(container.state.is_paused());
    }

    #[test]
    fn intent_of_a_removed_container_is_not_written() {
        let (_dir, containers) = store();
        containers.create(config("g7")).unwrap();
        containers.remove("g7").unwrap();
        let error = containers
            .set_intent("g7", |intent| intent.restart = true)
            .unwrap_err();
        assert!(matches!(error, StateError::NotFound(_)), "{error}");
    }

    fn ended(code: i32) -> Ended {
        Ended {
            code,
            oom_killed: code == 137,
            error: Some("why".into()),
            finished_at: Some("2026-12-05T00:00:00Z".into()),
        }
    }

    fn state(lifecycle: Lifecycle) -> ContainerState {
        ContainerState {
            lifecycle,
            guest_pid: Some(7),
            started_at: Some("2026-12-04T00:00:00Z".into()),
            ..ContainerState::created()
        }
    }

    #[test]
    fn every_written_lifecycle_round_trips_through_state_json() {
        for lifecycle in [
            Lifecycle::Created { failed: None },
            Lifecycle::Created {
                failed: Some(ended(127)),
            },
            Lifecycle::Running,
            Lifecycle::Exited(ended(137)),
        ] {
            let written = state(lifecycle);
            let json = serde_json::to_string(&written).unwrap();
            let read: ContainerState = serde_json::from_str(&json).unwrap();
            assert_eq!(read, written, "{json}");
        }
    }

    #[test]
    fn a_pause_is_not_written_to_state_json() {
        // The pause lives in the CLI's intent.json; the monitor's file says running.
        let json = serde_json::to_value(state(Lifecycle::Paused)).unwrap();
        assert_eq!(json["status"], "running");
        let read: ContainerState = serde_json::from_value(json).unwrap();
        assert_eq!(read.lifecycle, Lifecycle::Running);
        let paused = read.with_intent(&Intent {
            paused: true,
            restart: false,
        });
        assert_eq!(paused.lifecycle, Lifecycle::Paused);
    }

    #[test]
    fn an_exit_is_only_paused_while_running() {
        let exited = state(Lifecycle::Exited(ended(1))).with_intent(&Intent {
            paused: true,
            restart: true,
        });
        assert_eq!(exited.lifecycle, Lifecycle::Exited(ended(1)));
        assert!(!exited.is_paused());
    }

    #[test]
    fn state_json_keeps_the_flat_shape_older_versions_read() {
        let json = serde_json::to_value(state(Lifecycle::Exited(ended(137)))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "exited",
                "monitor": null,
                "vmm": null,
                "guest_pid": 7,
                "exit_code": 137,
                "oom_killed": true,
                "error": "why",
                "started_at": "2026-12-04T00:00:00Z",
                "finished_at": "2026-12-05T00:00:00Z",
            })
        );
    }

    #[test]
    fn an_older_state_json_is_read() {
        let old = r#"{"status":"created","monitor":null,"vmm":null,"guest_pid":null,
            "exit_code":126,"oom_killed":false,"error":"cannot run","started_at":null,
            "finished_at":"t","paused":false,"restarting":true}"#;
        let read: ContainerState = serde_json::from_str(old).unwrap();
        let failed = Ended {
            code: 126,
            oom_killed: false,
            error: Some("cannot run".into()),
            finished_at: Some("t".into()),
        };
        assert_eq!(
            read.lifecycle,
            Lifecycle::Created {
                failed: Some(failed)
            }
        );
        let unknown: ContainerState = serde_json::from_str(r#"{"status":"exited"}"#).unwrap();
        assert_eq!(unknown.exit_code(), Some(UNKNOWN_EXIT));
    }

    #[test]
    fn status_strings_are_dockers() {
        let shown = [
            (Lifecycle::Created { failed: None }, "created"),
            (
                Lifecycle::Created {
                    failed: Some(ended(125)),
                },
                "created",
            ),
            (Lifecycle::Running, "running"),
            // As rvm has always shown it: `State.Paused` is what says paused.
            (Lifecycle::Paused, "running"),
            (Lifecycle::Exited(ended(0)), "exited"),
        ];
        for (lifecycle, text) in shown {
            assert_eq!(lifecycle.status().as_str(), text, "{lifecycle:?}");
            assert_eq!(serde_json::to_value(lifecycle.status()).unwrap(), text);
        }
    }
}
