//! Host paths in a task's OCI spec, made to mean something inside the VM. containerd's CRI
//! bind-mounts small host files into a pod's containers (`/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`, kubelet's `/dev/termination-log`) and the sandbox's shm directory onto
//! `/dev/shm`; none of those paths exist in the guest. So:
//! - a bind mount of a regular host file travels by content (the agent writes it into the
//!   container's directory and binds it there; writes in the guest stay in the guest);
//! - a bind mount onto `/dev/shm` becomes a private tmpfs of the VM's containers;
//! - any other bind mount of a host path (a directory, a device) is refused with the mount
//!   named: host directories are not shared into rvm VMs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use oci_spec::runtime::{Mount, MountBuilder, Spec};
use rvm_protocol::agent::HostFile;

/// Most bytes of one host file sent by content.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The shm mount given instead of a host directory (Docker's default size, 64 MiB).
const SHM_OPTIONS: [&str; 5] = ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"];

/// Rewrites the spec's host bind mounts as described above; returns the files to send.
pub fn translate(spec: &mut Spec) -> Result<Vec<HostFile>, String> {
    let Some(mounts) = spec.mounts().clone() else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    let mut translated = Vec::with_capacity(mounts.len());
    for mount in mounts {
        if !is_bind(&mount) {
            translated.push(mount);
            continue;
        }
        let source = mount.source().clone().unwrap_or_default();
        let destination = mount.destination().clone();
        let meta = fs::metadata(&source).map_err(|e| {
            format!(
                "bind mount {} -> {}: cannot read the host path: {e}",
                source.display(),
                destination.display()
            )
        })?;
        if meta.is_file() {
            files.push(file_of(&source, &destination, &meta)?);
            translated.push(mount);
        } else if destination == Path::new("/dev/shm") {
            translated.push(shm_mount()?);
        } else {
            return Err(format!(
                "bind mount {} -> {}: host directories and devices are not shared into rvm VMs \
                 (only files of up to {MAX_FILE_BYTES} bytes travel, by content)",
                source.display(),
                destination.display()
            ));
        }
    }
    spec.set_mounts(Some(translated));
    Ok(files)
}

fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .as_ref()
            .is_some_and(|options| options.iter().any(|o| o == "bind" || o == "rbind"))
}

fn file_of(source: &Path, destination: &Path, meta: &fs::Metadata) -> Result<HostFile, String> {
    let name = || format!("{} -> {}", source.display(), destination.display());
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "bind mount {}: the host file holds {} bytes, more than the {MAX_FILE_BYTES} sent by content",
            name(),
            meta.len()
        ));
    }
    let content =
        fs::read(source).map_err(|e| format!("bind mount {}: cannot read it: {e}", name()))?;
    Ok(HostFile {
        destination: destination.display().to_string(),
        content,
        mode: meta.permissions().mode() & 0o7777,
        ..Default::default()
    })
}

fn shm_mount() -> Result<Mount, String> {
    MountBuilder::default()
        .destination("/dev/shm")
        .typ("tmpfs")
        .source("shm")
        .options(
            SHM_OPTIONS
                .iter()
                .map(|o| (*o).to_owned())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| format!("cannot build the /dev/shm mount: {e}"))
}

/// The text of the host file the spec binds at `destination`, if any (the pod's resolv.conf
/// and hosts, which also configure the guest's network).
pub fn content_at<'a>(files: &'a [HostFile], destination: &str) -> Option<&'a str> {
    files
        .iter()
        .find(|file| file.destination == destination)
        .and_then(|file| std::str::from_utf8(&file.content).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &Path, destination: &str) -> Mount {
        MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(vec!["rbind".to_owned(), "ro".to_owned()])
            .build()
            .unwrap()
    }

    fn spec_with(mounts: Vec<Mount>) -> Spec {
        let mut spec = Spec::default();
        spec.set_mounts(Some(mounts));
        spec
    }

    #[test]
    fn files_travel_by_content_and_shm_becomes_tmpfs() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let shm = dir.path().join("shm");
        fs::create_dir(&shm).unwrap();
        let proc_mount = MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .build()
            .unwrap();
        let mut spec = spec_with(vec![
            proc_mount.clone(),
            bind(&hosts, "/etc/hosts"),
            bind(&shm, "/dev/shm"),
        ]);
        let files = translate(&mut spec).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].destination, "/etc/hosts");
        assert_eq!(
            content_at(&files, "/etc/hosts"),
            Some("127.0.0.1 localhost\n")
        );
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts[0], proc_mount);
        assert_eq!(mounts[1].destination(), Path::new("/etc/hosts"));
        assert_eq!(mounts[2].typ().as_deref(), Some("tmpfs"));
        assert_eq!(mounts[2].destination(), Path::new("/dev/shm"));
    }

    #[test]
    fn host_directories_and_missing_paths_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(vec![bind(dir.path(), "/data")]);
        let err = translate(&mut spec).unwrap_err();
        assert!(err.contains("/data") && err.contains("not shared"), "{err}");
        let mut spec = spec_with(vec![bind(&dir.path().join("missing"), "/etc/hosts")]);
        let err = translate(&mut spec).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        fs::write(&big, vec![0u8; MAX_FILE_BYTES as usize + 1]).unwrap();
        let err = translate(&mut spec_with(vec![bind(&big, "/big")])).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }
}
