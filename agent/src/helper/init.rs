//! The container's init helper: PID 1 of a new pid namespace or, for a pod's container that
//! shares its sandbox's (`shareProcessNamespace`), a process of that one (the engine created it
//! there), in a new mount namespace and new UTS and IPC namespaces or its sandbox's. It builds
//! the container's filesystem view, sets the process up, says Ready, and execs the command when
//! the start byte arrives.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, FromRawFd};
use std::path::Path;

use nix::sched::setns;
use nix::unistd::sethostname;

use super::{close_status_on_exec, fail, read_config};
use crate::engine::command::Command;
use crate::engine::handoff::{self, HelperMessage, InitConfig, START_FD};
use crate::engine::{device_nodes, process_setup, rootfs};

/// Joins the pod sandbox's namespaces the engine asked for (never the pid namespace, which a
/// setns here would give only to this helper's children).
fn join(config: &InitConfig) -> Result<(), String> {
    for (name, path) in &config.join {
        let flag = crate::engine::sandbox_namespace_flag(name)
            .ok_or_else(|| format!("cannot join a {name:?} namespace"))?;
        let file = File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        setns(file.as_fd(), flag).map_err(|e| format!("setns {}: {e}", path.display()))?;
    }
    Ok(())
}

fn build(config: &InitConfig) -> Result<Vec<String>, String> {
    let spec = &config.spec;
    join(config)?;
    // A joined UTS namespace is the sandbox's, with the pod's hostname already.
    let own_uts = !config.join.iter().any(|(name, _)| name == "uts");
    if let Some(hostname) = spec.hostname().as_ref().filter(|_| own_uts) {
        sethostname(hostname).map_err(|e| format!("set hostname {hostname:?}: {e}"))?;
    }
    rootfs::mount_all(&config.rootfs, spec).map_err(|e| e.to_string())?;
    // Before pivot_root: a node outside /dev binds the guest's own node.
    device_nodes::create_all(&config.rootfs, &config.devices).map_err(|e| e.to_string())?;
    rootfs::pivot_into(&config.rootfs).map_err(|e| e.to_string())?;
    if let Some(linux) = spec.linux() {
        rootfs::mask_paths(linux.masked_paths().as_deref().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        rootfs::readonly_paths(linux.readonly_paths().as_deref().unwrap_or_default())
            .map_err(|e| e.to_string())?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        rootfs::make_root_readonly().map_err(|e| e.to_string())?;
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| "the spec has no process".to_owned())?;
    process_setup::setup(process, config.terminal, &config.seccomp).map_err(|e| e.to_string())
}

pub(super) fn run(mut status: File, config_path: &Path) -> ! {
    let config: InitConfig = read_config(&mut status, config_path);
    let env = match build(&config) {
        Ok(env) => env,
        Err(message) => fail(&mut status, message),
    };
    if handoff::send(&mut status, &HelperMessage::Ready).is_err() {
        std::process::exit(1);
    }
    // SAFETY: the engine starts the init helper with its start pipe at START_FD, owned by no one
    // else in this process.
    let mut start = unsafe { File::from_raw_fd(START_FD) };
    let mut byte = [0u8; 1];
    // End of file: the container was removed before it was started.
    if !matches!(start.read(&mut byte), Ok(1)) {
        std::process::exit(1);
    }
    drop(start);
    let args = config
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    close_status_on_exec();
    let failure = match Command::prepare(&args, &env) {
        Ok(command) => command.exec(),
        Err(failure) => failure,
    };
    let _ = handoff::send(
        &mut status,
        &HelperMessage::ExecFailed {
            failure: failure.clone(),
        },
    );
    std::process::exit(failure.status)
}
