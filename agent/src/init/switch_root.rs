//! Leaving the initramfs: pivot_root(2) refuses to move away from the initial rootfs, which
//! every container's set-up needs. So PID 1 first copies itself onto a tmpfs, moves that tmpfs
//! over /, chroots into it and re-executes itself from there (what `switch_root` does).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot, execve};
use thiserror::Error;

/// Set in the environment of the re-executed agent so that it does not switch again.
const SWITCHED_ENV: &str = "RVM_AGENT_SWITCHED";
const NEW_ROOT: &str = "/newroot";
const INIT: &str = "/init";

#[derive(Debug, Error)]
#[error("leave the initramfs ({step}): {source}")]
pub struct SwitchRootError {
    step: &'static str,
    source: io::Error,
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> SwitchRootError {
    move |source| SwitchRootError { step, source }
}

fn nix_step(name: &'static str) -> impl FnOnce(nix::Error) -> SwitchRootError {
    move |e| SwitchRootError {
        step: name,
        source: io::Error::from(e),
    }
}

/// Whether this PID 1 still runs from the initramfs.
pub fn needed() -> bool {
    std::process::id() == 1 && std::env::var_os(SWITCHED_ENV).is_none()
}

/// Copies /init to a new tmpfs root, makes it / and re-executes it. Returns only on failure.
pub fn switch_root() -> SwitchRootError {
    match try_switch_root() {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

fn try_switch_root() -> Result<std::convert::Infallible, SwitchRootError> {
    let new_root = Path::new(NEW_ROOT);
    fs::create_dir_all(new_root).map_err(step("create /newroot"))?;
    mount(
        Some("tmpfs"),
        new_root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(nix_step("mount tmpfs on /newroot"))?;
    for dir in ["dev", "proc", "sys", "run", "tmp"] {
        fs::create_dir_all(new_root.join(dir)).map_err(step("create mount points"))?;
    }
    let target = new_root.join("init");
    fs::copy(INIT, &target).map_err(step("copy /init"))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).map_err(step("chmod /init"))?;
    // The initramfs copy only costs memory from here on.
    let _ = fs::remove_file(INIT);
    chdir(new_root).map_err(nix_step("chdir /newroot"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(nix_step("move /newroot to /"))?;
    chroot(".").map_err(nix_step("chroot"))?;
    chdir("/").map_err(nix_step("chdir /"))?;
    let invalid = |_| SwitchRootError {
        step: "prepare exec",
        source: io::Error::from(io::ErrorKind::InvalidInput),
    };
    let path = CString::new(INIT).map_err(invalid)?;
    let args: Vec<CString> = std::env::args()
        .map(CString::new)
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    let mut env: Vec<CString> = std::env::vars()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    env.push(CString::new(format!("{SWITCHED_ENV}=1")).map_err(invalid)?);
    execve(&path, &args, &env).map_err(nix_step("re-execute /init"))
}
