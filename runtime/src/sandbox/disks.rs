//! Writable disks of a sandbox: the sparse ext4 scratch disk (overlay upper and work) and named
//! volumes (`<root>/volumes/<name>.ext4`, kept across runs), made with Debian's `mkfs.ext4`.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use super::id;
use crate::host::private;

/// The tool that formats the disks (e2fsprogs).
const MKFS_EXT4: &str = "mkfs.ext4";
/// Apparent size of a scratch disk; sparse, so only written blocks use space.
pub const SCRATCH_SIZE: u64 = 16 << 30;
/// Apparent size of a new named volume.
pub const VOLUME_SIZE: u64 = 16 << 30;

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("cannot {action} disk {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot run {MKFS_EXT4} for {} (install e2fsprogs): {source}", path.display())]
    MkfsMissing { path: PathBuf, source: io::Error },
    #[error("{MKFS_EXT4} failed on {} ({status}): {stderr}", path.display())]
    Mkfs {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadVolumeName(String),
}

/// The directory of a volume's file system that the container sees (Docker's `_data`); the
/// agent binds it, keeping `lost+found` out of the container.
pub const VOLUME_DATA_DIR: &str = "_data";

/// Creates a sparse file of `size` bytes at `path` (which must not exist) holding an empty ext4
/// file system.
pub fn create_ext4(path: &Path, size: u64) -> Result<(), DiskError> {
    create_ext4_from(path, size, None)
}

/// As [`create_ext4`], with the file system's root filled from directory `content`.
pub(crate) fn create_ext4_from(
    path: &Path,
    size: u64,
    content: Option<&Path>,
) -> Result<(), DiskError> {
    let io_err = |action| {
        move |source| DiskError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create"))?;
    file.set_len(size).map_err(io_err("size"))?;
    drop(file);
    let output = Command::new(MKFS_EXT4)
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1",
        ])
        .args(
            content
                .map(|dir| [Path::new("-d"), dir])
                .into_iter()
                .flatten(),
        )
        .arg(path)
        .output();
    let result = match output {
        Err(source) => Err(DiskError::MkfsMissing {
            path: path.to_owned(),
            source,
        }),
        Ok(output) if !output.status.success() => Err(DiskError::Mkfs {
            path: path.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        }),
        Ok(_) => Ok(()),
    };
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Creates `content/_data`, both 0755 whatever the umask (rvm's is 077): the file system made
/// from them gives the container these modes, Docker's for a new volume.
fn volume_content_dirs(content: &Path) -> io::Result<()> {
    let data = content.join(VOLUME_DATA_DIR);
    fs::create_dir_all(&data)?;
    for dir in [content, data.as_path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The image of named volume `name`, created on first use with an empty `_data` directory.
pub fn ensure_volume(volumes_dir: &Path, name: &str) -> Result<PathBuf, DiskError> {
    Ok(ensure_volume_new(volumes_dir, name)?.0)
}

/// As [`ensure_volume`], also telling whether the volume was created by this call.
pub fn ensure_volume_new(volumes_dir: &Path, name: &str) -> Result<(PathBuf, bool), DiskError> {
    if id::check_name(name).is_err() {
        return Err(DiskError::BadVolumeName(name.to_owned()));
    }
    private::create_dir_all(volumes_dir).map_err(|source| DiskError::Io {
        action: "create directory for",
        path: volumes_dir.to_owned(),
        source,
    })?;
    let path = volumes_dir.join(format!("{name}.ext4"));
    if path.is_file() {
        return Ok((path, false));
    }
    // Formatted under a temporary name and renamed: a volume is either complete or absent.
    let temp = volumes_dir.join(format!(".{name}.ext4.tmp-{}", std::process::id()));
    let content = volumes_dir.join(format!(".{name}.content.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&temp);
    let _ = fs::remove_dir_all(&content);
    let made = volume_content_dirs(&content)
        .map_err(|source| DiskError::Io {
            action: "prepare the content of",
            path: path.clone(),
            source,
        })
        .and_then(|()| create_ext4_from(&temp, VOLUME_SIZE, Some(&content)));
    let _ = fs::remove_dir_all(&content);
    made?;
    // A hard link never replaces a volume another rvm created meanwhile.
    let linked = fs::hard_link(&temp, &path);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok((path, true)),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok((path, false)),
        Err(source) => Err(DiskError::Io {
            action: "put into place",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Whether the test may run: mkfs.ext4 is there, or the test fails under CI and is skipped
    /// elsewhere (see `prerequisite`).
    fn have_mkfs() -> bool {
        use crate::sandbox::prerequisite;
        prerequisite::prerequisite(prerequisite::missing_tool(MKFS_EXT4, "e2fsprogs"))
    }

    #[test]
    fn scratch_disk_is_sparse_ext4() {
        if !have_mkfs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scratch.ext4");
        create_ext4(&path, SCRATCH_SIZE).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), SCRATCH_SIZE);
        // Far fewer blocks than the apparent size: sparse.
        assert!(
            meta.blocks() * 512 < SCRATCH_SIZE / 16,
            "{} blocks",
            meta.blocks()
        );
        // The ext4 superblock magic 0xEF53 at offset 1024 + 56.
        let mut magic = [0u8; 2];
        let file = fs::File::open(&path).unwrap();
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 1080).unwrap();
        assert_eq!(magic, [0x53, 0xef]);
        assert!(
            create_ext4(&path, SCRATCH_SIZE).is_err(),
            "must not overwrite"
        );
    }

    #[test]
    fn volume_is_created_once_and_kept() {
        if !have_mkfs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_volume(dir.path(), "data").unwrap();
        fs::write(dir.path().join("marker"), b"").unwrap();
        let mtime = fs::metadata(&first).unwrap().mtime();
        let again = ensure_volume(dir.path(), "data").unwrap();
        assert_eq!(first, again);
        assert_eq!(fs::metadata(&again).unwrap().mtime(), mtime);
        assert!(matches!(
            ensure_volume(dir.path(), "../x"),
            Err(DiskError::BadVolumeName(_))
        ));
    }
}
