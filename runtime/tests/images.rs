//! Loading docker-archive and OCI archives into the store, and building layer disks that stack
//! as overlay lowerdirs into the merged view the layers mean.

// Test helpers panic on broken fixtures, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/fixtures/images.rs"]
mod images;
#[path = "../../tests/fixtures/prerequisite.rs"]
mod prerequisite;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use images::Compression;
use rvm_runtime::image::archive::{self, ArchiveError};
use rvm_runtime::image::disk::{self, DiskError};
use rvm_runtime::image::gc;
use rvm_runtime::image::manifest::{self, Platform};
use rvm_runtime::image::{Digest, Reference, Store};

fn digest(text: &str) -> Digest {
    Digest::parse(text).unwrap()
}

fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("root")).unwrap();
    (dir, store)
}

fn resolve(store: &Store, name: &str) -> manifest::ResolvedImage {
    let reference = Reference::parse(name).unwrap();
    manifest::resolve_reference(store, &reference, &Platform::host()).unwrap()
}

/// Whether the test may unpack whiteouts: they are character devices and opaque markers
/// `trusted.*` xattrs, both root's (see `prerequisite`).
fn may_unpack_whiteouts() -> bool {
    prerequisite::prerequisite(prerequisite::missing_root(
        "unpacking whiteouts (character devices, trusted.* xattrs)",
    ))
}

/// Files left anywhere under `dir`, as paths relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn oci_archive_of_busybox_loads_with_its_digests_and_config() {
    let (dir, store) = new_store();
    let image = images::busybox_image(Compression::Gzip);
    let path = dir.path().join("busybox-oci.tar");
    images::write_oci_archive(&image, &path, "docker.io/library/busybox:latest");

    let loaded = archive::load(&store, &path).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].reference.as_ref().unwrap().to_string(),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(loaded[0].digest, digest(&image.manifest_digest));
    let mut expected = vec![
        digest(&image.manifest_digest),
        digest(&image.config_digest),
        digest(&image.layers[0].digest),
    ];
    expected.sort();
    assert_eq!(store.blobs().unwrap(), expected);
    for blob in &expected {
        store.verify_blob(blob).unwrap();
    }

    let resolved = resolve(&store, "busybox");
    assert_eq!(resolved.config_digest, digest(&image.config_digest));
    assert_eq!(resolved.config.cmd, ["sh"]);
    assert_eq!(resolved.config.env, [images::PATH_ENV]);
    assert_eq!(resolved.config.working_dir.as_deref(), Some("/"));
    assert_eq!(resolved.layers[0].diff_id, digest(&image.layers[0].diff_id));
    assert!(tree(&store.tmp_dir()).is_empty(), "staging left behind");
}

#[test]
fn docker_archive_of_busybox_loads_with_its_digests_and_config() {
    let (dir, store) = new_store();
    let image = images::as_docker_layers(&images::busybox_image(Compression::None));
    let path = dir.path().join("busybox-docker.tar");
    images::write_docker_archive(&image, &path, "busybox:1.36");

    let loaded = archive::load(&store, &path).unwrap();
    assert_eq!(loaded.len(), 1);
    let reference = loaded[0].reference.as_ref().unwrap();
    assert_eq!(reference.to_string(), "docker.io/library/busybox:1.36");
    let resolved = resolve(&store, "busybox:1.36");
    assert_eq!(resolved.manifest, loaded[0].digest);
    assert_eq!(resolved.config_digest, digest(&image.config_digest));
    assert_eq!(resolved.layers.len(), 1);
    assert_eq!(resolved.layers[0].digest, digest(&image.layers[0].diff_id));
    assert_eq!(resolved.layers[0].media_type, manifest::OCI_LAYER);
    assert_eq!(resolved.config.cmd, ["sh"]);
    assert_eq!(
        resolved
            .config
            .labels
            .get("org.opencontainers.image.title")
            .map(String::as_str),
        Some("rvm busybox fixture")
    );
    // manifest + config + layer, nothing else.
    assert_eq!(store.blobs().unwrap().len(), 3);
}

