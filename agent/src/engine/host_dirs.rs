//! Host directories the container's spec bind-mounts (kubelet's configMap, secret and
//! service-account token volumes; Kubernetes emptyDirs): their host paths mean nothing in the
//! guest, so the host sends each directory's tree and the agent builds it here.
//! - Without a pod key the tree becomes a private copy in the container's directory.
//! - With one it becomes the VM's directory of that key (on the scratch disk, or a tmpfs when
//!   a memory size is given): the first container creates and fills it, later ones share it.
//! - With a pod key and a subpath (a Kubernetes subPath of an emptyDir) the container gets
//!   only that directory inside the pod directory. Another container of the pod can change
//!   the tree at any time, so the subpath is walked one component at a time without following
//!   a symlink, and the directory reached is bound, by its file descriptor, onto a mount point
//!   of the agent's own (`run/subpaths/<container>/<n>`, out of every container's reach); the
//!   spec's mount binds that. Those mount points are only ever unmounted and rmdir'ed, so no
//!   cleanup can reach into the pod directory.
//!
//! Entries are built with exclusive creation, each below a directory this module made itself,
//! so no entry (a symlink, say) can redirect a later one outside the tree.
//!
//! A private copy can be brought to a newer tree of its host directory ([`update`]): kubelet
//! changes configMap, secret and token volumes in place with its atomic writer (a new
//! `..<timestamp>` directory, then the `..data` symlink renamed onto, then the old directory
//! removed), and the update does the same steps in the same order: new entries first, each
//! changed file or symlink replaced by a rename, what is gone removed last. Readers that go
//! through `..data` see the old tree or the new one, never a mix.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Spec;
use rvm_protocol::limits::{MAX_DIRECTORY_ENTRIES, MAX_FILE_BYTES};

use super::{invalid, io_error, EngineError};

/// Most bytes of a symlink's target.
const MAX_TARGET_BYTES: usize = 4096;
/// Most bytes of a pod key.
const MAX_KEY_BYTES: usize = 64;

/// One directory as the host sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostDirectory {
    pub destination: PathBuf,
    pub mode: u32,
    pub entries: Vec<Entry>,
    /// The VM-wide directory this is (see the module doc); `None` for a private copy.
    pub pod_key: Option<String>,
    /// With a pod key: a tmpfs of this many bytes; 0 for the scratch disk.
    pub memory_bytes: u64,
    /// With a pod key: the directory inside it the container gets (a subPath); `None` for all.
    pub pod_subpath: Option<PathBuf>,
}

/// One entry of a directory's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the directory.
    pub path: PathBuf,
    pub kind: EntryKind,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File(Vec<u8>),
    Directory,
    Symlink(PathBuf),
}

/// The VM's pod directories: where they live, and a lock so two containers created at once
/// do not both fill the same one.
#[derive(Debug)]
pub struct PodDirectories {
    created: Mutex<HashSet<String>>,
}

impl PodDirectories {
    pub fn new() -> Self {
        Self {
            created: Mutex::new(HashSet::new()),
        }
    }

    /// The directory of `dir`'s pod key below `base`, created and filled on first use.
    fn get_or_create(
        &self,
        base: &Path,
        key: &str,
        dir: &HostDirectory,
    ) -> Result<PathBuf, EngineError> {
        let path = base.join(key);
        let mut created = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if created.contains(key) {
            return Ok(path);
        }
        let what = || format!("pod directory {key} for {}", dir.destination.display());
        // A directory left by a container created before a failed attempt is started afresh.
        if path.exists() {
            remove_tree(&path).map_err(io_error(what()))?;
        }
        make_dir(&path, dir.mode).map_err(io_error(what()))?;
        if dir.memory_bytes > 0 {
            mount_tmpfs(&path, dir.memory_bytes, dir.mode).map_err(io_error(what()))?;
        }
        fill(&path, &dir.entries).map_err(|e| with_context(e, &what()))?;
        created.insert(key.to_owned());
        Ok(path)
    }
}

impl Default for PodDirectories {
    fn default() -> Self {
        Self::new()
    }
}

