//! Private host files: the modes rvm gives what it keeps on the host (the state root, container
//! and run directories, configurations holding `-e` values, logs, disks, image blobs), so that only
//! their owner, root, can read them. Directories are 0700, files 0600.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every directory rvm creates on the host.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file rvm creates on the host.
pub const FILE_MODE: u32 = 0o600;

/// Creates directory `path` and its missing parents as 0700; an existing `path` with a looser
/// mode (created by an earlier version, or under another umask) is narrowed to 0700.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    restrict(path, DIR_MODE)
}

/// Creates directory `path` as 0700; fails if it exists.
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(path)?;
    // The umask may have taken bits away, never added any: still, say the mode outright.
    restrict(path, DIR_MODE)
}

/// Options that create a file as 0600 (an existing file keeps its mode: see [`restrict`]).
pub fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Sets the mode of `path` to `mode` unless it already is.
pub fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let current = fs::metadata(path)?.permissions().mode() & 0o7777;
    if current != mode {
        fs::set_permissions(path, Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The permission bits of `path`.
    pub(crate) fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_are_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b");
        create_dir_all(&deep).unwrap();
        assert_eq!(mode_of(&tmp.path().join("a")), 0o700);
        assert_eq!(mode_of(&deep), 0o700);
        let single = tmp.path().join("c");
        create_dir(&single).unwrap();
        assert_eq!(mode_of(&single), 0o700);
        assert!(create_dir(&single).is_err());
    }

    #[test]
    fn an_existing_open_directory_is_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("old");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
    }

    #[test]
    fn files_are_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        file_options().write(true).create(true).open(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }
}