#[test]
fn corrupt_blob_in_oci_archive_is_refused_and_leaves_nothing() {
    let (dir, store) = new_store();
    let mut image = images::three_layer_image();
    // The layer file no longer matches the digest it is stored under.
    image.layers[1].blob[20] ^= 0xff;
    let path = dir.path().join("corrupt.tar");
    images::write_oci_archive(&image, &path, "corrupt:latest");

    let err = archive::load(&store, &path).unwrap_err();
    assert!(matches!(err, ArchiveError::BlobMismatch { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(images::hex(&image.layers[1].digest)),
        "{message}"
    );
    assert!(store.blobs().unwrap().is_empty());
    assert!(store.images().unwrap().is_empty());
    assert!(tree(&store.tmp_dir()).is_empty(), "staging left behind");
}

#[test]
fn corrupt_config_in_docker_archive_is_refused_and_leaves_nothing() {
    let (dir, store) = new_store();
    let mut image = images::as_docker_layers(&images::three_layer_image());
    image.config.push(b' ');
    let path = dir.path().join("corrupt-docker.tar");
    images::write_docker_archive(&image, &path, "corrupt:latest");

    let err = archive::load(&store, &path).unwrap_err();
    assert!(matches!(err, ArchiveError::BlobMismatch { .. }), "{err}");
    assert!(store.blobs().unwrap().is_empty());
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn missing_layer_is_refused() {
    let (dir, store) = new_store();
    let image = images::three_layer_image();
    let mut partial = image.clone();
    partial.layers.pop();
    // The manifest still lists three layers; only two blobs are written.
    let path = dir.path().join("partial.tar");
    let mut with_manifest = partial;
    with_manifest.manifest = image.manifest.clone();
    with_manifest.manifest_digest = image.manifest_digest.clone();
    images::write_oci_archive(&with_manifest, &path, "partial:latest");

    let err = archive::load(&store, &path).unwrap_err();
    assert!(matches!(err, ArchiveError::MissingBlob { .. }), "{err}");
    assert!(err.to_string().contains(&image.layers[2].digest), "{err}");
    assert!(store.blobs().unwrap().is_empty());
}

#[test]
fn tampered_layer_blob_builds_no_disk() {
    let (dir, store) = new_store();
    let image = images::three_layer_image();
    let path = dir.path().join("three.tar");
    images::write_oci_archive(&image, &path, "three:latest");
    archive::load(&store, &path).unwrap();
    let resolved = resolve(&store, "three");
    let layer = &resolved.layers[0];
    let mut bytes = fs::read(store.blob_path(&layer.digest)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(store.blob_path(&layer.digest), bytes).unwrap();

    let err = disk::ensure_layer_disk(&store, layer).unwrap_err();
    assert!(matches!(err, DiskError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    assert!(
        tree(&store.layers_dir()).is_empty(),
        "{:?}",
        tree(&store.layers_dir())
    );
}

#[test]
fn wrong_diff_id_builds_no_disk() {
    let (_dir, store) = new_store();
    let layer = images::Layer::new(&[images::file("x", b"x")], Compression::Gzip);
    let stored = store.put_bytes(&layer.blob).unwrap();
    let wrong = manifest::Layer {
        digest: stored,
        diff_id: Digest::of(b"something else"),
        media_type: manifest::OCI_LAYER_GZIP.to_owned(),
        size: layer.blob.len() as u64,
    };
    let err = disk::ensure_layer_disk(&store, &wrong).unwrap_err();
    assert!(matches!(err, DiskError::DiffIdMismatch { .. }), "{err}");
    assert!(tree(&store.layers_dir()).is_empty());
}

/// Loads a one-layer image named `name` whose layer holds `content`; returns its diff_id.
fn load_one_layer(store: &Store, dir: &Path, name: &str, content: &[u8]) -> Digest {
    let layer = images::Layer::new(&[images::file("f", content)], Compression::Gzip);
    let image = images::Image::new(vec![layer], serde_json::json!({}));
    let path = dir.join(format!("{name}.tar"));
    images::write_oci_archive(&image, &path, &format!("{name}:latest"));
    archive::load(store, &path).unwrap();
    disk::ensure_image_disks(store, &resolve(store, name)).unwrap();
    digest(&image.layers[0].diff_id)
}

#[test]
fn gc_prunes_the_disks_of_layers_no_image_references_and_keeps_the_rest() {
    let (dir, store) = new_store();
    let kept = load_one_layer(&store, dir.path(), "kept", b"kept");
    let removed = load_one_layer(&store, dir.path(), "removed", b"removed");
    let layers = store.layers_dir();
    let file = |digest: &Digest, ext: &str| layers.join(format!("{}.{ext}", digest.hex()));
    // The kept image's disk as a version without records left it.
    fs::remove_file(file(&kept, "source")).unwrap();
    // An orphan disk of that age, and a disk whose record names another layer.
    let orphan = Digest::of(b"orphan");
    fs::write(file(&orphan, "erofs"), b"old disk").unwrap();
    let mismatched = Digest::of(b"mismatched");
    fs::write(file(&mismatched, "erofs"), b"disk").unwrap();
    fs::write(
        file(&mismatched, "source"),
        format!("diff_id {}\n", Digest::of(b"else")),
    )
    .unwrap();

    // `rmi` judges only the layers of the images it removes.
    let out = gc::remove_images(&store, &[Reference::parse("removed").unwrap()]).unwrap();
    assert_eq!(out.disks, std::slice::from_ref(&removed));
    assert!(!file(&removed, "erofs").exists() && !file(&removed, "source").exists());
    assert!(file(&orphan, "erofs").exists());

    // A stale temporary file of a process that is gone (pid_max is below 2^22).
    let stale = layers.join(format!(".{}.tmp-4194304-0", orphan.hex()));
    fs::write(&stale, b"half").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();

    // `system prune` judges them all: the orphan goes, with its stale temporary file; the disk
    // in use stays though it has no record, and so does the one whose record cannot be trusted.
    let out = gc::prune(&store).unwrap();
    assert_eq!(out.disks, std::slice::from_ref(&orphan));
    assert_eq!(out.temp_entries, 1);
    let mut expected = vec![
        format!("{}.erofs", kept.hex()),
        format!("{}.erofs", mismatched.hex()),
        format!("{}.source", mismatched.hex()),
    ];
    expected.sort();
    assert_eq!(tree(&layers), expected);

    // Used again, the kept disk gets its record back.
    disk::ensure_image_disks(&store, &resolve(&store, "kept")).unwrap();
    assert_eq!(
        fs::read_to_string(file(&kept, "source")).unwrap(),
        format!("diff_id {kept}\n")
    );
}

/// Unmounts what it mounted, topmost first, even when an assertion fails.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            let _ = Command::new("umount").arg(target).status();
        }
    }
}

impl Mounts {
    /// Mounts at `target` with `mount ARGS TARGET`; a failure fails the test, naming both.
    fn mount(&mut self, args: &[&str], target: &Path) {
        fs::create_dir_all(target).unwrap();
        let output = Command::new("mount")
            .args(args)
            .arg(target)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "mount {} {}: {}",
            args.join(" "),
            target.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        self.0.push(target.to_path_buf());
    }
}

/// Whether the test may mount layer disks: as root, with the kernel's erofs and overlay file
/// systems and loop devices (see `prerequisite`). With those, a disk that does not mount is a
/// failure of the disk, not of the host.
fn may_mount() -> bool {
    prerequisite::prerequisite(missing_for_mount())
}

fn missing_for_mount() -> Option<String> {
    if let Some(missing) = prerequisite::missing_root("mounting layer disks") {
        return Some(missing);
    }
    // Loaded on demand where they are modules (kmod, which tools/install-deps installs).
    for module in ["erofs", "overlay", "loop"] {
        let _ = Command::new("modprobe").arg(module).output();
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for needed in ["erofs", "overlay"] {
        let listed = filesystems
            .lines()
            .any(|line| line.split_whitespace().last() == Some(needed));
        if !listed {
            return Some(format!(
                "the kernel has no {needed} file system (modprobe {needed} did not load one)"
            ));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("the host has no loop devices (/dev/loop-control is missing)".to_owned());
    }
    None
}

#[test]
fn layer_disks_stack_into_the_merged_view_and_are_shared() {
    if !may_unpack_whiteouts() {
        return;
    }
    let (dir, store) = new_store();
    let image = images::three_layer_image();
    let oci = dir.path().join("three-oci.tar");
    images::write_oci_archive(&image, &oci, "three:latest");
    archive::load(&store, &oci).unwrap();
    let resolved = resolve(&store, "three");
    let disks = disk::ensure_image_disks(&store, &resolved).unwrap();
    assert_eq!(disks.len(), 3);
    assert!(disks.iter().all(|d| d.created));
    for (disk, layer) in disks.iter().zip(&image.layers) {
        let name = format!("{}.erofs", images::hex(&layer.diff_id));
        assert_eq!(disk.path, store.layers_dir().join(name));
    }

    // The same layers, shipped uncompressed by `docker save` under another name and config:
    // same diff_ids, so nothing is converted again.
    let docker = images::as_docker_layers(&image);
    let docker_path = dir.path().join("three-docker.tar");
    images::write_docker_archive(&docker, &docker_path, "other:v2");
    archive::load(&store, &docker_path).unwrap();
    let second = resolve(&store, "other:v2");
    let again = disk::ensure_image_disks(&store, &second).unwrap();
    assert!(again.iter().all(|d| !d.created), "{again:?}");
    assert_eq!(
        again.iter().map(|d| &d.path).collect::<Vec<_>>(),
        disks.iter().map(|d| &d.path).collect::<Vec<_>>()
    );
    // A disk and its record per layer.
    let names = tree(&store.layers_dir());
    assert_eq!(names.len(), 6, "{names:?}");
    for layer in &image.layers {
        let record = store
            .layers_dir()
            .join(format!("{}.source", images::hex(&layer.diff_id)));
        assert_eq!(
            fs::read_to_string(record).unwrap(),
            format!("diff_id {}\n", layer.diff_id)
        );
    }

    if !may_mount() {
        return;
    }
    let mut mounts = Mounts(Vec::new());
    let mut lowers = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let target = dir.path().join(format!("layer{i}"));
        let options = ["-t", "erofs", "-o", "loop,ro", disk.path.to_str().unwrap()];
        mounts.mount(&options, &target);
        lowers.push(target.display().to_string());
    }
    lowers.reverse();
    let merged = dir.path().join("merged");
    let lowerdir = format!("lowerdir={}", lowers.join(":"));
    mounts.mount(&["-t", "overlay", "overlay", "-o", &lowerdir], &merged);

    assert_eq!(
        fs::read_to_string(merged.join("etc/keep")).unwrap(),
        "keep\n"
    );
    assert!(
        !merged.join("etc/remove-me").exists(),
        "whiteout did not hide the file"
    );
    assert_eq!(
        tree(&merged.join("data")),
        ["new1"],
        "opaque directory shows lower entries"
    );
    assert_eq!(
        fs::read_to_string(merged.join("etc/added")).unwrap(),
        "added\n"
    );
    assert_eq!(
        fs::read_link(merged.join("etc/link")).unwrap(),
        Path::new("keep")
    );
    assert_eq!(
        fs::read_to_string(merged.join("etc/hard")).unwrap(),
        "added\n"
    );
}

#[test]
fn busybox_layer_disk_holds_a_working_busybox() {
    let (dir, store) = new_store();
    let image = images::busybox_image(Compression::Zstd);
    let path = dir.path().join("busybox.tar");
    images::write_oci_archive(&image, &path, "busybox:latest");
    archive::load(&store, &path).unwrap();
    let disks = disk::ensure_image_disks(&store, &resolve(&store, "busybox")).unwrap();
    if !may_mount() {
        return;
    }
    let mut mounts = Mounts(Vec::new());
    let root = dir.path().join("rootfs");
    let options = [
        "-t",
        "erofs",
        "-o",
        "loop,ro",
        disks[0].path.to_str().unwrap(),
    ];
    mounts.mount(&options, &root);
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let output = Command::new(root.join("bin/echo"))
        .arg("hello")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
    let tmp = fs::symlink_metadata(root.join("tmp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
}

/// Writes the fixture archives for other tests and for trying `rvm load` by hand:
/// `RVM_FIXTURE_OUT=/some/dir cargo test -p rvm-runtime --test images write_fixture_archives`.
#[test]
fn write_fixture_archives() {
    let Some(out) = std::env::var_os("RVM_FIXTURE_OUT") else {
        return;
    };
    let out = PathBuf::from(out);
    fs::create_dir_all(&out).unwrap();
    let busybox = images::busybox_image(Compression::Gzip);
    images::write_oci_archive(&busybox, &out.join("busybox-oci.tar"), "busybox:latest");
    let docker = images::as_docker_layers(&busybox);
    images::write_docker_archive(&docker, &out.join("busybox-docker.tar"), "busybox:latest");
    let three = images::three_layer_image();
    images::write_oci_archive(
        &three,
        &out.join("three-layer-oci.tar"),
        "rvm-test/three-layer:latest",
    );
    println!("fixture archives written to {}", out.display());
}

/// Older `docker save` stores a layer that appears twice once, and links the second path to it.
#[test]
fn docker_archive_with_symlinked_duplicate_layer_loads() {
    let (dir, store) = new_store();
    let layer = images::Layer::new(&[images::file("same", b"same\n")], Compression::None);
    let image = images::Image::new(vec![layer.clone(), layer.clone()], serde_json::json!({}));
    let config_name = format!("{}.json", images::hex(&image.config_digest));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["dup:latest"],
        "Layers": ["first/layer.tar", "second/layer.tar"],
    }]);
    let path = dir.path().join("dup.tar");
    let mut builder = tar::Builder::new(fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, data).unwrap();
    };
    add("first/layer.tar", &layer.tar);
    add(&config_name, &image.config);
    add("manifest.json", manifest.to_string().as_bytes());
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_mode(0o777);
    link.set_uid(0);
    link.set_gid(0);
    link.set_mtime(0);
    link.set_size(0);
    builder
        .append_link(&mut link, "second/layer.tar", "../first/layer.tar")
        .unwrap();
    builder.into_inner().unwrap();

    archive::load(&store, &path).unwrap();
    let resolved = resolve(&store, "dup");
    assert_eq!(resolved.layers.len(), 2);
    assert_eq!(resolved.layers[0].digest, resolved.layers[1].digest);
}
