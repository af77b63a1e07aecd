//! The in-guest container engine, modelled on youki's libcontainer: a container is created from
//! an OCI runtime spec (rootfs from layer disks, cgroup, namespaces, mounts, process set-up in a
//! helper), started, exec'd into, signalled, waited for, measured and removed. One module per
//! concept; the agent's ttrpc service is a thin layer over [`Engine`].

pub mod capabilities;
pub mod cgroups;
pub mod command;
pub mod container;
pub mod device_nodes;
pub mod devices;
pub mod handoff;
pub mod host_dirs;
pub mod host_files;
pub mod process;
pub mod process_setup;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_oci;
pub mod spawn;
pub mod stats;
pub mod stdio;
pub mod syscall_table;
pub mod user;
pub mod volumes;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::mount::{umount2, MntFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};
use oci_spec::runtime::{LinuxResources, Process as OciProcess, Spec};
use rvm_protocol::namespace::SharedNamespace;
use thiserror::Error;
use tokio::sync::Notify;

use crate::disks::{self, DiskError, Disks};
use crate::netconfig::NetworkFiles;
use crate::reaper::{ExitStatus, Reaper};
use cgroups::{Cgroup, CgroupError};
use command::ExecFailure;
use container::{Container, PendingStart};
use handoff::{ExecConfig, HelperMessage, InitConfig, HELPER_ARG};
use process::{ExitRecord, Process};
use seccomp::SeccompPolicy;
use stdio::{ChildStdio, ProcessStdio};

pub use seccomp::SECCOMP_ANNOTATION;
/// The guest's devtmpfs, whose nodes a privileged container gets.
const GUEST_DEV: &str = "/dev";
/// How long removal waits for a killed container to exit.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("container {0:?} does not exist")]
    NoContainer(String),
    #[error("container {0:?} already exists")]
    ContainerExists(String),
    #[error("container {container:?} has no process {exec_id:?}")]
    NoProcess { container: String, exec_id: String },
    #[error("exec {exec_id:?} already exists in container {container:?}")]
    ExecExists { container: String, exec_id: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("container {container:?}: {reason}")]
    State { container: String, reason: String },
    #[error("set up container {container:?}: {message}")]
    Setup { container: String, message: String },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("container device filter: {0}")]
    Devices(#[from] devices::DeviceError),
    #[error("container {0}")]
    DeviceNode(#[from] device_nodes::NodeError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error("container seccomp profile: {0}")]
    Seccomp(#[from] seccomp_oci::ProfileError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

/// The clone flag of a namespace a pod's container may join from its sandbox. The pid
/// namespace is joined when the init helper is created (see `spawn`), the others by the
/// helper itself.
fn clone_flag(namespace: SharedNamespace) -> CloneFlags {
    match namespace {
        SharedNamespace::Ipc => CloneFlags::CLONE_NEWIPC,
        SharedNamespace::Uts => CloneFlags::CLONE_NEWUTS,
        SharedNamespace::Pid => CloneFlags::CLONE_NEWPID,
    }
}

/// The same by name, for the helper, which gets the names in its [`InitConfig`].
pub(crate) fn sandbox_namespace_flag(name: &str) -> Option<CloneFlags> {
    name.parse().ok().map(clone_flag)
}

/// The sandbox's pid namespace out of `join`, if it is there: the helper must be born in it,
/// since setns(2) moves only the children created afterwards into a pid namespace.
fn split_pid_namespace(join: &mut Vec<(SharedNamespace, PathBuf)>) -> Option<PathBuf> {
    let index = join
        .iter()
        .position(|(namespace, _)| *namespace == SharedNamespace::Pid)?;
    Some(join.remove(index).1)
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

fn invalid(what: impl Into<String>, reason: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Where the engine keeps things, and the helper binary it starts.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The `rvm-agent` binary (`/proc/self/exe` in the guest).
    pub helper: PathBuf,
    /// Per-container directories and disk mounts live below this (`/run/rvm`).
    pub run_dir: PathBuf,
    /// The cgroup2 mount (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
}

impl EngineConfig {
    /// The guest's layout.
    pub fn guest() -> Self {
        Self {
            helper: PathBuf::from("/proc/self/exe"),
            run_dir: PathBuf::from("/run/rvm"),
            cgroup_root: PathBuf::from(crate::init::mounts::CGROUP_ROOT),
        }
    }
}

/// What CreateContainer asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub id: String,
    pub spec_json: Vec<u8>,
    /// Layer disk serials, lowest first. Empty: the spec's root.path is the rootfs as is.
    pub layers: Vec<String>,
    pub scratch: String,
    pub terminal: bool,
    pub stdin: bool,
    pub shutdown_on_exit: bool,
    /// Volume disks bound into the container.
    pub volumes: Vec<volumes::VolumeRequest>,
    /// Contents of host files the spec bind-mounts.
    pub files: Vec<host_files::HostFile>,
    /// Trees of host directories the spec bind-mounts.
    pub directories: Vec<host_dirs::HostDirectory>,
    /// The pod's sandbox container, whose `sandbox_namespaces` this one joins.
    pub sandbox_id: String,
    /// [`SharedNamespace`] names, as on the wire; parsed by the create.
    pub sandbox_namespaces: Vec<String>,
    /// Host block devices on the VM's disks, each made a node in the container.
    pub devices: Vec<device_nodes::DeviceRequest>,
}

/// What StartContainer and ExecProcess report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub pid: i32,
    /// The command could not be executed; the process has exited with `failure.status`.
    pub failure: Option<ExecFailure>,
}

/// The container engine of one guest.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    disks: Disks,
    reaper: Reaper,
    cgroup_parent: PathBuf,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    power_off: Arc<Notify>,
    /// The /etc files of ConfigureNetwork, written into each container's rootfs.
    network_files: Mutex<Option<NetworkFiles>>,
    /// The VM's directories shared by its containers (Kubernetes emptyDirs).
    pod_dirs: host_dirs::PodDirectories,
}

/// Container and exec ids become paths and cgroup names.
fn check_id(kind: &str, id: &str) -> Result<(), EngineError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            format!("{kind} id {id:?}"),
            "use 1-128 letters, digits, '-', '_' or '.'",
        ))
    }
}

