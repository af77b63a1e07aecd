//! The container's filesystem view, built inside its new mount namespace: the spec's mounts
//! below the rootfs, the standard /dev nodes, pivot_root, masked and read-only paths, and the
//! read-only root.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, pivot_root};
use oci_spec::runtime::{Mount, Spec};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RootfsError {
    #[error("mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: PathBuf,
        source: nix::Error,
    },
    #[error("mount destination {0:?} is not an absolute path without '..'")]
    BadDestination(PathBuf),
    #[error("create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("pivot_root into {rootfs}: {source}")]
    PivotRoot { rootfs: PathBuf, source: nix::Error },
}

fn mount_error(
    what: impl Into<String>,
    target: &Path,
) -> impl FnOnce(nix::Error) -> RootfsError + '_ {
    let what = what.into();
    move |source| RootfsError::Mount {
        what,
        target: target.to_owned(),
        source,
    }
}

/// Mount flags and the remaining filesystem data of a spec mount's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Option<MsFlags>,
    pub data: String,
}

/// Splits OCI mount options into flags, propagation and filesystem data.
pub fn parse_options(options: &[String]) -> MountOptions {
    let mut flags = MsFlags::empty();
    let mut propagation = None;
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "private" => propagation = Some(MsFlags::MS_PRIVATE),
            "rprivate" => propagation = Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "slave" => propagation = Some(MsFlags::MS_SLAVE),
            "rslave" => propagation = Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "shared" => propagation = Some(MsFlags::MS_SHARED),
            "rshared" => propagation = Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "defaults" => {}
            other => data.push(other.to_owned()),
        }
    }
    MountOptions {
        flags,
        propagation,
        data: data.join(","),
    }
}

/// `destination` below `rootfs`, refusing relative paths and '..'.
pub fn target_in(rootfs: &Path, destination: &Path) -> Result<PathBuf, RootfsError> {
    if !destination.is_absolute()
        || destination
            .components()
            .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(RootfsError::BadDestination(destination.to_owned()));
    }
    Ok(rootfs.join(destination.strip_prefix("/").unwrap_or(destination)))
}

fn create_dir(path: &Path) -> Result<(), RootfsError> {
    fs::create_dir_all(path).map_err(|source| RootfsError::Create {
        path: path.to_owned(),
        source,
    })
}

/// Creates the mount point of `source` at `target`: a file for a file bind, else a directory.
fn create_mount_point(target: &Path, source_is_file: bool) -> Result<(), RootfsError> {
    if source_is_file {
        if let Some(parent) = target.parent() {
            create_dir(parent)?;
        }
        if !target.exists() {
            fs::File::create(target).map_err(|source| RootfsError::Create {
                path: target.to_owned(),
                source,
            })?;
        }
        Ok(())
    } else {
        create_dir(target)
    }
}

/// Mounts one spec mount below `rootfs`.
pub fn mount_one(rootfs: &Path, spec_mount: &Mount) -> Result<(), RootfsError> {
    let target = target_in(rootfs, spec_mount.destination())?;
    let options = parse_options(spec_mount.options().as_deref().unwrap_or_default());
    let fstype = spec_mount.typ().clone().unwrap_or_default();
    let is_bind = options.flags.contains(MsFlags::MS_BIND) || fstype == "bind";
    let source = spec_mount
        .source()
        .clone()
        .unwrap_or_else(|| PathBuf::from(&fstype));
    let what = format!("{fstype} {}", source.display());
    if fstype == "cgroup" || fstype == "cgroup2" {
        return mount_cgroup(&target, options.flags);
    }
    if is_bind {
        create_mount_point(&target, source.is_file())?;
        let bind_flags = MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC);
        mount(
            Some(&source),
            &target,
            None::<&str>,
            bind_flags,
            None::<&str>,
        )
        .map_err(mount_error(what.clone(), &target))?;
        // A bind mount takes its other flags only on a remount.
        let remount = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !remount.is_empty() {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | remount,
                None::<&str>,
            )
            .map_err(mount_error(format!("{what} (remount)"), &target))?;
        }
    } else {
        create_dir(&target)?;
        let data = (!options.data.is_empty()).then_some(options.data.as_str());
        let result = mount(
            Some(&source),
            &target,
            Some(fstype.as_str()),
            options.flags,
            data,
        );
        match result {
            Ok(()) => {}
            // sysfs cannot be mounted in a pid namespace that is not the owner's in some
            // setups; Docker then binds the guest's /sys instead, read-only unless the spec
            // asks for it read-write (--privileged).
            Err(nix::Error::EPERM) if fstype == "sysfs" => {
                mount(
                    Some("/sys"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(mount_error("bind /sys", &target))?;
                if options.flags.contains(MsFlags::MS_RDONLY) {
                    mount(
                        None::<&str>,
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .map_err(mount_error("bind /sys (remount ro)", &target))?;
                }
            }
            Err(source) => return Err(mount_error(what.clone(), &target)(source)),
        }
    }
    if let Some(propagation) = options.propagation {
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            propagation,
            None::<&str>,
        )
        .map_err(mount_error(format!("{what} (propagation)"), &target))?;
    }
    Ok(())
}

/// Mounts the (v2) cgroup hierarchy for a spec's cgroup mount. Without a cgroup namespace this
/// shows the whole hierarchy, so it is read-only whatever the spec says; where the kernel
/// refuses it (a cgroup v1 host in native tests) it is left out, as it is optional.
fn mount_cgroup(target: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    create_dir(target)?;
    let flags =
        flags | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(error) = mount(
        Some("cgroup2"),
        target,
        Some("cgroup2"),
        flags,
        None::<&str>,
    ) {
        tracing::warn!(target = %target.display(), %error, "cgroup2 not mounted in the container");
    }
    Ok(())
}

/// The character devices a container's /dev holds (as Docker's default).
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Creates the standard nodes and links in the container's /dev (a fresh tmpfs).
pub fn populate_dev(dev: &Path) -> Result<(), RootfsError> {
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        if path.exists() {
            continue;
        }
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|source| RootfsError::Create {
            path: path.clone(),
            source: io::Error::from(source),
        })?;
        // mknod applies the umask; the nodes must be world-usable.
        let _ = nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &path,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ];
    for (name, target) in links {
        let path = dev.join(name);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        symlink(target, &path).map_err(|source| RootfsError::Create { path, source })?;
    }
    Ok(())
}