/// A private copy [`apply`] made: the mount's destination and the copy's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateCopy {
    pub destination: PathBuf,
    pub path: PathBuf,
}

/// Where [`apply`] builds what it needs for one container: private copies in `container`,
/// pod directories in `pods`, subpath mount points in `subpaths`.
#[derive(Debug, Clone, Copy)]
pub struct Places<'a> {
    pub container: &'a Path,
    pub pods: &'a Path,
    pub subpaths: &'a Path,
}

/// Builds `dirs` (see [`Places`]) and points the spec's mounts at their destinations to them.
/// A directory whose destination no spec mount has, whose tree is malformed, or whose subpath
/// cannot be reached without a symlink, is refused. On an error, the subpath mounts already
/// made stay until [`release_subpaths`]. Returns the private copies made.
pub fn apply(
    spec: &mut Spec,
    dirs: &[HostDirectory],
    places: Places<'_>,
    pods: &PodDirectories,
) -> Result<Vec<PrivateCopy>, EngineError> {
    let mut copies = Vec::new();
    if dirs.is_empty() {
        return Ok(copies);
    }
    // A container created again under the same id must not find mount points of before.
    release_subpaths(places.subpaths);
    let (container_dir, pod_base) = (places.container, places.pods);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (index, dir) in dirs.iter().enumerate() {
        let what = || format!("host directory for {}", dir.destination.display());
        check(dir).map_err(|reason| invalid(what(), reason))?;
        let mount = mounts
            .iter_mut()
            .rev()
            .find(|mount| mount.destination() == &dir.destination)
            .ok_or_else(|| invalid(what(), "no mount of the spec has this destination"))?;
        let source = match &dir.pod_key {
            Some(key) => {
                fs::create_dir_all(pod_base)
                    .map_err(io_error(format!("create {}", pod_base.display())))?;
                let pod_dir = pods.get_or_create(pod_base, key, dir)?;
                match &dir.pod_subpath {
                    Some(subpath) => {
                        let point = places.subpaths.join(index.to_string());
                        bind_subpath(&pod_dir, subpath, dir.mode, &point).map_err(io_error(
                            format!("{}: subPath {}", what(), subpath.display()),
                        ))?;
                        point
                    }
                    None => pod_dir,
                }
            }
            None => {
                let path = container_dir.join("dirs").join(index.to_string());
                fs::create_dir_all(container_dir.join("dirs"))
                    .map_err(io_error(format!("create {}", container_dir.display())))?;
                make_dir(&path, dir.mode).map_err(io_error(what()))?;
                fill(&path, &dir.entries).map_err(|e| with_context(e, &what()))?;
                copies.push(PrivateCopy {
                    destination: dir.destination.clone(),
                    path: path.clone(),
                });
                path
            }
        };
        mount.set_source(Some(source));
        mount.set_typ(Some("bind".to_owned()));
    }
    spec.set_mounts(Some(mounts));
    Ok(copies)
}

/// Brings the private copy at `root` to `dir`'s tree (see the module doc). `dir` is checked
/// as for [`apply`]; a pod directory is the VM's and is never updated from the host.
pub fn update(root: &Path, dir: &HostDirectory) -> Result<(), EngineError> {
    let what = || {
        format!(
            "update of the host directory for {}",
            dir.destination.display()
        )
    };
    check(dir).map_err(|reason| invalid(what(), reason))?;
    if dir.pod_key.is_some() {
        return Err(invalid(
            what(),
            "a pod directory is not updated from the host",
        ));
    }
    for entry in &dir.entries {
        bring(root, entry).map_err(|e| with_context((entry.path.clone(), e), &what()))?;
    }
    let wanted: HashSet<&Path> = dir.entries.iter().map(|e| e.path.as_path()).collect();
    remove_unlisted(root, Path::new(""), &wanted).map_err(|e| with_context(e, &what()))?;
    fs::set_permissions(root, fs::Permissions::from_mode(dir.mode & 0o7777))
        .map_err(io_error(what()))
}