fn parse_spec(json: &[u8]) -> Result<Spec, EngineError> {
    let spec: Spec =
        serde_json::from_slice(json).map_err(|e| invalid("OCI runtime spec", e.to_string()))?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("OCI runtime spec", "it has no process"))?;
    check_process(process)?;
    Ok(spec)
}

fn check_process(process: &OciProcess) -> Result<(), EngineError> {
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(invalid("OCI process", "args is empty"));
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(
            "OCI process",
            format!("cwd {:?} is not an absolute path", process.cwd()),
        ));
    }
    Ok(())
}

fn write_config(path: &Path, value: &impl serde::Serialize) -> Result<(), EngineError> {
    let json = serde_json::to_vec(value).map_err(|e| EngineError::Io {
        what: format!("encode {}", path.display()),
        source: io::Error::other(e),
    })?;
    fs::write(path, json).map_err(io_error(format!("write {}", path.display())))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), EngineError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| EngineError::Io {
        what: "create a pipe".into(),
        source: e.into(),
    })
}

/// Reads the next helper message off the async runtime.
async fn receive(
    mut reader: BufReader<File>,
    container: &str,
) -> Result<(BufReader<File>, Option<HelperMessage>), EngineError> {
    let what = format!("read the helper status of container {container:?}");
    let (reader, message) = tokio::task::spawn_blocking(move || {
        let message = handoff::receive(&mut reader);
        (reader, message)
    })
    .await
    .map_err(|e| EngineError::Io {
        what: what.clone(),
        source: io::Error::other(e.to_string()),
    })?;
    let message = message.map_err(io_error(what))?;
    Ok((reader, message))
}

impl Engine {
    /// An engine using `reaper` for its children. Prepares the cgroup parent and run directory.
    pub fn new(config: EngineConfig, reaper: Reaper) -> Result<Self, EngineError> {
        fs::create_dir_all(config.run_dir.join("containers"))
            .map_err(io_error(format!("create {}", config.run_dir.display())))?;
        let cgroup_parent = cgroups::prepare_parent(&config.cgroup_root)?;
        let disks = Disks::new(config.run_dir.clone());
        Ok(Self {
            config,
            disks,
            reaper,
            cgroup_parent,
            containers: Mutex::new(HashMap::new()),
            power_off: Arc::new(Notify::new()),
            network_files: Mutex::new(None),
            pod_dirs: host_dirs::PodDirectories::new(),
        })
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>, EngineError> {
        self.containers()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NoContainer(id.to_owned()))
    }

    pub fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>, EngineError> {
        self.container(id)?
            .process(exec_id)
            .ok_or_else(|| EngineError::NoProcess {
                container: id.to_owned(),
                exec_id: exec_id.to_owned(),
            })
    }

    /// Keeps the network files for the containers created from now on.
    pub fn set_network_files(&self, files: NetworkFiles) {
        *self
            .network_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(files);
    }

