//! Host files the container's spec bind-mounts (containerd's `/etc/hosts`, `/etc/resolv.conf`
//! and `/etc/hostname` of a pod): the host sends their contents, since its paths mean nothing
//! in the guest. Each is written into the container's directory and the spec's mount at its
//! destination is pointed there.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::{invalid, io_error, EngineError};

/// Most bytes one host file may hold.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// One file as the host sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    pub destination: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Writes `files` under `dir` and points the spec's mounts at their destinations to them. A
/// file whose destination no spec mount has, or that is too large, is refused.
pub fn apply(spec: &mut Spec, files: &[HostFile], dir: &Path) -> Result<(), EngineError> {
    if files.is_empty() {
        return Ok(());
    }
    let files_dir = dir.join("files");
    fs::create_dir_all(&files_dir).map_err(io_error(format!("create {}", files_dir.display())))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (index, file) in files.iter().enumerate() {
        let what = || format!("host file for {}", file.destination.display());
        if file.content.len() > MAX_FILE_BYTES {
            let size = file.content.len();
            return Err(invalid(
                what(),
                format!("holds {size} bytes, more than {MAX_FILE_BYTES}"),
            ));
        }
        let mount = mounts
            .iter_mut()
            .rev()
            .find(|mount| mount.destination() == &file.destination)
            .ok_or_else(|| invalid(what(), "no mount of the spec has this destination"))?;
        let path = files_dir.join(index.to_string());
        write_file(&path, &file.content, file.mode & 0o7777)
            .map_err(io_error(format!("write {}", path.display())))?;
        mount.set_source(Some(path));
        mount.set_typ(Some("bind".to_owned()));
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn spec_with(destination: &str, source: &str) -> Spec {
        let mut spec = Spec::default();
        let mount = MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(vec!["rbind".to_owned(), "ro".to_owned()])
            .build()
            .unwrap();
        spec.set_mounts(Some(vec![mount]));
        spec
    }

    fn file(destination: &str, content: &[u8]) -> HostFile {
        HostFile {
            destination: destination.into(),
            content: content.to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn writes_the_file_and_points_the_mount_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with("/etc/hosts", "/var/lib/containerd/sandboxes/x/hosts");
        apply(
            &mut spec,
            &[file("/etc/hosts", b"127.0.0.1 localhost\n")],
            dir.path(),
        )
        .unwrap();
        let mount = &spec.mounts().as_ref().unwrap()[0];
        let source = mount.source().as_ref().unwrap();
        assert!(source.starts_with(dir.path()));
        assert_eq!(fs::read(source).unwrap(), b"127.0.0.1 localhost\n");
        assert_eq!(mount.options().as_ref().unwrap(), &["rbind", "ro"]);
    }

    #[test]
    fn refuses_a_file_without_a_mount_and_an_oversized_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with("/etc/hosts", "/x");
        let err = apply(&mut spec, &[file("/etc/passwd", b"x")], dir.path()).unwrap_err();
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
        let big = vec![b'x'; MAX_FILE_BYTES + 1];
        let err = apply(&mut spec, &[file("/etc/hosts", &big)], dir.path()).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
