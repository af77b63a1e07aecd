//! Host paths in a task's OCI spec, made to mean something inside the VM. containerd's CRI
//! and kubelet bind-mount host files and directories into a pod's containers; none of those
//! paths exist in the guest. So, by what the bind's source is:
//! - a regular file (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, kubelet's
//!   `/dev/termination-log`) travels by content: the agent writes it into the container's
//!   directory and binds it there;
//! - the sandbox's shm directory on `/dev/shm` becomes a tmpfs of the VM shared by the pod's
//!   containers (POSIX shared memory works between them, as in a runc pod);
//! - a read-only directory (kubelet's configMap, secret, downwardAPI and projected volumes, the
//!   service-account token among them) travels by content too, its tree with symlinks as it is
//!   (kubelet's `..data` layout), as a private copy for the container;
//! - a Kubernetes emptyDir (a directory in kubelet's `kubernetes.io~empty-dir`, read-only or
//!   not) becomes the VM's own directory, shared by every container of the pod naming it: on
//!   the VM's scratch disk, or a tmpfs of the same size when kubelet gave it medium Memory;
//! - a subPath of an emptyDir (kubelet binds it from
//!   `…/pods/<uid>/volume-subpaths/<volume>/<container>/<index>`) becomes that directory inside
//!   the VM's directory of the emptyDir, found by the bind's device and inode;
//! - any other bind of a host path (a writable directory, a device) is refused with the mount
//!   named: host directories are not shared writable into rvm VMs.
//!
//! A read-only directory in kubelet's atomic-writer layout (a `..data` symlink at its top: every
//! configMap, secret, downwardAPI and projected volume) is also [`WatchedDirectory`]: kubelet
//! updates those in place, and `volume_updates` sends the copy its new tree.
//!
//! Writes in the guest stay in the guest, with one exception: kubelet's termination message
//! file. kubelet binds a host file it created
//! (empty, `…/pods/<pod uid>/containers/<container name>/<id>`) writable at the container's
//! `terminationMessagePath` (`/dev/termination-log` by default) and reads its last 4096 bytes
//! once the container has exited. The rule: a *writable* bind of a regular host file whose
//! host path has kubelet's layout above (whatever its destination, as the path is the
//! container's choice), with the container's own name as `<container name>` when containerd
//! names it (`io.kubernetes.cri.container-name`), comes back. Any other file, a hostPath file
//! bound writable at `/dev/termination-log` among them, stays in the guest like every write. The agent returns its last [`MAX_RETURNED_FILE_BYTES`] with the init's exit, and the
//! shim writes them into that host file before it reports the exit, so kubelet finds the
//! message when it learns of the exit. The guest chooses only those bytes: the host file is the
//! one the spec bound (never created, opened without following a symlink, and only if it is
//! still the regular file of the same device and inode as at create), so a hostile guest can
//! write nothing else, and at most that many bytes.
//!
//! Every host file and tree is read by descriptor, never by a path looked up twice, with its
//! size bounded while it is read ([`read`]).

mod read;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder, Spec};
use rvm_protocol::agent::{EntryKind, HostDirectory, HostFile};
use rvm_protocol::limits::{MAX_FILE_BYTES, MAX_HOST_CONTENT_BYTES, MAX_RETURNED_FILE_BYTES};
use sha2::{Digest, Sha256};

use read::{Budget, HostPath};

/// The options of a container's /dev/shm bind, as Docker's.
const SHM_OPTIONS: [&str; 3] = ["nosuid", "noexec", "nodev"];
/// The pod shm's size when the host's is not a tmpfs of its own (Docker's default, 64 MiB).
const SHM_BYTES: u64 = 64 << 20;
/// The directory kubelet keeps a pod's emptyDir volumes in.
const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";
/// The directory of a pod's kubelet binds its subPath mounts from.
const SUBPATHS_DIR: &str = "volume-subpaths";
/// statfs(2)'s f_type of a tmpfs.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// What of the host a task's spec binds travels to the agent.
#[derive(Debug, Clone, Default)]
pub struct HostContent {
    pub files: Vec<HostFile>,
    pub directories: Vec<HostDirectory>,
    /// The termination message files among `files`, which come back at the exit.
    pub returned: Vec<ReturnedBind>,
    /// The directories among `directories` that kubelet may update.
    pub watched: Vec<WatchedDirectory>,
}

/// A directory sent by content in kubelet's atomic-writer layout, followed for updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedDirectory {
    /// The bind's destination in the container, as sent to the agent.
    pub destination: String,
    /// The host directory.
    pub source: PathBuf,
    /// The target of its `..data` when last sent: kubelet's generation of the volume.
    pub generation: PathBuf,
}