    fn network_files(&self) -> Option<NetworkFiles> {
        self.network_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Resolves when the last container has exited and been fully reported, if one of them was
    /// created with `shutdown_on_exit`.
    pub async fn power_off_requested(&self) {
        self.power_off.notified().await;
    }

    /// Checks the power-off-on-exit condition (after an exit, a wait, or an end of output).
    pub fn check_power_off(&self) {
        let containers = self.containers();
        let asked = containers.values().any(|c| c.shutdown_on_exit);
        let all_done = containers.values().all(|c| c.init.done());
        if asked && all_done && !containers.is_empty() {
            tracing::info!("the last container has exited and been reported; powering off");
            self.power_off.notify_one();
        }
    }

    /// Prepares the rootfs: an overlay of the layer disks with upper/work on the scratch disk,
    /// or the spec's root.path as is when no layers are given.
    fn prepare_rootfs(
        &self,
        request: &CreateRequest,
        spec: &Spec,
        dir: &Path,
        nodev: bool,
    ) -> Result<(PathBuf, bool, Vec<PathBuf>), EngineError> {
        if request.layers.is_empty() {
            let root = spec
                .root()
                .as_ref()
                .map(|r| r.path().clone())
                .ok_or_else(|| invalid("OCI runtime spec", "no layer disks and no root.path"))?;
            if !root.is_absolute() || !root.is_dir() {
                return Err(invalid(
                    "OCI runtime spec",
                    format!(
                        "root.path {} is not an absolute path to a directory",
                        root.display()
                    ),
                ));
            }
            return Ok((root, false, Vec::new()));
        }
        if request.scratch.is_empty() {
            return Err(invalid(
                "CreateContainer",
                "layer disks need a scratch disk serial",
            ));
        }
        let release = |error: EngineError| {
            self.disks.release_layers(&request.id);
            error
        };
        let layers = request
            .layers
            .iter()
            .map(|serial| self.disks.mount_layer_for(serial, &request.id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| release(e.into()))?;
        let scratch = self
            .disks
            .mount_scratch(&request.scratch)
            .map_err(|e| release(e.into()))?
            .join(&request.id);
        let upper = scratch.join("upper");
        let work = scratch.join("work");
        let rootfs = dir.join("rootfs");
        disks::mount_overlay(&layers, &upper, &work, &rootfs, nodev)
            .map_err(|e| release(e.into()))?;
        Ok((rootfs, true, vec![scratch]))
    }

    /// The sandbox namespaces the request joins, with `/proc/PID/ns/NAME` of the sandbox's
    /// init; the sandbox must be a running container of this VM, and every name one of
    /// [`SharedNamespace`].
    fn sandbox_namespaces(
        &self,
        request: &CreateRequest,
    ) -> Result<Vec<(SharedNamespace, PathBuf)>, EngineError> {
        if request.sandbox_namespaces.is_empty() {
            return Ok(Vec::new());
        }
        let what = "CreateContainer's sandbox namespaces";
        let sandbox = self.container(&request.sandbox_id).map_err(|_| {
            invalid(
                what,
                format!(
                    "the sandbox {:?} is not a container of this VM",
                    request.sandbox_id
                ),
            )
        })?;
        let pid = sandbox.init.pid;
        if sandbox.init.has_exited() {
            return Err(invalid(
                what,
                format!("the sandbox {:?} is not running", request.sandbox_id),
            ));
        }
        request
            .sandbox_namespaces
            .iter()
            .map(|name| {
                let namespace = name
                    .parse::<SharedNamespace>()
                    .map_err(|e| invalid(what, e.to_string()))?;
                Ok((
                    namespace,
                    PathBuf::from(format!("/proc/{pid}/ns/{namespace}")),
                ))
            })
            .collect()
    }

    /// The nodes a container gets beyond the standard ones: one per `--device` disk (found by
    /// serial, its rule added to `rules`), then, when the rules allow every device
    /// (`--privileged`), every node of the guest's /dev.
    fn device_nodes(
        &self,
        requests: &[device_nodes::DeviceRequest],
        rules: &mut Vec<devices::DeviceRule>,
    ) -> Result<Vec<device_nodes::DeviceNode>, EngineError> {
        let mut nodes = Vec::new();
        for request in requests {
            if !rvm_protocol::serial::is_valid_serial(&request.serial) {
                return Err(invalid(
                    "CreateContainer's devices",
                    format!("disk serial {:?} is not a valid name", request.serial),
                ));
            }
            let guest = self.disks.find(&request.serial)?;
            let (node, rule) = device_nodes::disk_node(request, &guest)?;
            tracing::info!(serial = %request.serial, guest = %guest.display(), path = %node.path.display(), major = node.major, minor = node.minor, permissions = %request.permissions, "host device given to the container");
            nodes.push(node);
            rules.push(rule);
        }
        if devices::allow_everything(rules) {
            nodes.extend(device_nodes::guest_nodes(Path::new(GUEST_DEV))?);
        }
        Ok(nodes)
    }

    /// Where the mount points of a container's subpaths of pod directories are.
    fn subpaths_of(&self, id: &str) -> PathBuf {
        self.config.run_dir.join("subpaths").join(id)
    }

    /// Builds the host directories the spec binds: the VM's shared ones live on the scratch
    /// disk (in the run directory when the container has none).
    fn prepare_directories(
        &self,
        request: &CreateRequest,
        spec: &mut Spec,
        dir: &Path,
    ) -> Result<Vec<host_dirs::PrivateCopy>, EngineError> {
        if request.directories.is_empty() {
            return Ok(Vec::new());
        }
        let base = if request.scratch.is_empty() {
            self.config.run_dir.clone()
        } else {
            self.disks.mount_scratch(&request.scratch)?
        };
        let places = host_dirs::Places {
            container: dir,
            pods: &base.join("pod-dirs"),
            subpaths: &self.subpaths_of(&request.id),
        };
        host_dirs::apply(spec, &request.directories, places, &self.pod_dirs)
    }

    /// Mounts the request's volume disks in the guest, fills new writable ones from the image
    /// (copy-up) and returns the bind mounts that put them in the container.
    fn prepare_volumes(
        &self,
        request: &CreateRequest,
        rootfs: &Path,
    ) -> Result<Vec<oci_spec::runtime::Mount>, EngineError> {
        let mut mounts = Vec::new();
        for volume in &request.volumes {
            let mounted = self.disks.mount_volume(&volume.serial, volume.read_only)?;
            let (data, _) = volumes::data_dir(&volume.serial, &mounted, volume.read_only)?;
            if !volume.read_only
                && volumes::copy_up(&volume.serial, rootfs, &volume.destination, &data)?
            {
                tracing::info!(container = %request.id, serial = %volume.serial, destination = %volume.destination.display(), "new volume filled from the image");
            }
            mounts.push(volumes::bind_mount(volume, &data)?);
        }
        Ok(mounts)
    }

    /// Unmounts the guest's volume disks (at shutdown, after the containers have ended), so
    /// their file systems are clean for the next VM that uses them.
    pub fn release_volumes(&self) {
        self.disks.unmount_volumes();
    }

    /// Creates a container: rootfs, cgroup, stdio, and its init helper, which sets everything up
    /// and waits for start. A bad spec, user or cwd fails here.
    pub async fn create(&self, request: CreateRequest) -> Result<(), EngineError> {
        check_id("container", &request.id)?;
        if self.containers().contains_key(&request.id) {
            return Err(EngineError::ContainerExists(request.id));
        }
        // bench/boot times create -> "container process running" from these two lines.
        tracing::info!(container = %request.id, "creating container");
        let mut spec = parse_spec(&request.spec_json)?;
        let seccomp = SeccompPolicy::for_spec(&spec)?;
        let mut device_rules = devices::rules_of(
            spec.linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref())
                .and_then(|r| r.devices().as_deref()),
        )?;
        let device_nodes = self.device_nodes(&request.devices, &mut device_rules)?;
        let dir = self.config.run_dir.join("containers").join(&request.id);
        fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        let returned_files = host_files::apply(&mut spec, &request.files, &dir)?;
        // Device nodes in the rootfs (shipped in a layer, or made by the container) do nothing
        // unless the container may use every device anyway (--privileged).
        let rootfs_nodev = !devices::allow_everything(&device_rules);
        let (rootfs, overlay, scratch_dirs) =
            self.prepare_rootfs(&request, &spec, &dir, rootfs_nodev)?;
        let unmount_rootfs = || {
            host_dirs::release_subpaths(&self.subpaths_of(&request.id));
            if overlay {
                let _ = umount2(&rootfs, MntFlags::MNT_DETACH);
                self.disks.release_layers(&request.id);
            }
            let _ = fs::remove_dir_all(&dir);
        };
        let copies = self
            .prepare_directories(&request, &mut spec, &dir)
            .inspect_err(|_| unmount_rootfs())?;
        let volume_mounts = self
            .prepare_volumes(&request, &rootfs)
            .inspect_err(|_| unmount_rootfs())?;
        volumes::add_mounts(&mut spec, volume_mounts);
        let cgroup =
            Cgroup::create(&self.cgroup_parent, &request.id).inspect_err(|_| unmount_rootfs())?;
        let cleanup = |error: EngineError| {
            cgroup.remove();
            unmount_rootfs();
            error
        };
        if let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
            cgroup.apply(resources).map_err(|e| cleanup(e.into()))?;
        }
        // Before the init helper joins the cgroup: no process of the container ever runs
        // without the filter.
        devices::attach(cgroup.dir(), &device_rules).map_err(|e| cleanup(e.into()))?;
        if let Some(files) = self.network_files() {
            files.write_into(&rootfs).map_err(|e| {
                cleanup(io_error(format!(
                    "write /etc files into {}",
                    rootfs.display()
                ))(e))
            })?;
        }
        let mut join = self.sandbox_namespaces(&request).map_err(&cleanup)?;
        let pid_namespace = split_pid_namespace(&mut join);
        let config = InitConfig {
            rootfs: rootfs.clone(),
            spec,
            terminal: request.terminal,
            seccomp: seccomp.clone(),
            devices: device_nodes,
            join: join
                .iter()
                .map(|(namespace, path)| (namespace.as_str().to_owned(), path.clone()))
                .collect(),
        };
        let config_path = dir.join("init.json");
        write_config(&config_path, &config).map_err(&cleanup)?;
        let (stdio, child_stdio) = ProcessStdio::create(request.terminal, request.stdin)
            .map_err(|e| cleanup(io_error("create stdio")(e)))?;
        let (status_read, status_write) = pipe().map_err(&cleanup)?;
        let (start_read, start_write) = pipe().map_err(&cleanup)?;
        let mut namespaces = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC;
        for (namespace, _) in &join {
            namespaces.remove(clone_flag(*namespace));
        }
        if pid_namespace.is_some() {
            namespaces.remove(CloneFlags::CLONE_NEWPID);
        }
        let pid = self
            .spawn_helper(
                "init",
                &config_path,
                &child_stdio,
                &status_write,
                Some(&start_read),
                spawn::Namespaces {
                    new: namespaces,
                    pid: pid_namespace.as_deref(),
                },
            )
            .map_err(&cleanup)?;
        drop((child_stdio, status_write, start_read));
        let exit = self.reaper.register(pid);
        if let Err(error) = cgroup.add(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return Err(cleanup(error.into()));
        }
        let status = BufReader::new(File::from(status_read));
        let (status, message) = receive(status, &request.id).await.map_err(&cleanup)?;
        let failure = match message {
            Some(HelperMessage::Ready) => None,
            Some(HelperMessage::SetupFailed { message }) => Some(message),
            other => Some(format!(
                "the init helper ended before it was ready ({other:?})"
            )),
        };
        if let Some(message) = failure {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = exit.await;
            return Err(cleanup(EngineError::Setup {
                container: request.id.clone(),
                message,
            }));
        }
        let init = Arc::new(Process::new(String::new(), pid, stdio));
        let container = Arc::new(Container {
            id: request.id.clone(),
            dir,
            rootfs,
            overlay,
            scratch_dirs,
            cgroup,
            init: init.clone(),
            execs: Mutex::new(HashMap::new()),
            pending_start: Mutex::new(Some(PendingStart {
                start: File::from(start_write),
                status,
            })),
            started: Default::default(),
            shutdown_on_exit: request.shutdown_on_exit,
            seccomp,
            shares_pid_namespace: pid_namespace.is_some(),
            exec_helpers: Mutex::new(Vec::new()),
            returned_files,
            copies,
            final_files: Mutex::new(Vec::new()),
        });
        self.watch_init(&container, exit);
        self.containers().insert(request.id.clone(), container);
        tracing::info!(container = %request.id, pid, "container created");
        Ok(())
    }

