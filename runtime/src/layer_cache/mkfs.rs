//! The one `mkfs.erofs` invocation (Debian's erofs-utils) every layer disk is built with.
//!
//! Options: `--quiet` only (mkfs.erofs 1.5 has no `-q`). Both callers (image layers and
//! containerd snapshots) used just that; the image keeps the directory's own timestamps, and a
//! fresh UUID per build does no harm because a disk is keyed by its source, not its bytes.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tool that builds the disks.
pub const MKFS_EROFS: &str = "mkfs.erofs";

/// A failure to build an erofs image, naming the directory it was built from.
#[derive(Debug, thiserror::Error)]
pub enum MkfsError {
    #[error("cannot run {MKFS_EROFS} for {} (install erofs-utils): {source}", dir.display())]
    Missing { dir: PathBuf, source: io::Error },
    #[error("{MKFS_EROFS} failed on {} ({status}): {stderr}", dir.display())]
    Failed {
        dir: PathBuf,
        status: String,
        stderr: String,
    },
}

/// Builds the erofs image `image` of directory `dir`; a failed build leaves no `image`.
pub fn mkfs_erofs(dir: &Path, image: &Path) -> Result<(), MkfsError> {
    let output = Command::new(MKFS_EROFS)
        .arg("--quiet")
        .arg(image)
        .arg(dir)
        .output()
        .map_err(|source| MkfsError::Missing {
            dir: dir.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let _ = fs::remove_file(image);
    Err(MkfsError::Failed {
        dir: dir.to_owned(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
