//! A named volume's ext4 image is written by a guest kernel, which is its tenant's: whoever has
//! root in that VM can put any bytes on the disk. Another VM's kernel parses those bytes when it
//! mounts the volume later. So each volume remembers the container whose VM last had it
//! writable (`<name>.writer` beside `<name>.ext4`), and before a VM of any *other* container
//! mounts it, read-only or not, `e2fsck -f -p` checks it (replaying a journal a killed VM left,
//! fixing what preen mode may fix; `-n`, changing nothing, while other VMs have it mounted
//! read-only): an image with errors it cannot fix is refused, naming the volume and its last
//! writer. A volume no VM has written yet (just made by mkfs on the host)
//! has no record and needs no check.
//!
//! e2fsck parses hostile input too, so it runs as an unprivileged user ID leased from the VMMs'
//! range (see [`crate::jail::ids`]), with no groups, `no_new_privs`, a CPU-time and an
//! address-space limit; it reaches the image only through a descriptor passed in as fd 3
//! (`/proc/self/fd/3`; the image is handed to that ID for the check and given back after), since
//! the volumes directory is root's alone.
//!
//! What this is not: e2fsck finds inconsistencies, not every layout that may trip a kernel's
//! ext4 code. A volume shared between tenants who do not trust each other is a disk they share;
//! README's Volumes section says so.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{fchown, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{flock, FlockOperation};
use thiserror::Error;

use super::config::VolumeRef;
use crate::host::private;
use crate::jail::ids::{self, IdError, IdRange};

/// Where e2fsck is looked for (Debian's e2fsprogs puts it in /usr/sbin, older ones in /sbin).
const E2FSCK: [&str; 2] = ["/usr/sbin/e2fsck", "/sbin/e2fsck"];
/// e2fsck's CPU time, in seconds: a 16 GiB volume is checked in well under one.
const CPU_SECONDS: u64 = 60;
/// e2fsck's address space.
const ADDRESS_SPACE: u64 = 1 << 30;
/// The longest writer record read (a container ID is 64 characters).
const RECORD_MAX: u64 = 256;

#[derive(Debug, Error)]
pub enum VolumeCheckError {
    #[error("volume {name:?}: cannot {action} {}: {source}", path.display())]
    Io {
        name: String,
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("volume {name:?} was last written by another container ({writer}) and must be checked before this one mounts it, but e2fsck is not installed (install e2fsprogs)")]
    NoFsck { name: String, writer: String },
    #[error("volume {name:?}: no unprivileged ID to run e2fsck as: {source}")]
    Id { name: String, source: IdError },
    #[error("volume {name:?} was last written by container {writer} and its ext4 image has errors e2fsck cannot fix (exit {code}): {output}; nothing mounts it until it is repaired (`e2fsck -f {}`) or removed", path.display())]
    Damaged {
        name: String,
        writer: String,
        path: PathBuf,
        code: i32,
        output: String,
    },
    #[error("volume {name:?}: the check of its ext4 image (last written by container {writer}) was stopped by signal {signal} (limits: {CPU_SECONDS} s of CPU, 1 GiB of memory)")]
    Stopped {
        name: String,
        writer: String,
        signal: i32,
    },
}

/// The record of volume image `image`'s last writer.
pub fn record_path(image: &Path) -> PathBuf {
    image.with_extension("writer")
}

/// Checks, before container `user`'s VM mounts them, the volumes another container's VM wrote
/// last; then records `user` as the writer of the ones it mounts writable.
pub fn prepare(volumes: &[VolumeRef], user: &str) -> Result<(), VolumeCheckError> {
    for volume in volumes {
        vet(&volume.name, &volume.path, user)?;
        if !volume.read_only {
            record_writer(&volume.name, &volume.path, user)?;
        }
    }
    Ok(())
}

/// Checks volume `name` (image `image`) unless no VM wrote it yet or `user`'s did last.
pub fn vet(name: &str, image: &Path, user: &str) -> Result<(), VolumeCheckError> {
    let Some(writer) = last_writer(name, image)? else {
        return Ok(());
    };
    if writer == user {
        return Ok(());
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(image)
        .map_err(io_error(name, "open", image))?;
    // Held by no VM: checked and repaired (-p). Held read-only by running VMs (a shared lock
    // is still possible): checked without a change (-n), since their kernels have it mounted.
    // Held writable: that VMM's lock makes this one's refuse it, with the reason.
    let mode = if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
        "-p"
    } else if flock(&file, FlockOperation::NonBlockingLockShared).is_ok() {
        "-n"
    } else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let result = fsck(name, image, &writer, &file, mode);
    tracing::info!(volume = name, %writer, elapsed_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "checked a volume another VM wrote");
    result
}