    fn spawn_helper(
        &self,
        kind: &str,
        config_path: &Path,
        stdio: &ChildStdio,
        status: &OwnedFd,
        start: Option<&OwnedFd>,
        namespaces: spawn::Namespaces<'_>,
    ) -> Result<i32, EngineError> {
        let config = config_path.display().to_string();
        let [stdin, stdout, stderr] = &stdio.0;
        let fds = [
            Some(stdin.as_raw_fd()),
            Some(stdout.as_raw_fd()),
            Some(stderr.as_raw_fd()),
            Some(status.as_raw_fd()),
            start.map(AsRawFd::as_raw_fd),
        ];
        spawn::spawn(
            &self.config.helper,
            &[HELPER_ARG, kind, &config],
            &fds,
            namespaces,
        )
        .map_err(io_error(format!(
            "start the {kind} helper {}",
            self.config.helper.display()
        )))
    }

    /// Records the init's exit (with the cgroup's OOM kill count) when the reaper reports it.
    fn watch_init(
        &self,
        container: &Arc<Container>,
        exit: tokio::sync::oneshot::Receiver<ExitStatus>,
    ) {
        let container = container.clone();
        tokio::spawn(async move {
            let status = exit.await.unwrap_or(ExitStatus::Exited(255));
            let oom_killed = container.cgroup.oom_kills() > 0;
            tracing::info!(container = %container.id, ?status, oom_killed, "container exited");
            if container.shares_pid_namespace {
                let leftovers = container.clone();
                let killed = tokio::task::spawn_blocking(move || {
                    let keep = leftovers.exec_helpers().clone();
                    leftovers.cgroup.kill_all_but(&keep)
                })
                .await;
                if let Ok(Err(error)) = killed {
                    tracing::warn!(container = %container.id, %error, "cannot kill what is left of the container");
                }
            }
            // Before the exit is visible: WaitProcess returns these with it.
            let files: Vec<(PathBuf, Vec<u8>)> = container
                .returned_files
                .iter()
                .filter_map(|file| Some((file.destination.clone(), host_files::read_back(file)?)))
                .collect();
            *container
                .final_files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = files;
            container
                .init
                .set_exited(ExitRecord::now(status, oom_killed));
        });
    }

