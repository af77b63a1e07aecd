//! The device nodes a container gets beyond the standard ones of `rootfs::populate_dev`:
//! the VM's disks that are host block devices (`rvm run --device`), found by serial, each with
//! a device filter rule for exactly that device; and, for a container whose rules allow every
//! device (`--privileged`), a copy of every device node of the guest, as Docker gives a
//! privileged container every device of its host (here the machine is the VM).
//!
//! The engine decides the nodes (their numbers come from the guest's own devtmpfs, never from
//! the request); the init helper makes them in the container's new mount namespace before
//! `pivot_root`. Paths are walked from the rootfs one directory at a time without following a
//! symlink (an image may ship one, and /dev holds the agent's own `fd` and `ptmx` links), so a
//! node never lands outside the container. A node below `/dev` is made in the container's /dev
//! tmpfs; one elsewhere (Docker allows any path) is a bind of the guest's node onto an empty
//! file, since the rootfs is `nodev` for a container that is not privileged.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{major, makedev, minor, mkdirat, mknodat, umask, Mode, SFlag};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::devices::{access_bits, DeviceRule, Kind};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("device {path:?}: {reason}")]
    BadRequest { path: String, reason: String },
    #[error("device {path:?}: the VM's disk {guest} is not a block device")]
    NotBlock { path: String, guest: PathBuf },
    #[error("device node {path}: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("read the guest's device nodes in {dir}: {source}")]
    Read { dir: PathBuf, source: io::Error },
}

/// A `--device` as the host sends it: the serial of the VM's disk, the node's path in the
/// container and the permissions (a non-empty subset of "rwm").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    pub serial: String,
    pub path: String,
    pub permissions: String,
}

/// Block or character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Block,
    Char,
}

/// One node to make in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// Absolute path in the container, without `..`.
    pub path: PathBuf,
    pub kind: NodeKind,
    pub major: u64,
    pub minor: u64,
    /// Permission bits.
    pub mode: u32,
    /// The guest's own node, bound when `path` is outside /dev.
    pub source: PathBuf,
    /// Asked for by name (`--device`): a path already there is an error. A node copied for a
    /// privileged container is skipped instead.
    pub required: bool,
}

/// Guest directories whose nodes are not copied: mounts of their own, the container's own
/// kinds of them, and links (as Docker skips them on a host).
const SKIPPED_DIRS: [&str; 4] = ["pts", "shm", "mqueue", "fd"];
/// The console is the agent's, as Docker leaves the host's out.
const SKIPPED_NODES: [&str; 1] = ["console"];
/// Bounds of the walk of the guest's /dev.
const MAX_DEPTH: usize = 8;
const MAX_NODES: usize = 4096;

/// Checks a request's path (absolute, no `..`, not `/`) and permissions.
fn check_request(request: &DeviceRequest) -> Result<u32, NodeError> {
    let bad = |reason: &str| NodeError::BadRequest {
        path: request.path.clone(),
        reason: reason.to_owned(),
    };
    let path = Path::new(&request.path);
    if !path.is_absolute()
        || path.file_name().is_none()
        || path.components().any(|c| matches!(c, Component::ParentDir))
    {
        return Err(bad("the path must be absolute, without '..', and not /"));
    }
    if request.permissions.is_empty() {
        return Err(bad("no permissions: give a subset of \"rwm\""));
    }
    access_bits(Some(&request.permissions)).map_err(|reason| bad(&reason))
}

/// The node and the filter rule for `request`, whose disk the guest has at `guest` (found by
/// its serial); the numbers and mode are the guest's node's.
pub fn disk_node(
    request: &DeviceRequest,
    guest: &Path,
) -> Result<(DeviceNode, DeviceRule), NodeError> {
    let access = check_request(request)?;
    let metadata = fs::symlink_metadata(guest).map_err(|error| NodeError::Create {
        path: guest.to_owned(),
        reason: error.to_string(),
    })?;
    if !metadata.file_type().is_block_device() {
        return Err(NodeError::NotBlock {
            path: request.path.clone(),
            guest: guest.to_owned(),
        });
    }
    let (major, minor) = (major(metadata.rdev()), minor(metadata.rdev()));
    let rule = DeviceRule {
        allow: true,
        kind: Kind::Block,
        major: Some(major as u32),
        minor: Some(minor as u32),
        access,
    };
    let node = DeviceNode {
        path: PathBuf::from(&request.path),
        kind: NodeKind::Block,
        major,
        minor,
        mode: metadata.mode() & 0o777,
        source: guest.to_owned(),
        required: true,
    };
    Ok((node, rule))
}