/// The container that last had the volume writable, if any VM did.
fn last_writer(name: &str, image: &Path) -> Result<Option<String>, VolumeCheckError> {
    let path = record_path(image);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(name, "open", &path)(source)),
    };
    let mut text = String::new();
    file.take(RECORD_MAX)
        .read_to_string(&mut text)
        .map_err(io_error(name, "read", &path))?;
    let writer = text.trim();
    // An empty or unreadable record is treated as a stranger's: the volume gets checked.
    Ok(Some(
        if writer.is_empty() {
            "(unknown)"
        } else {
            writer
        }
        .to_owned(),
    ))
}

/// Records `user` as the volume's writer (written aside and renamed: never half a record).
fn record_writer(name: &str, image: &Path, user: &str) -> Result<(), VolumeCheckError> {
    let path = record_path(image);
    let temp = path.with_extension(format!("writer.tmp-{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = private::file_options()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)?;
        file.write_all(user.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &path)
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&temp);
        io_error(name, "record the writer of", &path)(source)
    })
}

/// Runs e2fsck on the image open as `file`, as a leased unprivileged ID; `mode` is `-p`
/// (repair what is safe) or `-n` (change nothing).
fn fsck(
    name: &str,
    image: &Path,
    writer: &str,
    file: &File,
    mode: &str,
) -> Result<(), VolumeCheckError> {
    let Some(program) = E2FSCK.iter().map(Path::new).find(|path| path.exists()) else {
        return Err(VolumeCheckError::NoFsck {
            name: name.to_owned(),
            writer: writer.to_owned(),
        });
    };
    let id_error = |source| VolumeCheckError::Id {
        name: name.to_owned(),
        source,
    };
    let range = IdRange::from_env().map_err(id_error)?;
    let lease = ids::lease(Path::new(ids::LEASE_DIR), range).map_err(id_error)?;
    let owner =
        |id: u32| fchown(file, Some(id), Some(id)).map_err(io_error(name, "hand over", image));
    owner(lease.id)?;
    let output = run_e2fsck(program, file, lease.id, mode);
    owner(0)?;
    let output = output.map_err(io_error(name, "run e2fsck on", image))?;
    let text = String::from_utf8_lossy(&output.stdout)
        .trim()
        .replace('\n', "; ");
    match (output.status.code(), output.status.signal()) {
        (Some(0..=2), _) => Ok(()),
        (Some(code), _) => Err(VolumeCheckError::Damaged {
            name: name.to_owned(),
            writer: writer.to_owned(),
            path: image.to_owned(),
            code,
            output: text.chars().take(400).collect(),
        }),
        (None, signal) => Err(VolumeCheckError::Stopped {
            name: name.to_owned(),
            writer: writer.to_owned(),
            signal: signal.unwrap_or_default(),
        }),
    }
}