/// Makes the entry at `root/entry.path` what `entry` says. Its parents are directories by now
/// (each listed, and so brought, before it), made by this module.
fn bring(root: &Path, entry: &Entry) -> io::Result<()> {
    let path = root.join(&entry.path);
    let current = match fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return create(&path, entry),
        Err(e) => return Err(e),
    };
    let mode = |meta: &fs::Metadata| meta.permissions().mode() & 0o7777;
    match &entry.kind {
        EntryKind::Directory if current.is_dir() => {
            if mode(&current) != entry.mode & 0o7777 {
                fs::set_permissions(&path, fs::Permissions::from_mode(entry.mode & 0o7777))?;
            }
            Ok(())
        }
        EntryKind::File(content) if current.is_file() => {
            if mode(&current) == entry.mode & 0o7777 && fs::read(&path)? == *content {
                return Ok(());
            }
            replace(&path, entry)
        }
        EntryKind::Symlink(target) if current.file_type().is_symlink() => {
            if fs::read_link(&path)? == *target {
                return Ok(());
            }
            replace(&path, entry)
        }
        EntryKind::Directory => {
            // Was a file or a link: the directory's entries follow it in the list.
            fs::remove_file(&path)?;
            create(&path, entry)
        }
        EntryKind::File(_) | EntryKind::Symlink(_) => replace(&path, entry),
    }
}

/// Creates `entry` at `path`, which does not exist.
fn create(path: &Path, entry: &Entry) -> io::Result<()> {
    match &entry.kind {
        EntryKind::Directory => make_dir(path, entry.mode),
        EntryKind::File(content) => write_new(path, content, entry.mode),
        EntryKind::Symlink(target) => std::os::unix::fs::symlink(target, path),
    }
}

/// Replaces what is at `path` by `entry` (a file or a symlink) in one rename: it is made
/// beside it first. A directory there is removed first (a kind that changed).
fn replace(path: &Path, entry: &Entry) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let staged = path.with_file_name(format!(".rvm-update.{name}"));
    remove_any(&staged)?;
    create(&staged, entry)?;
    if fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir()) {
        fs::remove_dir_all(path)?;
    }
    fs::rename(&staged, path)
}