/// Mounts every spec mount and populates /dev when it is a tmpfs.
pub fn mount_all(rootfs: &Path, spec: &Spec) -> Result<(), RootfsError> {
    // Nothing we mount may propagate back to the guest's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(mount_error("make / rprivate", Path::new("/")))?;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_error("bind rootfs", rootfs))?;
    let mut dev_is_tmpfs = false;
    for spec_mount in spec.mounts().iter().flatten() {
        mount_one(rootfs, spec_mount)?;
        if spec_mount.destination() == Path::new("/dev")
            && spec_mount.typ().as_deref() == Some("tmpfs")
        {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        populate_dev(&rootfs.join("dev"))?;
    }
    Ok(())
}

/// Makes `rootfs` the root and detaches the old one.
pub fn pivot_into(rootfs: &Path) -> Result<(), RootfsError> {
    let error = |source| RootfsError::PivotRoot {
        rootfs: rootfs.to_owned(),
        source,
    };
    chdir(rootfs).map_err(error)?;
    // pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
    // removes it without needing a directory for it in the image.
    pivot_root(".", ".").map_err(error)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(error)?;
    chdir("/").map_err(error)
}

/// Hides `paths` (inside the new root): /dev/null over files, an empty read-only tmpfs over
/// directories. Missing paths are skipped.
pub fn mask_paths(paths: &[String]) -> Result<(), RootfsError> {
    for path in paths {
        let path = Path::new(path);
        let Ok(metadata) = fs::metadata(path) else {
            continue;
        };
        if metadata.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )
            .map_err(mount_error("mask tmpfs", path))?;
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(mount_error("mask /dev/null", path))?;
        }
    }
    Ok(())
}

/// Makes `paths` read-only bind mounts of themselves. Missing paths are skipped.
pub fn readonly_paths(paths: &[String]) -> Result<(), RootfsError> {
    for path in paths {
        let path = Path::new(path);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_error("bind read-only path", path))?;
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_error("remount read-only", path))?;
    }
    Ok(())
}

/// Remounts the new root read-only, keeping its nodev, nosuid and noexec: a bind remount sets
/// exactly the flags it is given, so leaving one out would clear it.
pub fn make_root_readonly() -> Result<(), RootfsError> {
    let kept = kept_flags(Path::new("/"));
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | kept,
        None::<&str>,
    )
    .map_err(mount_error("remount / read-only", Path::new("/")))
}

/// The restricting flags `path`'s mount has now (none when they cannot be read).
fn kept_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(stat) = statvfs(path) else {
        return MsFlags::empty();
    };
    let flags = stat.flags();
    let mut kept = MsFlags::empty();
    for (has, flag) in [
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if flags.contains(has) {
            kept |= flag;
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let options: Vec<String> = [
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "ro",
            "rbind",
            "rprivate",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = parse_options(&options);
        assert!(parsed.flags.contains(
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        ));
        assert_eq!(parsed.data, "mode=755,size=65536k");
        assert_eq!(
            parsed.propagation,
            Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC)
        );
    }

    #[test]
    fn destinations_stay_below_rootfs() {
        let root = Path::new("/r");
        assert_eq!(
            target_in(root, Path::new("/dev/pts")).unwrap(),
            PathBuf::from("/r/dev/pts")
        );
        assert!(target_in(root, Path::new("/../etc")).is_err());
        assert!(target_in(root, Path::new("proc")).is_err());
    }
}
