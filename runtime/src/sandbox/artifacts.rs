//! Finding what a sandbox boots: the guest kernel and agent initramfs (`$RVM_GUEST_DIR`, then
//! `../share/rvm` beside the `rvm` binary, then `target/rvm-guest`) and the `rvm-vmm` binary
//! (beside `rvm`, then `PATH`).

use std::env;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The guest kernel's file name.
pub const KERNEL: &str = "vmlinux";
/// The agent initramfs's file name.
pub const INITRAMFS: &str = "initramfs.img";
/// The VMM binary's name.
pub const VMM: &str = "rvm-vmm";

#[derive(Debug, Error)]
pub enum ArtifactError {
    #[error("guest kernel and agent initramfs not found (looked for {KERNEL} and {INITRAMFS} in: {}); build them with guest-kernel/build and agent/build-initramfs, or set RVM_GUEST_DIR", list(searched))]
    GuestMissing { searched: Vec<PathBuf> },
    #[error("{VMM} not found beside {} nor in PATH; build it (cargo build -p rvm-vmm) or install it", exe.display())]
    VmmMissing { exe: PathBuf },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernel and initramfs a VM boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestArtifacts {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// The directories searched for guest artifacts, in order.
pub fn guest_dirs(guest_dir_env: Option<PathBuf>, exe: &Path, cwd: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = guest_dir_env.filter(|d| !d.as_os_str().is_empty()) {
        dirs.push(dir);
    }
    if let Some(bin) = exe.parent() {
        dirs.push(bin.join("../share/rvm"));
        // A development build: target/{debug,release}/rvm next to target/rvm-guest.
        dirs.push(bin.join("../rvm-guest"));
    }
    dirs.push(cwd.join("target/rvm-guest"));
    dirs
}

/// Finds the guest kernel and initramfs in the first directory holding both.
pub fn find_guest_in(dirs: &[PathBuf]) -> Result<GuestArtifacts, ArtifactError> {
    dirs.iter()
        .find(|dir| dir.join(KERNEL).is_file() && dir.join(INITRAMFS).is_file())
        .map(|dir| GuestArtifacts {
            kernel: dir.join(KERNEL),
            initramfs: dir.join(INITRAMFS),
        })
        .ok_or_else(|| ArtifactError::GuestMissing {
            searched: dirs.to_vec(),
        })
}

/// Finds the guest artifacts for this process.
pub fn find_guest() -> Result<GuestArtifacts, ArtifactError> {
    let exe = env::current_exe().unwrap_or_default();
    let cwd = env::current_dir().unwrap_or_default();
    find_guest_in(&guest_dirs(
        env::var_os("RVM_GUEST_DIR").map(PathBuf::from),
        &exe,
        &cwd,
    ))
}

/// Finds `rvm-vmm` beside `exe`, then in `path` (a `PATH` value).
pub fn find_vmm_in(exe: &Path, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, ArtifactError> {
    let beside = exe.parent().map(|bin| bin.join(VMM));
    let in_path = path
        .into_iter()
        .flat_map(env::split_paths)
        .map(|dir| dir.join(VMM));
    beside
        .into_iter()
        .chain(in_path)
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ArtifactError::VmmMissing {
            exe: exe.to_owned(),
        })
}

/// Finds `rvm-vmm` for this process.
pub fn find_vmm() -> Result<PathBuf, ArtifactError> {
    let exe = env::current_exe().unwrap_or_default();
    find_vmm_in(&exe, env::var_os("PATH").as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn env_dir_wins_then_share_then_target() {
        let dirs = guest_dirs(
            Some(PathBuf::from("/g")),
            Path::new("/usr/bin/rvm"),
            Path::new("/repo"),
        );
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/g"),
                PathBuf::from("/usr/bin/../share/rvm"),
                PathBuf::from("/usr/bin/../rvm-guest"),
                PathBuf::from("/repo/target/rvm-guest"),
            ]
        );
    }

    #[test]
    fn first_complete_directory_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let half = tmp.path().join("half");
        let full = tmp.path().join("full");
        fs::create_dir_all(&half).unwrap();
        fs::create_dir_all(&full).unwrap();
        fs::write(half.join(KERNEL), b"").unwrap();
        fs::write(full.join(KERNEL), b"").unwrap();
        fs::write(full.join(INITRAMFS), b"").unwrap();
        let found = find_guest_in(&[half.clone(), full.clone()]).unwrap();
        assert_eq!(found.kernel, full.join(KERNEL));
        let error = find_guest_in(std::slice::from_ref(&half))
            .unwrap_err()
            .to_string();
        assert!(error.contains(&half.display().to_string()), "{error}");
    }

    #[test]
    fn vmm_beside_rvm_then_path() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        let other = tmp.path().join("other");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join(VMM), b"").unwrap();
        let exe = bin.join("rvm");
        let path = std::ffi::OsString::from(other.display().to_string());
        assert_eq!(find_vmm_in(&exe, Some(&path)).unwrap(), other.join(VMM));
        fs::write(bin.join(VMM), b"").unwrap();
        assert_eq!(find_vmm_in(&exe, Some(&path)).unwrap(), bin.join(VMM));
        assert!(find_vmm_in(&tmp.path().join("x/rvm"), None).is_err());
    }
}