/// Removes a file, symlink or tree at `path` (never following a symlink); nothing there is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes what below `root/relative` is not in `wanted` (whole trees at once).
fn remove_unlisted(
    root: &Path,
    relative: &Path,
    wanted: &HashSet<&Path>,
) -> Result<(), (PathBuf, io::Error)> {
    let dir = root.join(relative);
    let entries = fs::read_dir(&dir).map_err(|e| (relative.to_owned(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (relative.to_owned(), e))?;
        let path = relative.join(entry.file_name());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !wanted.contains(path.as_path()) {
            remove_any(&root.join(&path)).map_err(|e| (path.clone(), e))?;
        } else if is_dir {
            remove_unlisted(root, &path, wanted)?;
        }
    }
    Ok(())
}

/// Checks what the host sent: a sane key, size and entry count, and entry paths that are
/// relative, unique and below a directory entry listed before them.
fn check(dir: &HostDirectory) -> Result<(), String> {
    if let Some(key) = &dir.pod_key {
        let fine = !key.is_empty()
            && key.len() <= MAX_KEY_BYTES
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !fine {
            return Err(format!(
                "pod key {key:?} is not 1 to {MAX_KEY_BYTES} of [A-Za-z0-9_-]"
            ));
        }
    } else if dir.memory_bytes > 0 {
        return Err("a memory size without a pod key".to_owned());
    } else if dir.pod_subpath.is_some() {
        return Err("a subpath without a pod key".to_owned());
    }
    if let Some(subpath) = &dir.pod_subpath {
        if !is_plain_relative(subpath) || subpath.as_os_str().len() > MAX_TARGET_BYTES {
            return Err(format!(
                "subpath {:?} is not a relative path of at most {MAX_TARGET_BYTES} bytes without . or ..",
                subpath.display()
            ));
        }
    }
    if dir.entries.len() > MAX_DIRECTORY_ENTRIES {
        return Err(format!(
            "{} entries, more than {MAX_DIRECTORY_ENTRIES}",
            dir.entries.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut directories: HashSet<&Path> = HashSet::new();
    directories.insert(Path::new(""));
    for entry in &dir.entries {
        let shown = entry.path.display();
        if !is_plain_relative(&entry.path) {
            return Err(format!(
                "entry path {shown:?} is not a relative path without . or .."
            ));
        }
        if !seen.insert(entry.path.as_path()) {
            return Err(format!("entry {shown} is listed twice"));
        }
        let parent = entry.path.parent().unwrap_or(Path::new(""));
        if !directories.contains(parent) {
            return Err(format!(
                "entry {shown} is not below a directory listed before it"
            ));
        }
        match &entry.kind {
            EntryKind::Directory => {
                directories.insert(entry.path.as_path());
            }
            EntryKind::File(content) if content.len() > MAX_FILE_BYTES => {
                return Err(format!(
                    "file {shown} holds {} bytes, more than {MAX_FILE_BYTES}",
                    content.len()
                ));
            }
            EntryKind::Symlink(target) => {
                let length = target.as_os_str().len();
                if length == 0 || length > MAX_TARGET_BYTES {
                    return Err(format!(
                        "symlink {shown} has a target of {length} bytes (1 to {MAX_TARGET_BYTES})"
                    ));
                }
            }
            EntryKind::File(_) => {}
        }
    }
    Ok(())
}

/// Whether `path` is relative, "/"-separated names without "", "." or "..". Checked on the
/// bytes: Path's components would hide "a/./b" and "a//b".
fn is_plain_relative(path: &Path) -> bool {
    path.as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .all(|part| !matches!(part, b"" | b"." | b".."))
}

/// Walks `subpath` (checked by [`check`]) down from `pod_dir` one directory at a time, never
/// following a symlink, creating what is missing with `mode`, and binds the directory reached
/// onto `point` (created). Whatever the pod's containers did to the tree, the bind is of a
/// directory inside `pod_dir`.
fn bind_subpath(pod_dir: &Path, subpath: &Path, mode: u32, point: &Path) -> io::Result<()> {
    use nix::fcntl::{openat, OFlag, AT_FDCWD};
    use nix::sys::stat::{fchmod, mkdirat, Mode};
    use std::os::fd::AsRawFd;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut current = openat(AT_FDCWD, pod_dir, flags, Mode::empty())?;
    for name in subpath.iter() {
        let created = match mkdirat(&current, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => true,
            Err(nix::errno::Errno::EEXIST) => false,
            Err(e) => return Err(e.into()),
        };
        current = openat(&current, name, flags, Mode::empty()).map_err(|e| match e {
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => io::Error::other(format!(
                "{} is not a directory in the pod directory (a symlink is not followed)",
                name.to_string_lossy()
            )),
            e => e.into(),
        })?;
        if created {
            fchmod(&current, Mode::from_bits_truncate(mode & 0o7777))?;
        }
    }
    fs::create_dir_all(point)?;
    let source = format!("/proc/self/fd/{}", current.as_raw_fd());
    mount(
        Some(source.as_str()),
        point,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Unmounts and removes the subpath mount points in `subpaths` (see the module doc). Only
/// empty directories are removed: a mount point that would not unmount stays, with what it
/// shows.
pub fn release_subpaths(subpaths: &Path) {
    let Ok(points) = fs::read_dir(subpaths) else {
        return;
    };
    for point in points.flatten().map(|entry| entry.path()) {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
        if let Err(error) = fs::remove_dir(&point) {
            tracing::warn!(point = %point.display(), %error, "cannot remove a subpath mount point");
        }
    }
    let _ = fs::remove_dir(subpaths);
}

/// Creates `entries` below `root` (checked by [`check`]), each exclusively.
fn fill(root: &Path, entries: &[Entry]) -> Result<(), (PathBuf, io::Error)> {
    for entry in entries {
        create(&root.join(&entry.path), entry).map_err(|e| (entry.path.clone(), e))?;
    }
    Ok(())
}

fn with_context((path, source): (PathBuf, io::Error), what: &str) -> EngineError {
    EngineError::Io {
        what: format!("{what}: create {}", path.display()),
        source,
    }
}

/// Makes a directory with exactly `mode` (the umask would narrow it otherwise).
fn make_dir(path: &Path, mode: u32) -> io::Result<()> {
    DirBuilder::new().mode(0o700).create(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
}

fn write_new(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
}

fn mount_tmpfs(path: &Path, bytes: u64, mode: u32) -> io::Result<()> {
    let data = format!("size={bytes},mode={:o}", mode & 0o7777);
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(io::Error::from)
}

fn remove_tree(path: &Path) -> io::Result<()> {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    fs::remove_dir_all(path)
}

// The tests' shared answer to a missing prerequisite (here: root): fail under CI, skip elsewhere.
// Also used by `device_nodes`' tests (a second copy is clippy's `duplicate_mod`).
#[cfg(test)]
#[path = "../../../tests/fixtures/prerequisite.rs"]
pub(crate) mod prerequisite;

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;
    use std::os::unix::fs::MetadataExt;

    fn spec_with(destinations: &[&str]) -> Spec {
        let mut spec = Spec::default();
        let mounts = destinations
            .iter()
            .map(|destination| {
                MountBuilder::default()
                    .destination(*destination)
                    .typ("bind")
                    .source("/var/lib/kubelet/pods/x/volumes/y")
                    .options(vec!["rbind".to_owned(), "ro".to_owned()])
                    .build()
                    .unwrap()
            })
            .collect();
        spec.set_mounts(Some(mounts));
        spec
    }

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o644,
        }
    }

    /// kubelet's atomic-writer layout: the generation directory `stamp` holding `keys`,
    /// `..data` pointing at it, and a link per key through `..data`.
    fn atomic_layout(
        destination: &str,
        mode: u32,
        stamp: &str,
        keys: &[(&str, &str)],
    ) -> HostDirectory {
        let mut entries = vec![Entry {
            mode: 0o755,
            ..entry(stamp, EntryKind::Directory)
        }];
        for (key, value) in keys {
            let content = EntryKind::File(value.as_bytes().to_vec());
            entries.push(entry(&format!("{stamp}/{key}"), content));
        }
        entries.push(entry("..data", EntryKind::Symlink(stamp.into())));
        for (key, _) in keys {
            let link = EntryKind::Symlink(format!("..data/{key}").into());
            entries.push(entry(key, link));
        }
        HostDirectory {
            destination: destination.into(),
            mode,
            entries,
            ..Default::default()
        }
    }

    /// kubelet's atomic-writer layout of a configMap with one key.
    fn config_map(destination: &str) -> HostDirectory {
        let keys = [("game.properties", "lives=3\n")];
        atomic_layout(destination, 0o1777, "..2026_12_02_10_00_00.1", &keys)
    }

    /// [`apply`] for container `container`, with every place below `root` (pod directories
    /// in `root/pods`).
    fn apply_in(
        root: &Path,
        container: &str,
        spec: &mut Spec,
        dirs: &[HostDirectory],
        pods: &PodDirectories,
    ) -> Result<Vec<PrivateCopy>, EngineError> {
        let places = Places {
            container: &root.join(container),
            pods: &root.join("pods"),
            subpaths: &root.join("subpaths").join(container),
        };
        apply(spec, dirs, places, pods)
    }

    fn source_of(spec: &Spec) -> PathBuf {
        spec.mounts().as_ref().unwrap()[0].source().clone().unwrap()
    }

    /// Runs `test` on a thread of its own in a private mount namespace (the subpath tests
    /// bind-mount); without root it fails under CI and is skipped elsewhere.
    fn in_mount_namespace(test: impl FnOnce() + Send + 'static) {
        use nix::sched::{unshare, CloneFlags};
        if !prerequisite::prerequisite(prerequisite::missing_root("a subpath's bind mount")) {
            return;
        }
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS).unwrap();
            let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
            mount(None::<&str>, "/", None::<&str>, private, None::<&str>).unwrap();
            test();
        })
        .join()
        .unwrap();
    }

    fn pod_dir(destination: &str, subpath: Option<&str>) -> HostDirectory {
        HostDirectory {
            destination: destination.into(),
            mode: 0o777,
            pod_key: Some("vol_1".into()),
            pod_subpath: subpath.map(PathBuf::from),
            ..Default::default()
        }
    }

    /// The pod directory of [`pod_dir`] as container "a" gets it whole.
    fn whole_pod_dir(root: &Path, pods: &PodDirectories) -> PathBuf {
        let mut whole = spec_with(&["/cache"]);
        apply_in(root, "a", &mut whole, &[pod_dir("/cache", None)], pods).unwrap();
        source_of(&whole)
    }

    #[test]
    fn a_subpath_binds_a_directory_inside_the_pod_directory() {
        in_mount_namespace(|| {
            let root = tempfile::tempdir().unwrap();
            let pods = PodDirectories::new();
            let shared = whole_pod_dir(root.path(), &pods);
            // The subpath does not exist yet in the guest: it is made, with the volume's mode.
            let mut part = spec_with(&["/work"]);
            let dirs = [pod_dir("/work", Some("sub/dir"))];
            apply_in(root.path(), "b", &mut part, &dirs, &pods).unwrap();
            let point = source_of(&part);
            assert_eq!(point, root.path().join("subpaths/b/0"));
            fs::write(point.join("from-b"), b"b").unwrap();
            assert_eq!(fs::read(shared.join("sub/dir/from-b")).unwrap(), b"b");
            let mode = fs::metadata(shared.join("sub")).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o777);
            // Released: the mount point goes, what was written through it stays.
            release_subpaths(&root.path().join("subpaths/b"));
            assert!(!root.path().join("subpaths/b").exists());
            assert_eq!(fs::read(shared.join("sub/dir/from-b")).unwrap(), b"b");
        });
    }

    #[test]
    fn a_subpath_through_a_symlink_is_refused() {
        in_mount_namespace(|| {
            let root = tempfile::tempdir().unwrap();
            let outside = root.path().join("outside");
            fs::create_dir(&outside).unwrap();
            let pods = PodDirectories::new();
            let shared = whole_pod_dir(root.path(), &pods);
            // A container of the pod put a symlink where the subpath goes.
            std::os::unix::fs::symlink(&outside, shared.join("evil")).unwrap();
            for subpath in ["evil", "evil/x"] {
                let mut spec = spec_with(&["/work"]);
                let dirs = [pod_dir("/work", Some(subpath))];
                let err = apply_in(root.path(), "b", &mut spec, &dirs, &pods)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("evil is not a directory"), "{err}");
                assert!(err.contains("/work") && err.contains(subpath), "{err}");
            }
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
            release_subpaths(&root.path().join("subpaths/b"));
        });
    }

    #[test]
    fn a_private_copy_keeps_the_tree_with_its_links_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(&["/etc/config"]);
        let pods = PodDirectories::new();
        let base = dir.path().join("pods");
        apply_in(
            dir.path(),
            "c",
            &mut spec,
            &[config_map("/etc/config")],
            &pods,
        )
        .unwrap();
        let mount = &spec.mounts().as_ref().unwrap()[0];
        let source = mount.source().as_ref().unwrap();
        assert!(source.starts_with(dir.path().join("c/dirs")));
        assert_eq!(
            fs::read(source.join("game.properties")).unwrap(),
            b"lives=3\n"
        );
        assert_eq!(
            fs::read_link(source.join("..data")).unwrap(),
            Path::new("..2026_12_02_10_00_00.1")
        );
        assert_eq!(fs::metadata(source).unwrap().mode() & 0o7777, 0o1777);
        let inner = source.join("..2026_12_02_10_00_00.1");
        assert_eq!(fs::metadata(inner).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(mount.options().as_ref().unwrap(), &["rbind", "ro"]);
        assert!(!base.exists());
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_update_brings_a_copy_to_kubelets_next_generation() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(&["/etc/config"]);
        let pods = PodDirectories::new();
        let copies = apply_in(
            dir.path(),
            "c",
            &mut spec,
            &[config_map("/etc/config")],
            &pods,
        )
        .unwrap();
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].destination, Path::new("/etc/config"));
        let copy = &copies[0].path;
        assert_eq!(&source_of(&spec), copy);
        // kubelet's next generation: a new timestamped directory, ..data flipped to it, a key
        // added, the old directory gone.
        let next = |game: &str| {
            let keys = [("game.properties", game), ("ui.properties", "color=red\n")];
            atomic_layout("/etc/config", 0o755, "..2026_12_03_12_00_00.2", &keys)
        };
        update(copy, &next("lives=4\n")).unwrap();
        assert_eq!(
            fs::read(copy.join("game.properties")).unwrap(),
            b"lives=4\n"
        );
        assert_eq!(
            fs::read(copy.join("ui.properties")).unwrap(),
            b"color=red\n"
        );
        let expected = [
            "..2026_12_03_12_00_00.2",
            "..data",
            "game.properties",
            "ui.properties",
        ];
        assert_eq!(
            names(copy),
            expected,
            "the old generation and nothing staged left"
        );
        assert_eq!(fs::metadata(copy).unwrap().mode() & 0o7777, 0o755);
        // A file's content changes in place; the same tree again changes nothing.
        update(copy, &next("lives=5\n")).unwrap();
        update(copy, &next("lives=5\n")).unwrap();
        assert_eq!(
            fs::read(copy.join("game.properties")).unwrap(),
            b"lives=5\n"
        );
        assert_eq!(names(copy), expected);
        // Kinds that change: a link becomes a directory with a file, a directory a file.
        let changed = HostDirectory {
            destination: "/etc/config".into(),
            mode: 0o755,
            entries: vec![
                entry("game.properties", EntryKind::Directory),
                entry("game.properties/x", EntryKind::File(b"x".to_vec())),
                entry(
                    "..2026_12_03_12_00_00.2",
                    EntryKind::File(b"was a directory".to_vec()),
                ),
            ],
            ..Default::default()
        };
        update(copy, &changed).unwrap();
        assert_eq!(fs::read(copy.join("game.properties/x")).unwrap(), b"x");
        assert_eq!(
            fs::read(copy.join("..2026_12_03_12_00_00.2")).unwrap(),
            b"was a directory"
        );
        assert_eq!(names(copy), ["..2026_12_03_12_00_00.2", "game.properties"]);
    }

    #[test]
    fn an_update_of_a_pod_directory_or_a_bad_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        make_dir(&copy, 0o755).unwrap();
        let pod = HostDirectory {
            pod_key: Some("k".into()),
            ..config_map("/cache")
        };
        let err = update(&copy, &pod).unwrap_err().to_string();
        assert!(
            err.contains("pod directory") && err.contains("/cache"),
            "{err}"
        );
        let bad = HostDirectory {
            entries: vec![entry("../escape", EntryKind::File(Vec::new()))],
            ..config_map("/etc/config")
        };
        let err = update(&copy, &bad).unwrap_err().to_string();
        assert!(err.contains("not a relative path"), "{err}");
        assert!(!dir.path().join("escape").exists());
        assert!(names(&copy).is_empty());
    }

    #[test]
    fn containers_naming_one_pod_key_share_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let pods = PodDirectories::new();
        let base = dir.path().join("pods");
        let empty_dir = HostDirectory {
            destination: "/cache".into(),
            mode: 0o777,
            pod_key: Some("abc_123".into()),
            ..Default::default()
        };
        let mut first = spec_with(&["/cache"]);
        let dirs = std::slice::from_ref(&empty_dir);
        apply_in(dir.path(), "a", &mut first, dirs, &pods).unwrap();
        let source = first.mounts().as_ref().unwrap()[0]
            .source()
            .clone()
            .unwrap();
        assert_eq!(source, base.join("abc_123"));
        fs::write(source.join("written-by-a"), b"a").unwrap();
        let mut second = spec_with(&["/cache"]);
        apply_in(dir.path(), "b", &mut second, &[empty_dir], &pods).unwrap();
        let second_source = second.mounts().as_ref().unwrap()[0].source().clone();
        assert_eq!(second_source.as_deref(), Some(source.as_path()));
        assert_eq!(fs::read(source.join("written-by-a")).unwrap(), b"a");
    }

    #[test]
    fn entries_that_could_escape_or_are_malformed_are_refused() {
        let cases: Vec<(Vec<Entry>, &str)> = vec![
            (vec![entry("../x", EntryKind::Directory)], "not a relative"),
            (vec![entry("/etc", EntryKind::Directory)], "not a relative"),
            (vec![entry("a/./b", EntryKind::Directory)], "not a relative"),
            (vec![entry("a//b", EntryKind::Directory)], "not a relative"),
            (vec![entry("a/", EntryKind::Directory)], "not a relative"),
            (vec![entry("", EntryKind::Directory)], "not a relative"),
            (
                // A symlink to / followed by a file below it: the link is not a directory entry.
                vec![
                    entry("link", EntryKind::Symlink("/".into())),
                    entry("link/passwd", EntryKind::File(b"x".to_vec())),
                ],
                "not below a directory",
            ),
            (
                vec![entry("missing/file", EntryKind::File(Vec::new()))],
                "not below a directory",
            ),
            (
                vec![
                    entry("a", EntryKind::File(Vec::new())),
                    entry("a", EntryKind::File(Vec::new())),
                ],
                "listed twice",
            ),
            (
                vec![entry("big", EntryKind::File(vec![0; MAX_FILE_BYTES + 1]))],
                "more than",
            ),
            (
                vec![entry("l", EntryKind::Symlink(PathBuf::new()))],
                "target",
            ),
        ];
        for (entries, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let host = HostDirectory {
                destination: "/data".into(),
                mode: 0o755,
                entries,
                ..Default::default()
            };
            let mut spec = spec_with(&["/data"]);
            let err = apply_in(dir.path(), "c", &mut spec, &[host], &PodDirectories::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected) && err.contains("/data"), "{err}");
        }
    }

    #[test]
    fn bad_keys_too_many_entries_and_unknown_destinations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pods = PodDirectories::new();
        let run = |host: HostDirectory| {
            let mut spec = spec_with(&["/data"]);
            apply_in(dir.path(), "c", &mut spec, &[host], &pods)
                .unwrap_err()
                .to_string()
        };
        let base = HostDirectory {
            destination: "/data".into(),
            mode: 0o755,
            ..Default::default()
        };
        for key in ["", "../x", "a/b", &"k".repeat(65)] {
            let err = run(HostDirectory {
                pod_key: Some(key.to_owned()),
                ..base.clone()
            });
            assert!(err.contains("pod key"), "{err}");
        }
        let err = run(HostDirectory {
            memory_bytes: 1 << 20,
            ..base.clone()
        });
        assert!(err.contains("without a pod key"), "{err}");
        let err = run(HostDirectory {
            pod_subpath: Some("sub".into()),
            ..base.clone()
        });
        assert!(err.contains("subpath without a pod key"), "{err}");
        for subpath in ["../x", "/etc", "a/./b", "a//b", "a/"] {
            let err = run(HostDirectory {
                pod_key: Some("k".into()),
                pod_subpath: Some(subpath.into()),
                ..base.clone()
            });
            assert!(err.contains("is not a relative path"), "{err}");
        }
        let many = (0..=MAX_DIRECTORY_ENTRIES)
            .map(|i| entry(&i.to_string(), EntryKind::File(Vec::new())))
            .collect();
        let err = run(HostDirectory {
            entries: many,
            ..base.clone()
        });
        assert!(err.contains("entries, more than"), "{err}");
        let err = run(HostDirectory {
            destination: "/elsewhere".into(),
            ..base
        });
        assert!(err.contains("no mount"), "{err}");
    }
}
