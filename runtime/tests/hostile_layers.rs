//! Hostile layer tarballs: every escape attempt is refused with an error naming the entry, and
//! nothing is written outside the unpack directory.

// Test helpers panic on broken fixtures, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rvm_runtime::image::layer::{self, LayerError, Rejection};
use tar::EntryType;

#[path = "../../tests/fixtures/prerequisite.rs"]
mod prerequisite;

/// A raw tar stream, written header by header so that names the `tar` crate's builder would
/// refuse (`..`, absolute paths) can be tested.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(self, kind: EntryType, name: &str, link: &str, data: &[u8]) -> Self {
        self.header(kind, name, link, data.len() as u64, (0, 0), data)
    }

    fn header(
        mut self,
        kind: EntryType,
        name: &str,
        link: &str,
        size: u64,
        device: (u32, u32),
        data: &[u8],
    ) -> Self {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_size(size);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_device_major(device.0).unwrap();
        header.set_device_minor(device.1).unwrap();
        header.set_cksum();
        self.0.extend_from_slice(header.as_bytes());
        self.0.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, padding));
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(EntryType::Regular, name, "", data)
    }

    fn dir(self, name: &str) -> Self {
        self.entry(EntryType::Directory, name, "", b"")
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(EntryType::Symlink, name, target, b"")
    }

    fn hard_link(self, name: &str, target: &str) -> Self {
        self.entry(EntryType::Link, name, target, b"")
    }

    fn device(self, kind: EntryType, name: &str, major: u32, minor: u32) -> Self {
        self.header(kind, name, "", 0, (major, minor), b"")
    }

    fn pax(self, name: &str, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + body.to_string().len();
            if len.to_string().len() + body != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.entry(EntryType::XHeader, name, "", &data)
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0, 1024));
        self.0
    }
}

/// `<tmp>/outside/` holds a secret file and the unpack directory `target/`.
struct Sandbox {
    _dir: tempfile::TempDir,
    outside: PathBuf,
    target: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        let target = outside.join("target");
        fs::create_dir_all(&target).unwrap();
        fs::write(outside.join("secret"), "secret\n").unwrap();
        Self {
            _dir: dir,
            outside,
            target,
        }
    }

    fn unpack(&self, tar: Vec<u8>) -> Result<layer::UnpackStats, LayerError> {
        layer::unpack(&tar[..], &self.target)
    }

    /// Proves the unpack wrote nothing outside `target/` and left the secret alone.
    fn assert_nothing_outside(&self) {
        let mut found: Vec<String> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        assert_eq!(found, ["secret", "target"]);
        let secret = self.outside.join("secret");
        assert_eq!(fs::read_to_string(&secret).unwrap(), "secret\n");
        assert_eq!(
            fs::metadata(&secret).unwrap().nlink(),
            1,
            "secret was hard-linked"
        );
    }
}

fn unique(name: &str) -> String {
    format!("rvm-escape-{name}-{}", std::process::id())
}

/// Runs a hostile tar: it must fail naming `entry`, and leave nothing outside.
fn refused(tar: Vec<u8>, entry: &str) -> Rejection {
    let sandbox = Sandbox::new();
    let err = sandbox.unpack(tar).unwrap_err();
    sandbox.assert_nothing_outside();
    assert!(
        err.to_string().contains(entry),
        "error {err} does not name {entry:?}"
    );
    match err {
        LayerError::Rejected {
            entry: named,
            reason,
        } => {
            assert_eq!(named, entry);
            reason
        }
        other => panic!("expected a rejection of {entry}, got {other}"),
    }
}

#[test]
fn path_traversal_is_refused() {
    let tar = RawTar::default().file("../escape", b"x").finish();
    assert_eq!(refused(tar, "../escape"), Rejection::ParentComponent);
    let tar = RawTar::default().file("a/../../escape", b"x").finish();
    assert_eq!(refused(tar, "a/../../escape"), Rejection::ParentComponent);
}

#[test]
fn absolute_path_is_refused() {
    let name = format!("/tmp/{}", unique("abs"));
    let tar = RawTar::default().file(&name, b"x").finish();
    assert_eq!(refused(tar, &name), Rejection::AbsolutePath);
    assert!(!Path::new(&name).exists());
}