/// `e2fsck -f MODE /proc/self/fd/3` as `id`, with `file` as fd 3, its output collected.
fn run_e2fsck(
    program: &Path,
    file: &File,
    id: u32,
    mode: &str,
) -> io::Result<std::process::Output> {
    let image = file.try_clone()?;
    let mut command = Command::new(program);
    command
        .args(["-f", mode, "/proc/self/fd/3"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .uid(id)
        .gid(id);
    let fd = image.as_raw_fd();
    // SAFETY: between fork and exec the closure calls only async-signal-safe system calls
    // (dup2, fcntl, prctl, setrlimit) on values it owns; `image` stays open in the parent until
    // the child has been spawned, so its descriptor number is valid in the child.
    unsafe {
        command.pre_exec(move || confine(fd));
    }
    let output = command.output();
    drop(image);
    output
}

/// In the child: the image on fd 3, no new privileges, death with the parent, CPU and memory
/// limits.
fn confine(image: i32) -> io::Result<()> {
    let check = |result: libc::c_int| {
        if result < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if image == 3 {
        // dup2 onto itself would keep CLOEXEC: clear it instead.
        // SAFETY: fcntl on a descriptor this process holds open, integer arguments only.
        check(unsafe { libc::fcntl(3, libc::F_SETFD, 0) })?;
    } else {
        // SAFETY: dup2 of an open descriptor onto 3; the copy has no CLOEXEC, so e2fsck gets it.
        check(unsafe { libc::dup2(image, 3) })?;
    }
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
    for (resource, limit) in [
        (libc::RLIMIT_CPU, CPU_SECONDS),
        (libc::RLIMIT_AS, ADDRESS_SPACE),
        (libc::RLIMIT_CORE, 0),
    ] {
        let value = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives for the call.
        check(unsafe { libc::setrlimit(resource, &value) })?;
    }
    Ok(())
}

fn io_error<'a>(
    name: &'a str,
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> VolumeCheckError + 'a {
    move |source| VolumeCheckError::Io {
        name: name.to_owned(),
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::sandbox::disks;
    use crate::sandbox::prerequisite::{missing_root, missing_tool, prerequisite};

    /// A fresh 64 MiB ext4 image in `dir`.
    fn image(dir: &Path) -> PathBuf {
        let path = dir.join("data.ext4");
        let _ = fs::remove_file(&path);
        disks::create_ext4_from(&path, 64 << 20, None).unwrap();
        path
    }

    fn may_run() -> bool {
        prerequisite(
            missing_tool("mkfs.ext4", "e2fsprogs")
                .or_else(|| missing_tool("e2fsck", "e2fsprogs"))
                .or_else(|| missing_root("handing a volume image to another user")),
        )
    }

    fn volume(path: &Path, writable: bool) -> VolumeRef {
        VolumeRef {
            name: "data".to_owned(),
            path: path.to_owned(),
            serial: "rvm-vol-0".to_owned(),
            destination: "/data".to_owned(),
            read_only: !writable,
        }
    }

    #[test]
    fn no_check_unless_another_container_wrote_it_last() {
        let dir = tempfile::tempdir().unwrap();
        // Not ext4 at all: a check would fail, so passing shows that no check ran.
        let path = dir.path().join("data.ext4");
        fs::write(&path, b"not ext4").unwrap();
        vet("data", &path, "a").unwrap();
        fs::write(record_path(&path), "a").unwrap();
        vet("data", &path, "a").unwrap();
        if !may_run() {
            return;
        }
        assert!(matches!(
            vet("data", &path, "b"),
            Err(VolumeCheckError::Damaged { .. })
        ));
    }

    #[test]
    fn writable_users_are_recorded_readers_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.ext4");
        fs::write(&path, b"not ext4").unwrap();
        prepare(&[volume(&path, true)], "first").unwrap();
        assert_eq!(fs::read_to_string(record_path(&path)).unwrap(), "first");
        assert_eq!(
            fs::metadata(record_path(&path)).unwrap().mode() & 0o777,
            0o600
        );
        prepare(&[volume(&path, true)], "first").unwrap();
        if !may_run() {
            return;
        }
        // A reader that is not the writer gets a check, which a clean image passes.
        let path = image(dir.path());
        prepare(&[volume(&path, false)], "reader").unwrap();
        assert_eq!(fs::read_to_string(record_path(&path)).unwrap(), "first");
    }

    #[test]
    fn a_clean_image_passes_and_goes_back_to_root() {
        if !may_run() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path());
        fs::write(record_path(&path), "tenant-a").unwrap();
        vet("data", &path, "tenant-b").unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), (0, 0));
    }

    /// A tenant's guest wrote garbage over the inode table's first block group: the next VM's
    /// check refuses it, naming the volume and its writer.
    #[test]
    fn a_damaged_image_is_refused_by_name() {
        if !may_run() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = image(dir.path());
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        // The group descriptors follow the superblock in block 1 (4 KiB blocks): garbage there
        // is what e2fsck -p refuses to guess about.
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(4096)).unwrap();
        file.write_all(&[0xa5; 4096]).unwrap();
        drop(file);
        fs::write(record_path(&path), "tenant-a").unwrap();
        // While another VM has it mounted read-only (a shared lock), the check changes nothing
        // and still refuses it.
        let reader = File::open(&path).unwrap();
        flock(&reader, FlockOperation::NonBlockingLockShared).unwrap();
        assert!(matches!(
            vet("data", &path, "tenant-b"),
            Err(VolumeCheckError::Damaged { .. })
        ));
        drop(reader);
        let err = vet("data", &path, "tenant-b").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, VolumeCheckError::Damaged { .. }), "{text}");
        assert!(
            text.contains("\"data\"") && text.contains("tenant-a"),
            "{text}"
        );
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), (0, 0));
    }
}
