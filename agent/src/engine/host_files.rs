//! Host files the container's spec bind-mounts (containerd's `/etc/hosts`, `/etc/resolv.conf`
//! and `/etc/hostname` of a pod, kubelet's termination message file): the host sends their
//! contents, since its paths mean nothing in the guest. Each is written into the container's
//! directory and the spec's mount at its destination is pointed there.
//!
//! A file the host asks back (`return_max_bytes`, kubelet's termination message) is read again
//! when the container's init exits: its last bytes, at most [`MAX_RETURNED_FILE_BYTES`], without
//! following a symlink and only if it is still a regular file; WaitProcess hands them over.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rvm_protocol::limits::{MAX_FILE_BYTES, MAX_RETURNED_FILE_BYTES};

use super::{invalid, io_error, EngineError};

/// One file as the host sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFile {
    pub destination: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
    /// Non-zero: return the file's last bytes (at most this many, capped at
    /// [`MAX_RETURNED_FILE_BYTES`]) when the container's init exits.
    pub return_max_bytes: usize,
}

/// A host file to read back when the container's init exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedFile {
    pub destination: PathBuf,
    /// Where the agent wrote it (the container's bind source).
    pub path: PathBuf,
    pub max_bytes: usize,
}

/// Writes `files` under `dir` and points the spec's mounts at their destinations to them; says
/// which of them go back to the host. A file whose destination no spec mount has, or that is
/// too large, is refused.
pub fn apply(
    spec: &mut Spec,
    files: &[HostFile],
    dir: &Path,
) -> Result<Vec<ReturnedFile>, EngineError> {
    let mut returned = Vec::new();
    if files.is_empty() {
        return Ok(returned);
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
        mount.set_typ(Some("bind".to_owned()));
        if file.return_max_bytes > 0 {
            returned.push(ReturnedFile {
                destination: file.destination.clone(),
                path: path.clone(),
                max_bytes: file.return_max_bytes.min(MAX_RETURNED_FILE_BYTES),
            });
        }
        mount.set_source(Some(path));
    }
    spec.set_mounts(Some(mounts));
    Ok(returned)
}

/// The last bytes (at most `file.max_bytes`) of a file to return; `None`, with a warning, when
/// it cannot be read or is no longer a regular file.
pub fn read_back(file: &ReturnedFile) -> Option<Vec<u8>> {
    read_tail(&file.path, file.max_bytes)
        .inspect_err(|e| {
            tracing::warn!(path = %file.path.display(), destination = %file.destination.display(), %e, "cannot read a file back for the host");
        })
        .ok()
}

fn read_tail(path: &Path, max_bytes: usize) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: a FIFO must not hang the agent (it is refused below).
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let max = u64::try_from(max_bytes).unwrap_or(u64::MAX);
    file.seek(SeekFrom::Start(meta.len().saturating_sub(max)))?;
    let mut content = Vec::new();
    file.take(max).read_to_end(&mut content)?;
    Ok(content)
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
            ..Default::default()
        }
    }

    #[test]
    fn a_file_asked_back_returns_its_tail_capped_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(
            "/dev/termination-log",
            "/var/lib/kubelet/pods/u/containers/c/1",
        );
        let mut asked = file("/dev/termination-log", b"");
        asked.return_max_bytes = 1 << 20;
        let returned = apply(&mut spec, &[asked], dir.path()).unwrap();
        assert_eq!(returned.len(), 1);
        let back = &returned[0];
        assert_eq!(back.destination, Path::new("/dev/termination-log"));
        assert_eq!(back.max_bytes, MAX_RETURNED_FILE_BYTES, "capped");
        assert_eq!(
            spec.mounts().as_ref().unwrap()[0].source().as_ref(),
            Some(&back.path)
        );
        // What the container wrote through its bind.
        fs::write(&back.path, b"short message").unwrap();
        assert_eq!(read_back(back).unwrap(), b"short message");
        let mut long = vec![b'x'; 5000];
        long.extend_from_slice(b"END");
        fs::write(&back.path, &long).unwrap();
        let tail = read_back(back).unwrap();
        assert_eq!(tail.len(), MAX_RETURNED_FILE_BYTES);
        assert!(tail.ends_with(b"xEND"));
        // Swapped for a symlink or a FIFO: nothing comes back.
        fs::remove_file(&back.path).unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"secret").unwrap();
        std::os::unix::fs::symlink(&secret, &back.path).unwrap();
        assert_eq!(read_back(back), None);
        fs::remove_file(&back.path).unwrap();
        nix::unistd::mkfifo(&back.path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(read_back(back), None);
    }

    #[test]
    fn files_not_asked_back_are_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with("/etc/hosts", "/x");
        let returned = apply(&mut spec, &[file("/etc/hosts", b"h")], dir.path()).unwrap();
        assert!(returned.is_empty());
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