#[test]
fn writing_through_a_symlink_to_root_is_refused() {
    let escape = unique("root");
    let name = format!("a/tmp/{escape}");
    let tar = RawTar::default()
        .symlink("a", "/")
        .file(&name, b"x")
        .finish();
    let reason = refused(tar, &name);
    assert!(matches!(reason, Rejection::NotADirectory { ref component } if component == "a"));
    assert!(!Path::new("/tmp").join(&escape).exists());
}

#[test]
fn writing_through_relative_and_absolute_symlinks_is_refused() {
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.display().to_string();
    let tar = RawTar::default()
        .symlink("up", "..")
        .file("up/escape", b"x")
        .finish();
    assert!(matches!(
        sandbox.unpack(tar),
        Err(LayerError::Rejected { ref entry, .. }) if entry == "up/escape"
    ));
    let tar = RawTar::default()
        .symlink("out", &outside)
        .dir("out/newdir")
        .finish();
    assert!(matches!(
        sandbox.unpack(tar),
        Err(LayerError::Rejected { ref entry, .. }) if entry == "out/newdir"
    ));
    // A symlink replacing a directory created earlier does not redirect later entries either.
    let tar = RawTar::default()
        .dir("d")
        .symlink("d", &outside)
        .file("d/escape", b"x")
        .finish();
    assert!(sandbox.unpack(tar).is_err());
    sandbox.assert_nothing_outside();
}

#[test]
fn hard_links_outside_the_layer_are_refused() {
    let tar = RawTar::default().hard_link("link", "../secret").finish();
    assert!(matches!(
        refused(tar, "link"),
        Rejection::HardLinkOutside { .. }
    ));
    let tar = RawTar::default()
        .hard_link("passwd", "/etc/passwd")
        .finish();
    assert!(matches!(
        refused(tar, "passwd"),
        Rejection::HardLinkOutside { .. }
    ));
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.display().to_string();
    let tar = RawTar::default()
        .symlink("s", &outside)
        .hard_link("h", "s/secret")
        .finish();
    assert!(matches!(
        sandbox.unpack(tar),
        Err(LayerError::Rejected { ref entry, reason: Rejection::HardLinkOutside { .. } }) if entry == "h"
    ));
    sandbox.assert_nothing_outside();
    let tar = RawTar::default().hard_link("h", "not-in-layer").finish();
    assert!(matches!(
        refused(tar, "h"),
        Rejection::HardLinkOutside { .. }
    ));
}

#[test]
fn device_nodes_other_than_whiteouts_are_refused() {
    let tar = RawTar::default()
        .device(EntryType::Char, "dev-null", 1, 3)
        .finish();
    let reason = refused(tar, "dev-null");
    assert_eq!(
        reason,
        Rejection::Device {
            block: false,
            major: 1,
            minor: 3
        }
    );
    let tar = RawTar::default()
        .device(EntryType::Block, "disk", 8, 0)
        .finish();
    assert!(matches!(
        refused(tar, "disk"),
        Rejection::Device { block: true, .. }
    ));
}