/// kubelet's atomic writer points this symlink at the volume's current generation.
const DATA_LINK: &str = "..data";

/// A host file the container's final content goes back to (see the module's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedBind {
    /// The bind's destination in the container, as sent to the agent.
    pub destination: String,
    /// The host file.
    pub source: PathBuf,
    /// Its device and inode at create: the file written back must still be this one.
    pub dev: u64,
    pub ino: u64,
}

/// Rewrites the spec's host bind mounts as described above; returns what to send.
pub fn translate(spec: &mut Spec) -> Result<HostContent, String> {
    let Some(mounts) = spec.mounts().clone() else {
        return Ok(HostContent::default());
    };
    let container_name = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::pod::CONTAINER_NAME))
        .cloned();
    let mut content = HostContent::default();
    let mut budget = Budget::of_task();
    let mut translated = Vec::with_capacity(mounts.len());
    for mount in mounts {
        if !is_bind(&mount) {
            translated.push(mount);
            continue;
        }
        let source = mount.source().clone().unwrap_or_default();
        let destination = mount.destination().clone();
        let name = format!(
            "bind mount {} -> {}",
            source.display(),
            destination.display()
        );
        let host = HostPath::open(&source).map_err(|e| format!("{name}: {e}"))?;
        let in_name = |e: String| format!("{name}: {e}");
        if host.is_file() {
            let mut file = file_of(&host, &destination).map_err(in_name)?;
            budget
                .take(file.content.len(), &source)
                .map_err(|e| in_name(e.to_string()))?;
            if !is_read_only(&mount) && is_termination_message(&source, container_name.as_deref()) {
                file.return_max_bytes = MAX_RETURNED_FILE_BYTES as u32;
                content.returned.push(ReturnedBind {
                    destination: file.destination.clone(),
                    source: source.clone(),
                    dev: host.dev(),
                    ino: host.ino(),
                });
            }
            content.files.push(file);
            translated.push(mount);
        } else if host.is_dir() && destination == Path::new("/dev/shm") {
            content.directories.push(shm_directory(&host));
            translated.push(shm_mount(mount)?);
        } else if host.is_dir() && is_empty_dir_volume(&source) {
            let directory = empty_dir(&host, &destination, &mut budget).map_err(in_name)?;
            content.directories.push(directory);
            translated.push(mount);
        } else if let Some((volume, subpath)) = empty_dir_subpath(&host).map_err(in_name)? {
            let mut directory = empty_dir(&volume, &destination, &mut budget).map_err(in_name)?;
            directory.pod_subpath = subpath;
            content.directories.push(directory);
            translated.push(mount);
        } else if host.is_dir() && is_read_only(&mount) {
            let directory = directory_of(&host, &destination, &mut budget).map_err(in_name)?;
            if let Some(generation) = generation_of(&directory) {
                content.watched.push(WatchedDirectory {
                    destination: directory.destination.clone(),
                    source: source.clone(),
                    generation,
                });
            }
            content.directories.push(directory);
            translated.push(mount);
        } else {
            return Err(format!(
                "{name}: writable host directories and devices are not shared into rvm VMs \
                 (read-only directories and files travel by content, up to {MAX_HOST_CONTENT_BYTES} \
                 bytes a task; a Kubernetes emptyDir and its subPaths become the pod VM's own)"
            ));
        }
    }
    spec.set_mounts(Some(translated));
    Ok(content)
}

/// The watched directory's tree and generation now, when kubelet has moved `..data` since
/// `watched.generation`; `None` while it has not.
/// The link and the tree are read through one descriptor of the volume's directory.
pub fn changed(watched: &WatchedDirectory) -> Result<Option<(HostDirectory, PathBuf)>, String> {
    let host = HostPath::open(&watched.source).map_err(|e| e.to_string())?;
    let generation = host.read_link_at(DATA_LINK).map_err(|e| e.to_string())?;
    if generation == watched.generation {
        return Ok(None);
    }
    let destination = Path::new(&watched.destination);
    let directory = directory_of(&host, destination, &mut Budget::of_task())?;
    // The generation the tree holds: kubelet may have moved `..data` again meanwhile.
    let generation = generation_of(&directory).unwrap_or(generation);
    Ok(Some((directory, generation)))
}

/// The target of the tree's top-level `..data` link (kubelet's atomic-writer layout).
fn generation_of(directory: &HostDirectory) -> Option<PathBuf> {
    directory
        .entries
        .iter()
        .find(|e| e.path == DATA_LINK && e.kind.enum_value() == Ok(EntryKind::ENTRY_SYMLINK))
        .map(|e| PathBuf::from(std::ffi::OsStr::from_bytes(&e.content)))
}

fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .as_ref()
            .is_some_and(|options| options.iter().any(|o| o == "bind" || o == "rbind"))
}

fn is_read_only(mount: &Mount) -> bool {
    mount
        .options()
        .as_ref()
        .is_some_and(|options| options.iter().any(|o| o == "ro"))
}

/// Whether a file bind is the termination message file kubelet made for this container: a
/// host file in kubelet's layout `…/pods/<pod uid>/containers/<container name>/<id>`, with
/// `container` as `<container name>` when it is known.
fn is_termination_message(source: &Path, container: Option<&str>) -> bool {
    let name = |path: Option<&Path>| path.and_then(Path::file_name).map(|n| n.to_owned());
    let container_dir = source.parent();
    let containers = container_dir.and_then(Path::parent);
    let pod_dir = containers.and_then(Path::parent);
    let pods = pod_dir.and_then(Path::parent);
    let named = container.is_none_or(|c| name(container_dir).is_some_and(|n| n == c));
    named
        && name(containers).is_some_and(|n| n == "containers")
        && name(pods).is_some_and(|n| n == "pods")
}

/// Writes what the container left in a termination message file (its last
/// [`MAX_RETURNED_FILE_BYTES`]) into the host file, replacing what it held. Refuses a path
/// that is no longer the regular file bound at create, and never creates one: the path is
/// opened `O_PATH | O_NOFOLLOW` (a symlink is not followed, a FIFO or device not opened),
/// checked by `fstat`, and only that file is then opened for writing, through its descriptor.
pub fn write_back(bind: &ReturnedBind, content: &[u8]) -> Result<(), String> {
    let what = || format!("termination message file {}", bind.source.display());
    let content = &content[content.len().saturating_sub(MAX_RETURNED_FILE_BYTES)..];
    let host = HostPath::open_no_follow(&bind.source)
        .map_err(|e| format!("{}: cannot open it: {e}", what()))?;
    if !host.is_file() || host.dev() != bind.dev || host.ino() != bind.ino {
        return Err(format!(
            "{}: no longer the regular file bound at create",
            what()
        ));
    }
    let mut file = host
        .open_for_writing()
        .map_err(|e| format!("{}: cannot open it: {e}", what()))?;
    file.set_len(0)
        .and_then(|()| file.write_all(content))
        .map_err(|e| format!("{}: cannot write it: {e}", what()))
}

/// Whether `source` is one of kubelet's emptyDirs (`…/volumes/kubernetes.io~empty-dir/NAME`).
fn is_empty_dir_volume(source: &Path) -> bool {
    source
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|plugin| plugin == EMPTY_DIR_PLUGIN)
}

/// The VM's directory of the emptyDir at `volume`, keyed by its host path.
fn empty_dir(
    volume: &HostPath,
    destination: &Path,
    budget: &mut Budget,
) -> Result<HostDirectory, String> {
    let mut directory = directory_of(volume, destination, budget)?;
    directory.pod_key = pod_key(volume.path());
    directory.memory_bytes = memory_medium_bytes(volume);
    Ok(directory)
}

/// When `source` (a directory) is kubelet's bind of a subPath of one of the pod's emptyDirs,
/// `…/pods/<uid>/volume-subpaths/<volume>/<container>/<index>`: that emptyDir's directory and
/// the path inside it of the directory bound, the one of the same device and inode. `None`
/// for anything else (a subPath of a hostPath, say).
fn empty_dir_subpath(source: &HostPath) -> Result<Option<(HostPath, String)>, String> {
    let container_dir = source.path().parent();
    let volume_dir = container_dir.and_then(Path::parent);
    let subpaths_dir = volume_dir.and_then(Path::parent);
    let (Some(volume), Some(subpaths)) = (
        volume_dir.and_then(Path::file_name),
        subpaths_dir.filter(|dir| dir.file_name() == Some(SUBPATHS_DIR.as_ref())),
    ) else {
        return Ok(None);
    };
    let Some(pod_dir) = subpaths.parent() else {
        return Ok(None);
    };
    let empty_dir = pod_dir.join("volumes").join(EMPTY_DIR_PLUGIN).join(volume);
    if !source.is_dir() {
        return Ok(None);
    }
    let Some(empty_dir) = HostPath::open_no_follow(&empty_dir)
        .ok()
        .filter(HostPath::is_dir)
    else {
        return Ok(None);
    };
    let inside = empty_dir
        .find_directory(source.dev(), source.ino())
        .map_err(|e| format!("looking for the subPath: {e}"))?;
    let Some(subpath) = inside else {
        return Err(format!(
            "a subPath of emptyDir {} that is no directory inside it",
            empty_dir.path().display()
        ));
    };
    Ok(Some((empty_dir, subpath)))
}

