//! The one `mkfs.erofs` invocation (Debian's erofs-utils) every layer disk is built with.
//!
//! Options: `--quiet` only (mkfs.erofs 1.5 has no `-q`). Both callers (image layers and
//! containerd snapshots) used just that; the image keeps the directory's own timestamps, and a
//! fresh UUID per build does no harm because a disk is keyed by its source, not its bytes.
//! The image is created 0600 before the tool writes it, so it is never readable by others.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host::private;

/// The tool that builds the disks.
pub const MKFS_EROFS: &str = "mkfs.erofs";

/// A failure to build an erofs image, naming the directory it was built from.
#[derive(Debug, thiserror::Error)]
pub enum MkfsError {
    #[error("cannot create the erofs image {}: {source}", image.display())]
    Create { image: PathBuf, source: io::Error },
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
    private::file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .and_then(|_| private::restrict(image, private::FILE_MODE))
        .map_err(|source| MkfsError::Create {
            image: image.to_owned(),
            source,
        })?;
    let output = Command::new(MKFS_EROFS)
        .arg("--quiet")
        .arg(image)
        .arg(dir)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(source) => {
            let _ = fs::remove_file(image);
            return Err(MkfsError::Missing {
                dir: dir.to_owned(),
                source,
            });
        }
    };
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