#[test]
fn gigantic_sizes_are_refused_without_allocating() {
    // A file claiming a terabyte, followed by the end of the stream.
    let tar = RawTar::default()
        .header(EntryType::Regular, "huge", "", 1 << 40, (0, 0), b"tiny")
        .finish();
    assert!(matches!(refused(tar, "huge"), Rejection::Truncated { .. }));
    // Extension records are read into memory: a huge claim is refused before reading.
    for kind in [
        EntryType::XHeader,
        EntryType::GNULongName,
        EntryType::XGlobalHeader,
    ] {
        let tar = RawTar::default()
            .header(kind, "ext", "", 1 << 40, (0, 0), b"")
            .file("after", b"x")
            .finish();
        assert!(matches!(
            refused(tar, "ext"),
            Rejection::ExtensionTooLarge { .. }
        ));
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    // Whiteouts are character devices and opaque markers `trusted.*` xattrs, both root's.
    if !prerequisite::prerequisite(prerequisite::missing_root("unpacking whiteouts")) {
        return;
    }
    let sandbox = Sandbox::new();
    let tar = RawTar::default()
        .dir("etc")
        .file("etc/.wh.gone", b"")
        .dir("data")
        .file("data/.wh..wh..opq", b"")
        .file("data/new", b"new")
        .finish();
    let stats = sandbox.unpack(tar).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (1, 1));
    let gone = fs::symlink_metadata(sandbox.target.join("etc/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!sandbox.target.join("etc/.wh.gone").exists());
    let mut value = [0u8; 8];
    let len = rustix::fs::getxattr(
        sandbox.target.join("data"),
        "trusted.overlay.opaque",
        &mut value,
    )
    .unwrap();
    assert_eq!(&value[..len], b"y");
    assert!(!sandbox.target.join("data/.wh..wh..opq").exists());
    sandbox.assert_nothing_outside();
}

/// A file under a long pax path owned by uid 1234, with a user xattr and an overlay xattr the
/// layer must not smuggle in; the sandbox it was unpacked in and the file's path.
fn unpack_pax_file() -> (Sandbox, PathBuf) {
    let sandbox = Sandbox::new();
    let long = format!("{}/file", "d".repeat(150));
    let tar = RawTar::default()
        .pax(
            "PaxHeaders/setuid",
            &[
                ("path", long.as_bytes()),
                ("uid", b"1234"),
                ("SCHILY.xattr.user.note", b"hello"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ],
        )
        .header(EntryType::Regular, "short", "", 2, (0, 0), b"hi")
        .finish();
    sandbox.unpack(tar).unwrap();
    let path = sandbox.target.join(&long);
    (sandbox, path)
}

#[test]
fn metadata_is_kept() {
    let (_sandbox, path) = unpack_pax_file();
    assert_eq!(fs::read_to_string(&path).unwrap(), "hi");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert_eq!(meta.mtime(), 1_700_000_000);
    // Not every file system the test directory may be on takes user xattrs.
    let mut value = [0u8; 16];
    if let Ok(len) = rustix::fs::getxattr(&path, "user.note", &mut value) {
        assert_eq!(&value[..len], b"hello");
    }
}

#[test]
fn owners_are_kept_and_overlay_xattrs_from_the_layer_are_dropped() {
    // Only root sets owners and trusted.* xattrs, so only root can show the unpacker refusing
    // the layer's.
    if !prerequisite::prerequisite(prerequisite::missing_root("owners and trusted.* xattrs")) {
        return;
    }
    let (_sandbox, path) = unpack_pax_file();
    assert_eq!(fs::metadata(&path).unwrap().uid(), 1234);
    let mut value = [0u8; 16];
    assert!(rustix::fs::getxattr(&path, "trusted.overlay.redirect", &mut value).is_err());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let sandbox = Sandbox::new();
    let tar = RawTar::default()
        .file("f", b"one")
        .file("f", b"two")
        .symlink("l", "x")
        .file("l", b"file now")
        .finish();
    sandbox.unpack(tar).unwrap();
    assert_eq!(fs::read_to_string(sandbox.target.join("f")).unwrap(), "two");
    assert_eq!(
        fs::read_to_string(sandbox.target.join("l")).unwrap(),
        "file now"
    );
}

#[test]
fn a_fifo_replacing_a_symlink_gets_its_mode_and_the_symlink_target_is_untouched() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let sandbox = Sandbox::new();
    let secret = sandbox.outside.join("secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    // A symlink at the FIFO's name first: the FIFO replaces it, and its mode (0644 in the
    // header) is set on the FIFO, never through the link on the file outside.
    let tar = RawTar::default()
        .symlink("pipe", "../secret")
        .entry(EntryType::Fifo, "pipe", "", b"")
        .finish();
    sandbox.unpack(tar).unwrap();
    let pipe = fs::symlink_metadata(sandbox.target.join("pipe")).unwrap();
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.permissions().mode() & 0o7777, 0o644);
    assert_eq!(
        fs::metadata(&secret).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    sandbox.assert_nothing_outside();
}