/// Every block and character node of the guest's /dev (`dev`), as nodes at the same path in the
/// container's /dev, but for the console and the directories of [`SKIPPED_DIRS`]. Symlinks are
/// not followed.
pub fn guest_nodes(dev: &Path) -> Result<Vec<DeviceNode>, NodeError> {
    let mut nodes = Vec::new();
    walk(dev, Path::new("/dev"), 0, &mut nodes)?;
    Ok(nodes)
}

fn walk(
    dir: &Path,
    inside: &Path,
    depth: usize,
    nodes: &mut Vec<DeviceNode>,
) -> Result<(), NodeError> {
    let read_error = |source| NodeError::Read {
        dir: dir.to_owned(),
        source,
    };
    let mut entries = fs::read_dir(dir)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let kind = metadata.file_type();
        if kind.is_dir() {
            if depth < MAX_DEPTH && !SKIPPED_DIRS.iter().any(|skip| name == OsStr::new(skip)) {
                walk(&entry.path(), &inside.join(&name), depth + 1, nodes)?;
            }
            continue;
        }
        let kind = if kind.is_block_device() {
            NodeKind::Block
        } else if kind.is_char_device() {
            NodeKind::Char
        } else {
            continue;
        };
        if depth == 0 && SKIPPED_NODES.iter().any(|skip| name == OsStr::new(skip)) {
            continue;
        }
        if nodes.len() >= MAX_NODES {
            tracing::warn!(dir = %dir.display(), "more than {MAX_NODES} device nodes; the rest are not copied");
            return Ok(());
        }
        nodes.push(DeviceNode {
            path: inside.join(&name),
            kind,
            major: major(metadata.rdev()),
            minor: minor(metadata.rdev()),
            mode: metadata.mode() & 0o777,
            source: entry.path(),
            required: false,
        });
    }
    Ok(())
}

/// Makes `nodes` below `rootfs` (the container's root before `pivot_root`, its /dev already the
/// container's tmpfs), in order: a required node whose path exists is an error, a copied one
/// is skipped.
pub fn create_all(rootfs: &Path, nodes: &[DeviceNode]) -> Result<(), NodeError> {
    // The nodes get exactly their modes.
    let old = umask(Mode::empty());
    let result = nodes.iter().try_for_each(|node| create(rootfs, node));
    umask(old);
    result
}

fn create(rootfs: &Path, node: &DeviceNode) -> Result<(), NodeError> {
    let error = |reason: String| NodeError::Create {
        path: node.path.clone(),
        reason,
    };
    let relative = node
        .path
        .strip_prefix("/")
        .map_err(|_| error("not an absolute path".into()))?;
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(error("the path must be plain, without '.' or '..'".into()));
    }
    let (Some(parent), Some(name)) = (relative.parent(), relative.file_name()) else {
        return Err(error("no file name".into()));
    };
    let dir = open_parent(rootfs, parent).map_err(error)?;
    let in_dev = relative.starts_with("dev");
    let made = if in_dev {
        make_node(&dir, name, node)
    } else {
        bind_node(&dir, name, node)
    };
    match made {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) if !node.required => Ok(()),
        Err(Errno::EEXIST) => Err(error("a file is already there in the container".into())),
        Err(errno) => Err(error(errno.desc().to_owned())),
    }
}

/// Opens `parent` (relative) below `rootfs` one directory at a time, creating missing ones
/// (0755) and refusing a symlink or a non-directory on the way.
fn open_parent(rootfs: &Path, parent: &Path) -> Result<OwnedFd, String> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut current = openat(AT_FDCWD, rootfs, flags, Mode::empty())
        .map_err(|e| format!("open the rootfs {}: {e}", rootfs.display()))?;
    for name in parent.iter() {
        match mkdirat(&current, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(format!("create {}: {e}", name.to_string_lossy())),
        }
        current = openat(&current, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => format!(
                "{} on the way is not a directory (a symlink is not followed)",
                name.to_string_lossy()
            ),
            e => format!("open {}: {e}", name.to_string_lossy()),
        })?;
    }
    Ok(current)
}

fn make_node(dir: &OwnedFd, name: &OsStr, node: &DeviceNode) -> Result<(), Errno> {
    let kind = match node.kind {
        NodeKind::Block => SFlag::S_IFBLK,
        NodeKind::Char => SFlag::S_IFCHR,
    };
    mknodat(
        dir,
        name,
        kind,
        Mode::from_bits_truncate(node.mode),
        makedev(node.major, node.minor),
    )
}

/// An empty file at `name` (never through a symlink: `O_EXCL` refuses one), with the guest's
/// node bound onto it by the file's descriptor.
fn bind_node(dir: &OwnedFd, name: &OsStr, node: &DeviceNode) -> Result<(), Errno> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = openat(dir, name, flags, Mode::from_bits_truncate(0o600))?;
    let target = format!("/proc/self/fd/{}", file.as_raw_fd());
    mount(
        Some(&node.source),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests;