/// The VM-wide key of a shared directory: the same host path gives the same key.
fn pod_key(source: &Path) -> String {
    let digest = Sha256::digest(source.as_os_str().as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The size of the tmpfs kubelet mounted at `source` for an emptyDir of medium Memory; 0 when
/// `source` is not a tmpfs mount of its own.
fn memory_medium_bytes(source: &HostPath) -> u64 {
    let parent_dev = source
        .path()
        .parent()
        .and_then(|parent| std::fs::metadata(parent).ok())
        .map(|parent| parent.dev());
    if parent_dev == Some(source.dev()) {
        return 0;
    }
    match source.statfs() {
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        Ok(stat) if stat.f_type as u64 == TMPFS_MAGIC => {
            (stat.f_blocks as u64).saturating_mul(stat.f_bsize as u64)
        }
        _ => 0,
    }
}

/// A regular file's content, read through its descriptor up to [`MAX_FILE_BYTES`].
fn file_of(host: &HostPath, destination: &Path) -> Result<HostFile, String> {
    let content = host.read(MAX_FILE_BYTES).map_err(|e| e.to_string())?;
    Ok(HostFile {
        destination: destination.display().to_string(),
        content,
        mode: host.mode(),
        ..Default::default()
    })
}

/// The tree below `source` as entries, parents first, in name order; symlinks are kept as
/// links (never followed), anything but files, directories and symlinks is refused.
fn directory_of(
    source: &HostPath,
    destination: &Path,
    budget: &mut Budget,
) -> Result<HostDirectory, String> {
    let entries = source.tree(budget).map_err(|e| e.to_string())?;
    Ok(HostDirectory {
        destination: destination.display().to_string(),
        mode: source.mode(),
        entries,
        ..Default::default()
    })
}

/// The pod's shm: one tmpfs of the VM per host shm directory (containerd gives every
/// container of a pod its sandbox's), of the host tmpfs's size.
fn shm_directory(source: &HostPath) -> HostDirectory {
    let size = memory_medium_bytes(source);
    HostDirectory {
        destination: "/dev/shm".to_owned(),
        mode: 0o1777,
        pod_key: pod_key(source.path()),
        memory_bytes: if size > 0 { size } else { SHM_BYTES },
        ..Default::default()
    }
}

/// The bind of the pod's shm, with Docker's options for /dev/shm (the agent points its source
/// at the VM's tmpfs).
fn shm_mount(mount: Mount) -> Result<Mount, String> {
    let mut options = vec!["rbind".to_owned()];
    options.extend(SHM_OPTIONS.iter().map(|o| (*o).to_owned()));
    MountBuilder::default()
        .destination("/dev/shm")
        .typ("bind")
        .source(mount.source().clone().unwrap_or_default())
        .options(options)
        .build()
        .map_err(|e| format!("cannot build the /dev/shm mount: {e}"))
}

/// The text of the host file the spec binds at `destination`, if any (the pod's resolv.conf
/// and hosts, which also configure the guest's network).
pub fn content_at<'a>(files: &'a [HostFile], destination: &str) -> Option<&'a str> {
    files
        .iter()
        .find(|file| file.destination == destination)
        .and_then(|file| std::str::from_utf8(&file.content).ok())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use rustix::fs::{FileType, Mode, CWD};
    use rvm_protocol::limits::MAX_DIRECTORY_ENTRIES;

    use super::*;

    /// A tree's entries as (path, kind, content), for comparing with what is expected.
    fn shown(entries: &[rvm_protocol::agent::HostDirectoryEntry]) -> Vec<(&str, EntryKind, &[u8])> {
        entries
            .iter()
            .map(|e| {
                (
                    e.path.as_str(),
                    e.kind.enum_value().unwrap(),
                    &e.content[..],
                )
            })
            .collect()
    }

    fn bind(source: &Path, destination: &str, read_only: bool) -> Mount {
        let mut options = vec!["rbind".to_owned()];
        options.push(if read_only { "ro" } else { "rw" }.to_owned());
        MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(options)
            .build()
            .unwrap()
    }

    fn spec_with(mounts: Vec<Mount>) -> Spec {
        let mut spec = Spec::default();
        spec.set_mounts(Some(mounts));
        spec
    }

    #[test]
    fn files_travel_by_content_and_shm_becomes_the_pods_tmpfs() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let shm = dir.path().join("shm");
        fs::create_dir(&shm).unwrap();
        let proc_mount = MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .build()
            .unwrap();
        let mut spec = spec_with(vec![
            proc_mount.clone(),
            bind(&hosts, "/etc/hosts", true),
            bind(&shm, "/dev/shm", false),
        ]);
        let content = translate(&mut spec).unwrap();
        let files = content.files.clone();
        assert_eq!(files.len(), 1);
        assert_eq!(content.directories.len(), 1);
        assert_eq!(files[0].destination, "/etc/hosts");
        assert_eq!(
            content_at(&files, "/etc/hosts"),
            Some("127.0.0.1 localhost\n")
        );
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts[0], proc_mount);
        assert_eq!(mounts[1].destination(), Path::new("/etc/hosts"));
        assert_eq!(mounts[2].typ().as_deref(), Some("bind"));
        assert_eq!(mounts[2].destination(), Path::new("/dev/shm"));
        let shm_dir = &content.directories[0];
        assert_eq!(shm_dir.destination, "/dev/shm");
        assert_eq!(shm_dir.pod_key, pod_key(&shm));
        assert_eq!(shm_dir.memory_bytes, SHM_BYTES);
    }

    /// A configMap volume as kubelet's atomic writer lays it out.
    fn config_map(root: &Path) {
        let data = root.join("..2026_12_02_10_00_00.123");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("game.properties"), "lives=3\n").unwrap();
        std::os::unix::fs::symlink("..2026_12_02_10_00_00.123", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/game.properties", root.join("game.properties")).unwrap();
    }

    #[test]
    fn a_read_only_directory_travels_as_its_tree_with_links_unfollowed() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("kubernetes.io~configmap").join("config");
        config_map(&volume);
        let mut spec = spec_with(vec![bind(&volume, "/etc/config", true)]);
        let content = translate(&mut spec).unwrap();
        assert_eq!(content.directories.len(), 1);
        let directory = &content.directories[0];
        assert_eq!(directory.destination, "/etc/config");
        assert!(directory.pod_key.is_empty());
        let shown = shown(&directory.entries);
        assert_eq!(
            shown,
            [
                (
                    "..2026_12_02_10_00_00.123",
                    EntryKind::ENTRY_DIRECTORY,
                    &b""[..]
                ),
                (
                    "..2026_12_02_10_00_00.123/game.properties",
                    EntryKind::ENTRY_FILE,
                    b"lives=3\n"
                ),
                (
                    "..data",
                    EntryKind::ENTRY_SYMLINK,
                    b"..2026_12_02_10_00_00.123"
                ),
                (
                    "game.properties",
                    EntryKind::ENTRY_SYMLINK,
                    b"..data/game.properties"
                ),
            ]
        );
        assert_eq!(
            spec.mounts().as_ref().unwrap()[0].destination(),
            Path::new("/etc/config")
        );
    }

    #[test]
    fn an_empty_dir_becomes_the_pods_own_keyed_by_its_host_path() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("pods/uid/volumes").join(EMPTY_DIR_PLUGIN);
        let cache = plugin.join("cache");
        let other = plugin.join("other");
        fs::create_dir_all(&cache).unwrap();
        fs::create_dir_all(&other).unwrap();
        let key_of = |source: &Path, destination: &str| {
            let mut spec = spec_with(vec![bind(source, destination, false)]);
            let content = translate(&mut spec).unwrap();
            assert_eq!(content.directories.len(), 1);
            let directory = &content.directories[0];
            assert!(directory.entries.is_empty());
            // A directory on the same file system as its parent is not a tmpfs of its own.
            assert_eq!(directory.memory_bytes, 0);
            directory.pod_key.clone()
        };
        let key = key_of(&cache, "/cache");
        assert_eq!(key.len(), 32);
        assert_eq!(key_of(&cache, "/elsewhere"), key);
        assert_ne!(key_of(&other, "/cache"), key);
    }

    #[test]
    fn a_sub_path_of_an_empty_dir_is_that_directory_of_the_pods_own() {
        let dir = tempfile::tempdir().unwrap();
        let pod = dir.path().join("pods/uid");
        let cache = pod.join("volumes").join(EMPTY_DIR_PLUGIN).join("cache");
        fs::create_dir_all(cache.join("logs/app")).unwrap();
        fs::create_dir_all(cache.join("other")).unwrap();
        fs::create_dir_all(pod.join("volumes/kubernetes.io~configmap/config/conf.d")).unwrap();
        let subpaths = pod.join(SUBPATHS_DIR);
        // kubelet bind-mounts the subPath there; a symlink has the same device and inode
        // for what the shim looks at (the lab's CRI test makes the real bind).
        let bound = |volume: &str, target: &Path, readonly: bool| {
            let source = subpaths.join(volume).join("app").join("0");
            fs::create_dir_all(source.parent().unwrap()).unwrap();
            let _ = fs::remove_file(&source);
            std::os::unix::fs::symlink(target, &source).unwrap();
            bind(&source, "/var/log/app", readonly)
        };
        let key = {
            let mut spec = spec_with(vec![bind(&cache, "/cache", false)]);
            translate(&mut spec).unwrap().directories[0].pod_key.clone()
        };
        for readonly in [false, true] {
            let mount = bound("cache", &cache.join("logs/app"), readonly);
            let mut spec = spec_with(vec![mount]);
            let content = translate(&mut spec).unwrap();
            let directory = &content.directories[0];
            assert_eq!(directory.pod_key, key, "the emptyDir's own key");
            assert_eq!(directory.pod_subpath, "logs/app");
            assert_eq!(directory.destination, "/var/log/app");
            let paths: Vec<_> = directory.entries.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, ["logs", "logs/app", "other"], "the emptyDir's tree");
        }
        // A subPath of a read-only configMap travels by content, as before.
        let config = pod.join("volumes/kubernetes.io~configmap/config/conf.d");
        let mut spec = spec_with(vec![bound("config", &config, true)]);
        let directory = &translate(&mut spec).unwrap().directories[0];
        assert!(directory.pod_key.is_empty() && directory.pod_subpath.is_empty());
        // A writable one is still refused.
        let mut spec = spec_with(vec![bound("config", &config, false)]);
        let err = translate(&mut spec).unwrap_err();
        assert!(err.contains("writable host directories"), "{err}");
        // Bound from elsewhere than the emptyDir of that name: refused, naming the emptyDir.
        let mut spec = spec_with(vec![bound("cache", &config, false)]);
        let err = translate(&mut spec).unwrap_err();
        assert!(
            err.contains("no directory inside it") && err.contains("cache"),
            "{err}"
        );
    }

    #[test]
    fn a_kubelet_volume_is_watched_and_its_next_generation_seen() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let generation = |name: &str, lives: &str| {
            fs::create_dir_all(config.join(name)).unwrap();
            fs::write(config.join(name).join("game.properties"), lives).unwrap();
        };
        generation("..2026_12_03_12_00_00.1", "lives=3");
        std::os::unix::fs::symlink("..2026_12_03_12_00_00.1", config.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/game.properties", config.join("game.properties"))
            .unwrap();
        let plain = dir.path().join("plain");
        fs::create_dir(&plain).unwrap();
        let mut spec = spec_with(vec![
            bind(&config, "/etc/config", true),
            bind(&plain, "/etc/plain", true),
        ]);
        let content = translate(&mut spec).unwrap();
        assert_eq!(content.directories.len(), 2);
        assert_eq!(content.watched.len(), 1, "only the atomic-writer layout");
        let mut watched = content.watched[0].clone();
        assert_eq!(watched.destination, "/etc/config");
        assert_eq!(watched.generation, Path::new("..2026_12_03_12_00_00.1"));
        assert_eq!(changed(&watched).unwrap(), None);
        // kubelet's next generation: written aside, ..data renamed onto, the old one removed.
        generation("..2026_12_03_12_01_00.2", "lives=4");
        std::os::unix::fs::symlink("..2026_12_03_12_01_00.2", config.join("..data_tmp")).unwrap();
        fs::rename(config.join("..data_tmp"), config.join("..data")).unwrap();
        fs::remove_dir_all(config.join("..2026_12_03_12_00_00.1")).unwrap();
        let (tree, next) = changed(&watched).unwrap().unwrap();
        assert_eq!(next, Path::new("..2026_12_03_12_01_00.2"));
        assert_eq!(tree.destination, "/etc/config");
        let paths: Vec<_> = tree.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "..2026_12_03_12_01_00.2",
                "..2026_12_03_12_01_00.2/game.properties",
                "..data",
                "game.properties"
            ]
        );
        assert_eq!(tree.entries[1].content, b"lives=4");
        watched.generation = next;
        assert_eq!(changed(&watched).unwrap(), None);
        // The volume gone (its pod is being deleted): an error naming it, no panic.
        fs::remove_dir_all(&config).unwrap();
        let err = changed(&watched).unwrap_err();
        assert!(err.contains(&config.display().to_string()), "{err}");
    }

    #[test]
    fn only_writable_termination_message_files_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let kubelet = dir.path().join("pods/uid-1/containers/app");
        fs::create_dir_all(&kubelet).unwrap();
        let log = kubelet.join("0a1b2c3d");
        fs::write(&log, "").unwrap();
        let hosts = dir.path().join("hosts");
        fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let returned = |mount: Mount| {
            let content = translate(&mut spec_with(vec![mount])).unwrap();
            assert_eq!(content.files.len(), 1);
            let asked = content.files[0].return_max_bytes;
            assert_eq!(asked > 0, !content.returned.is_empty());
            content.returned
        };
        let back = returned(bind(&log, "/dev/termination-log", false));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].source, log);
        assert_eq!(back[0].destination, "/dev/termination-log");
        // A custom terminationMessagePath: kubelet's host path tells.
        assert_eq!(returned(bind(&log, "/tmp/why", false)).len(), 1);
        // Read-only, or another writable file (containerd's /etc/hosts, a hostPath file even at
        // kubelet's default path): stays in the guest.
        assert!(returned(bind(&log, "/dev/termination-log", true)).is_empty());
        assert!(returned(bind(&hosts, "/etc/hosts", false)).is_empty());
        assert!(returned(bind(&hosts, "/dev/termination-log", false)).is_empty());
        // Another container's file of kubelet's (a hostPath into kubelet's directory): not
        // this container's when containerd names it.
        let named = |name: &str| {
            let mut spec = spec_with(vec![bind(&log, "/dev/termination-log", false)]);
            spec.set_annotations(Some(
                [(crate::pod::CONTAINER_NAME.to_owned(), name.to_owned())].into(),
            ));
            translate(&mut spec).unwrap().returned
        };
        assert_eq!(named("app").len(), 1);
        assert!(named("other").is_empty());
        assert!(!is_termination_message(
            Path::new("/pods/u/containers/c"),
            None
        ));
        assert!(!is_termination_message(
            Path::new("/pods/u/other/c/1"),
            None
        ));
        assert!(is_termination_message(
            Path::new("/var/lib/kubelet/pods/u/containers/c/1"),
            Some("c")
        ));
    }

    /// An empty termination message file where kubelet makes it, with `content`.
    fn kubelet_file(root: &Path, content: &str) -> PathBuf {
        let dir = root.join("pods/uid-1/containers/app");
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("0a1b2c3d");
        fs::write(&log, content).unwrap();
        log
    }

    #[test]
    fn a_termination_message_is_written_back_capped_and_only_to_the_bound_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = kubelet_file(dir.path(), "old content, longer than the message");
        let content = translate(&mut spec_with(vec![bind(
            &log,
            "/dev/termination-log",
            false,
        )]))
        .unwrap();
        let bind = content.returned[0].clone();
        write_back(&bind, b"done: 42").unwrap();
        assert_eq!(fs::read(&log).unwrap(), b"done: 42");
        let mut long = vec![b'x'; 2 * MAX_RETURNED_FILE_BYTES];
        long.extend_from_slice(b"END");
        write_back(&bind, &long).unwrap();
        let written = fs::read(&log).unwrap();
        assert_eq!(written.len(), MAX_RETURNED_FILE_BYTES);
        assert!(written.ends_with(b"xEND"));

        // Replaced by a symlink to another file: that file is left alone.
        let other = dir.path().join("other");
        fs::write(&other, "keep").unwrap();
        fs::remove_file(&log).unwrap();
        std::os::unix::fs::symlink(&other, &log).unwrap();
        let err = write_back(&bind, b"evil").unwrap_err();
        assert!(err.contains("0a1b2c3d"), "{err}");
        assert_eq!(fs::read(&other).unwrap(), b"keep");
        // Replaced by another regular file: refused too. (The bind names `other`'s inode, which
        // lives on, since a new file may get a freed inode's number again.)
        fs::remove_file(&log).unwrap();
        fs::write(&log, "new").unwrap();
        let bind = ReturnedBind {
            ino: fs::metadata(&other).unwrap().ino(),
            ..bind
        };
        let err = write_back(&bind, b"evil").unwrap_err();
        assert!(err.contains("no longer"), "{err}");
        assert_eq!(fs::read(&log).unwrap(), b"new");
        // Gone: not created.
        fs::remove_file(&log).unwrap();
        assert!(write_back(&bind, b"evil").is_err());
        assert!(!log.exists());
    }

    #[test]
    fn symlinks_in_a_tree_are_sent_as_links_not_what_they_point_at() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("private.key"), "SECRET").unwrap();
        let volume = dir.path().join("secret-volume");
        fs::create_dir(&volume).unwrap();
        fs::write(volume.join("token"), "mine").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", volume.join("shadow")).unwrap();
        std::os::unix::fs::symlink(outside.join("private.key"), volume.join("key")).unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("dir")).unwrap();
        let content = translate(&mut spec_with(vec![bind(&volume, "/etc/secret", true)])).unwrap();
        let entries = &content.directories[0].entries;
        let shown = shown(entries);
        let key = outside.join("private.key");
        assert_eq!(
            shown,
            [
                (
                    "dir",
                    EntryKind::ENTRY_SYMLINK,
                    outside.as_os_str().as_bytes()
                ),
                ("key", EntryKind::ENTRY_SYMLINK, key.as_os_str().as_bytes()),
                ("shadow", EntryKind::ENTRY_SYMLINK, &b"/etc/shadow"[..]),
                ("token", EntryKind::ENTRY_FILE, &b"mine"[..]),
            ]
        );
    }

    #[test]
    fn fifos_are_refused_without_hanging_the_shim() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = |path: &Path| {
            rustix::fs::mknodat(CWD, path, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap()
        };
        // In a tree: refused by name.
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fifo(&tree.join("pipe"));
        let err = translate(&mut spec_with(vec![bind(&tree, "/t", true)])).unwrap_err();
        assert!(err.contains("pipe") && err.contains("FIFO"), "{err}");
        // As a bind's source.
        let pipe = dir.path().join("hosts");
        fifo(&pipe);
        let err = translate(&mut spec_with(vec![bind(&pipe, "/etc/hosts", true)])).unwrap_err();
        assert!(
            err.contains("/etc/hosts") && err.contains("not shared"),
            "{err}"
        );
        // Put where a termination message file was.
        let log = kubelet_file(dir.path(), "");
        let content = translate(&mut spec_with(vec![bind(
            &log,
            "/dev/termination-log",
            false,
        )]))
        .unwrap();
        fs::remove_file(&log).unwrap();
        fifo(&log);
        let err = write_back(&content.returned[0], b"evil").unwrap_err();
        assert!(err.contains("no longer"), "{err}");
    }

    #[test]
    fn an_oversized_file_in_a_tree_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("small"), "ok").unwrap();
        fs::write(tree.join("huge"), vec![0u8; MAX_FILE_BYTES + 1]).unwrap();
        let err = translate(&mut spec_with(vec![bind(&tree, "/t", true)])).unwrap_err();
        assert!(
            err.contains("huge") && err.contains(&format!("{MAX_FILE_BYTES} bytes")),
            "{err}"
        );
    }

    #[test]
    fn writable_directories_and_missing_paths_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(vec![bind(dir.path(), "/data", false)]);
        let err = translate(&mut spec).unwrap_err();
        assert!(err.contains("/data") && err.contains("not shared"), "{err}");
        let mut spec = spec_with(vec![bind(&dir.path().join("missing"), "/etc/hosts", true)]);
        let err = translate(&mut spec).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn oversized_files_trees_and_special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        fs::write(&big, vec![0u8; MAX_FILE_BYTES + 1]).unwrap();
        let err = translate(&mut spec_with(vec![bind(&big, "/big", true)])).unwrap_err();
        assert!(err.contains("more than"), "{err}");

        let tree = dir.path().join("tree");
        fs::create_dir(&tree).unwrap();
        for i in 0..4 {
            fs::write(tree.join(i.to_string()), vec![0u8; MAX_FILE_BYTES]).unwrap();
        }
        let err = translate(&mut spec_with(vec![bind(&tree, "/tree", true)])).unwrap_err();
        assert!(err.contains("exceed") && err.contains("/tree"), "{err}");

        let many = dir.path().join("many");
        fs::create_dir(&many).unwrap();
        for i in 0..=MAX_DIRECTORY_ENTRIES {
            fs::write(many.join(i.to_string()), "").unwrap();
        }
        let err = translate(&mut spec_with(vec![bind(&many, "/many", true)])).unwrap_err();
        assert!(err.contains("entries"), "{err}");

        let special = dir.path().join("special");
        fs::create_dir(&special).unwrap();
        std::os::unix::net::UnixListener::bind(special.join("socket")).unwrap();
        let err = translate(&mut spec_with(vec![bind(&special, "/s", true)])).unwrap_err();
        assert!(err.contains("socket") && err.contains("neither"), "{err}");
    }
}