    /// Starts the container's command. A command that cannot be executed is reported in
    /// `Started::failure` (the process has then exited 126 or 127).
    pub async fn start(&self, id: &str) -> Result<Started, EngineError> {
        let container = self.container(id)?;
        let pending = container
            .pending_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| EngineError::State {
                container: id.to_owned(),
                reason: "already started".into(),
            })?;
        let PendingStart { mut start, status } = pending;
        start.write_all(b"s").map_err(io_error(format!(
            "send the start signal to container {id:?}"
        )))?;
        drop(start);
        container.started.store(true, Ordering::SeqCst);
        let (_, message) = receive(status, id).await?;
        let failure = match message {
            Some(HelperMessage::ExecFailed { failure }) => Some(failure),
            _ => None,
        };
        if let Some(failure) = &failure {
            tracing::info!(container = id, status = failure.status, message = %failure.message, "command could not be executed");
            container.init.set_exec_failure(failure.clone());
        } else {
            // The status pipe closes on the helper's successful execve: the container's own
            // program is about to run its first instruction.
            tracing::info!(
                container = id,
                pid = container.init.pid,
                "container process running"
            );
        }
        Ok(Started {
            pid: container.init.pid,
            failure,
        })
    }

    /// Starts a process in a running container, joining its namespaces and cgroup.
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: &[u8],
        terminal: bool,
        stdin: bool,
    ) -> Result<Started, EngineError> {
        check_id("exec", exec_id)?;
        let container = self.container(id)?;
        if !container.started.load(Ordering::SeqCst) || container.init.has_exited() {
            return Err(EngineError::State {
                container: id.to_owned(),
                reason: "is not running".into(),
            });
        }
        if container.execs().contains_key(exec_id) {
            return Err(EngineError::ExecExists {
                container: id.to_owned(),
                exec_id: exec_id.to_owned(),
            });
        }
        let process: OciProcess = serde_json::from_slice(process_json)
            .map_err(|e| invalid("OCI process", e.to_string()))?;
        check_process(&process)?;
        let config = ExecConfig {
            init_pid: container.init.pid,
            cgroup: container.cgroup.dir().to_owned(),
            process,
            terminal,
            seccomp: container.seccomp.clone(),
        };
        let config_path = container.dir.join(format!("exec-{exec_id}.json"));
        write_config(&config_path, &config)?;
        let (stdio, child_stdio) =
            ProcessStdio::create(terminal, stdin).map_err(io_error("create stdio"))?;
        let (status_read, status_write) = pipe()?;
        let helper = self.spawn_helper(
            "exec",
            &config_path,
            &child_stdio,
            &status_write,
            None,
            spawn::Namespaces::AGENT,
        )?;
        drop((child_stdio, status_write));
        let helper_exit = self.reaper.register(helper);
        container.exec_helpers().push(helper);
        let started = async {
            let mut reader = BufReader::new(File::from(status_read));
            let mut failure = None;
            loop {
                let (next, message) = receive(reader, id).await?;
                reader = next;
                match message {
                    Some(HelperMessage::Started { pid }) => return Ok((pid, failure, reader)),
                    Some(HelperMessage::ExecFailed { failure: f }) => failure = Some(f),
                    Some(HelperMessage::SetupFailed { message }) => {
                        return Err(EngineError::Setup {
                            container: id.to_owned(),
                            message: format!("exec {exec_id:?}: {message}"),
                        })
                    }
                    other => {
                        return Err(EngineError::Setup {
                            container: id.to_owned(),
                            message: format!(
                                "exec {exec_id:?}: the helper ended early ({other:?})"
                            ),
                        })
                    }
                }
            }
        }
        .await;
        let (pid, failure, reader) =
            started.inspect_err(|_| container.exec_helpers().retain(|pid| *pid != helper))?;
        let process = Arc::new(Process::new(exec_id.to_owned(), pid, stdio));
        if let Some(failure) = &failure {
            process.set_exec_failure(failure.clone());
        }
        container
            .execs()
            .insert(exec_id.to_owned(), process.clone());
        let cgroup = container.cgroup.clone();
        let oom_before = cgroup.oom_kills();
        let id_owned = id.to_owned();
        let container_for_exec = container.clone();
        tokio::spawn(async move {
            let message = receive(reader, &id_owned).await.ok().and_then(|(_, m)| m);
            let status = match message {
                Some(HelperMessage::Exited { raw_status }) => ExitStatus::from_raw(raw_status),
                _ => ExitStatus::Exited(255),
            };
            let _ = helper_exit.await;
            container_for_exec
                .exec_helpers()
                .retain(|pid| *pid != helper);
            let oom_killed = status == ExitStatus::Signaled(9) && cgroup.oom_kills() > oom_before;
            process.set_exited(ExitRecord::now(status, oom_killed));
        });
        tracing::info!(container = id, exec_id, pid, "exec started");
        Ok(Started { pid, failure })
    }

    /// Sends `signal` to a process, or to every process of the container with `all`.
    pub fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), EngineError> {
        let container = self.container(id)?;
        let signal = i32::try_from(signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| invalid("signal", format!("{signal} is not a signal number")))?;
        if all {
            if signal == Signal::SIGKILL {
                return Ok(container.cgroup.kill_all()?);
            }
            for pid in container.cgroup.pids() {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            return Ok(());
        }
        let process = container
            .process(exec_id)
            .ok_or_else(|| EngineError::NoProcess {
                container: id.to_owned(),
                exec_id: exec_id.to_owned(),
            })?;
        if process.has_exited() {
            return Ok(());
        }
        kill(Pid::from_raw(process.pid), signal).map_err(|e| EngineError::Io {
            what: format!(
                "send {signal} to process {} of container {id:?}",
                process.pid
            ),
            source: e.into(),
        })
    }

    /// Waits for a process to exit.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitRecord, EngineError> {
        let process = self.process(id, exec_id)?;
        let record = process.wait().await;
        self.check_power_off();
        Ok(record)
    }

    /// The host files container `id` returns (destination, last bytes), as they were when its
    /// init exited; empty before.
    pub fn final_files(&self, id: &str) -> Result<Vec<(PathBuf, Vec<u8>)>, EngineError> {
        Ok(self
            .container(id)?
            .final_files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone())
    }

    /// Reads output of a process (long poll).
    pub async fn read_output(
        &self,
        id: &str,
        exec_id: &str,
        stderr: bool,
        max: usize,
    ) -> Result<(Vec<u8>, bool), EngineError> {
        let process = self.process(id, exec_id)?;
        let buffer = if stderr {
            process.stdio.stderr.clone()
        } else {
            process.stdio.stdout.clone()
        };
        let (data, eof) = buffer.read(max).await;
        if eof {
            self.check_power_off();
        }
        Ok((data, eof))
    }

    pub async fn write_stdin(
        &self,
        id: &str,
        exec_id: &str,
        data: &[u8],
    ) -> Result<usize, EngineError> {
        let process = self.process(id, exec_id)?;
        let writer = process
            .stdio
            .stdin
            .as_ref()
            .ok_or_else(|| EngineError::State {
                container: id.to_owned(),
                reason: format!("process {exec_id:?} has no stdin"),
            })?;
        writer.write(data).await.map_err(io_error(format!(
            "write stdin of {exec_id:?} in container {id:?}"
        )))
    }

    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), EngineError> {
        let process = self.process(id, exec_id)?;
        if let Some(writer) = &process.stdio.stdin {
            writer.close().await;
        }
        Ok(())
    }

    pub fn resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), EngineError> {
        let process = self.process(id, exec_id)?;
        let rows = u16::try_from(rows).map_err(|_| invalid("pty rows", rows.to_string()))?;
        let columns =
            u16::try_from(columns).map_err(|_| invalid("pty columns", columns.to_string()))?;
        process
            .stdio
            .resize(rows, columns)
            .map_err(io_error(format!(
                "resize the pty of {exec_id:?} in container {id:?}"
            )))
    }

    pub async fn pause(&self, id: &str, frozen: bool) -> Result<(), EngineError> {
        let cgroup = self.container(id)?.cgroup.clone();
        tokio::task::spawn_blocking(move || cgroup.freeze(frozen))
            .await
            .map_err(|e| io_error("freeze")(io::Error::other(e.to_string())))??;
        Ok(())
    }

    pub fn update_resources(&self, id: &str, resources_json: &[u8]) -> Result<(), EngineError> {
        let container = self.container(id)?;
        let resources: LinuxResources = serde_json::from_slice(resources_json)
            .map_err(|e| invalid("OCI LinuxResources", e.to_string()))?;
        Ok(container.cgroup.apply(&resources)?)
    }

    /// Brings the container's private copy at `dir.destination` to `dir`'s tree.
    pub fn update_directory(
        &self,
        id: &str,
        dir: &host_dirs::HostDirectory,
    ) -> Result<(), EngineError> {
        let container = self.container(id)?;
        let copy = container
            .copies
            .iter()
            .find(|copy| copy.destination == dir.destination)
            .ok_or_else(|| {
                invalid(
                    format!("host directory for {}", dir.destination.display()),
                    format!("container {id} has no private copy there"),
                )
            })?;
        host_dirs::update(&copy.path, dir)
    }

    pub fn stats(&self, id: &str) -> Result<stats::ContainerStats, EngineError> {
        Ok(stats::read(&self.container(id)?.cgroup))
    }

    pub fn list_processes(&self, id: &str) -> Result<Vec<stats::ProcessEntry>, EngineError> {
        let container = self.container(id)?;
        let execs: HashMap<i32, String> = container
            .execs()
            .values()
            .map(|p| (p.pid, p.exec_id.clone()))
            .collect();
        Ok(container
            .cgroup
            .pids()
            .into_iter()
            .map(|pid| stats::process_entry(pid, execs.get(&pid).cloned().unwrap_or_default()))
            .collect())
    }

    /// Kills what is left of the container, unmounts its rootfs (and the layers only it used)
    /// and forgets it.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let container = self.container(id)?;
        // An unstarted init helper reads end of file on its start pipe and exits.
        container
            .pending_start
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if !container.init.has_exited() {
            let _ = container.cgroup.kill_all();
            let _ = kill(Pid::from_raw(container.init.pid), Signal::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, container.init.wait())
                .await
                .is_err()
            {
                return Err(EngineError::State {
                    container: id.to_owned(),
                    reason: format!("did not exit within {} s of SIGKILL", KILL_WAIT.as_secs()),
                });
            }
        }
        self.containers().remove(id);
        let cgroup = container.cgroup.clone();
        let container_for_cleanup = container.clone();
        let subpaths = self.subpaths_of(id);
        tokio::task::spawn_blocking(move || {
            cgroup.remove();
            if container_for_cleanup.overlay {
                let _ = umount2(&container_for_cleanup.rootfs, MntFlags::MNT_DETACH);
            }
            host_dirs::release_subpaths(&subpaths);
            for dir in &container_for_cleanup.scratch_dirs {
                let _ = fs::remove_dir_all(dir);
            }
            let _ = fs::remove_dir_all(&container_for_cleanup.dir);
        })
        .await
        .map_err(|e| io_error("remove container files")(io::Error::other(e.to_string())))?;
        // After the overlay is gone: unmount the layers no other container uses, so the host
        // can empty their slots.
        if container.overlay {
            self.disks.release_layers(id);
        }
        tracing::info!(container = id, "container removed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_namespace_is_taken_out_of_what_the_helper_joins() {
        use SharedNamespace::{Ipc, Pid, Uts};
        let entry = |namespace: SharedNamespace| {
            (namespace, PathBuf::from(format!("/proc/7/ns/{namespace}")))
        };
        let mut join = vec![entry(Ipc), entry(Pid), entry(Uts)];
        assert_eq!(
            split_pid_namespace(&mut join),
            Some(PathBuf::from("/proc/7/ns/pid"))
        );
        assert_eq!(join, [entry(Ipc), entry(Uts)]);
        assert_eq!(split_pid_namespace(&mut join), None);
        assert_eq!(join.len(), 2);
    }

    #[test]
    fn shared_namespaces_map_to_their_clone_flags_by_name() {
        assert_eq!(
            sandbox_namespace_flag("ipc"),
            Some(CloneFlags::CLONE_NEWIPC)
        );
        assert_eq!(
            sandbox_namespace_flag("uts"),
            Some(CloneFlags::CLONE_NEWUTS)
        );
        assert_eq!(
            sandbox_namespace_flag("pid"),
            Some(CloneFlags::CLONE_NEWPID)
        );
        assert_eq!(sandbox_namespace_flag("mnt"), None);
        assert_eq!(sandbox_namespace_flag("net"), None);
    }
}
