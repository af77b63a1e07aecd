//! Device nodes made for real in temporary directories (mknod needs root; skipped without it
//! outside CI); the bind of a node outside /dev runs in a private mount namespace.

use super::*;
use crate::engine::devices::{MKNOD, READ, WRITE};
use crate::engine::host_dirs::prerequisite;
use nix::sched::{unshare, CloneFlags};

fn root(what: &str) -> bool {
    prerequisite::prerequisite(prerequisite::missing_root(what))
}

fn request(path: &str, permissions: &str) -> DeviceRequest {
    DeviceRequest {
        serial: "rvm-dev-0".into(),
        path: path.into(),
        permissions: permissions.into(),
    }
}

fn mknod_at(path: &Path, kind: SFlag, major: u64, minor: u64, mode: u32) {
    let old = umask(Mode::empty());
    nix::sys::stat::mknod(
        path,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .unwrap();
    umask(old);
}

fn node(path: &str, kind: NodeKind, major: u64, minor: u64, required: bool) -> DeviceNode {
    DeviceNode {
        path: path.into(),
        kind,
        major,
        minor,
        mode: 0o640,
        source: PathBuf::new(),
        required,
    }
}

#[test]
fn bad_requests_are_refused_by_path() {
    for (path, permissions) in [
        ("dev/xvdc", "rwm"),
        ("/dev/../etc/x", "rwm"),
        ("/", "rwm"),
        ("/dev/xvdc", ""),
        ("/dev/xvdc", "rwx"),
    ] {
        let error = disk_node(&request(path, permissions), Path::new("/nonexistent")).unwrap_err();
        assert!(
            matches!(&error, NodeError::BadRequest { path: p, .. } if p == path),
            "{path} {permissions}: {error}"
        );
    }
}

#[test]
fn a_disk_node_has_the_guests_numbers_and_a_rule_for_exactly_it() {
    if !root("mknod of a block node") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let guest = dir.path().join("vdc");
    mknod_at(&guest, SFlag::S_IFBLK, 254, 32, 0o600);
    let (made, rule) = disk_node(&request("/dev/xvdc", "r"), &guest).unwrap();
    assert_eq!(
        made,
        DeviceNode {
            path: "/dev/xvdc".into(),
            kind: NodeKind::Block,
            major: 254,
            minor: 32,
            mode: 0o600,
            source: guest.clone(),
            required: true,
        }
    );
    assert_eq!(
        rule,
        DeviceRule {
            allow: true,
            kind: Kind::Block,
            major: Some(254),
            minor: Some(32),
            access: READ,
        }
    );
    let (_, rule) = disk_node(&request("/dev/xvdc", "rwm"), &guest).unwrap();
    assert_eq!(rule.access, READ | WRITE | MKNOD);

    // The serial found a disk that is not a block device: refused.
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    assert!(matches!(
        disk_node(&request("/dev/xvdc", "r"), &file),
        Err(NodeError::NotBlock { .. })
    ));
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&guest, &link).unwrap();
    assert!(
        matches!(
            disk_node(&request("/dev/xvdc", "r"), &link),
            Err(NodeError::NotBlock { .. })
        ),
        "a symlink to a block node is not followed"
    );
}

#[test]
fn every_guest_node_is_listed_but_the_console_and_mounts() {
    if !root("mknod of the guest's nodes") {
        return;
    }
    let dev = tempfile::tempdir().unwrap();
    let d = dev.path();
    mknod_at(&d.join("vda"), SFlag::S_IFBLK, 254, 0, 0o600);
    mknod_at(&d.join("null"), SFlag::S_IFCHR, 1, 3, 0o666);
    mknod_at(&d.join("console"), SFlag::S_IFCHR, 5, 1, 0o600);
    fs::create_dir_all(d.join("net")).unwrap();
    mknod_at(&d.join("net/tun"), SFlag::S_IFCHR, 10, 200, 0o666);
    for skipped in ["pts", "shm", "mqueue"] {
        fs::create_dir(d.join(skipped)).unwrap();
        mknod_at(&d.join(skipped).join("0"), SFlag::S_IFCHR, 136, 0, 0o620);
    }
    std::os::unix::fs::symlink("vda", d.join("root")).unwrap();
    fs::write(d.join("regular"), b"").unwrap();
    let nodes = guest_nodes(d).unwrap();
    let listed: Vec<_> = nodes
        .iter()
        .map(|n| (n.path.to_str().unwrap(), n.kind, n.major, n.minor, n.mode))
        .collect();
    assert_eq!(
        listed,
        [
            ("/dev/net/tun", NodeKind::Char, 10, 200, 0o666),
            ("/dev/null", NodeKind::Char, 1, 3, 0o666),
            ("/dev/vda", NodeKind::Block, 254, 0, 0o600),
        ]
    );
    assert!(nodes.iter().all(|n| !n.required));
    assert_eq!(nodes[2].source, d.join("vda"));
}

#[test]
fn nodes_are_made_in_the_containers_dev_without_following_symlinks() {
    if !root("mknod in a container's /dev") {
        return;
    }
    let rootfs = tempfile::tempdir().unwrap();
    let r = rootfs.path();
    fs::create_dir(r.join("dev")).unwrap();
    fs::write(r.join("dev/null"), b"not a node").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), r.join("dev/fd")).unwrap();
    create_all(
        r,
        &[
            node("/dev/xvdc", NodeKind::Block, 254, 32, true),
            node("/dev/net/tun", NodeKind::Char, 10, 200, false),
            // Copied nodes already there are skipped.
            node("/dev/null", NodeKind::Char, 1, 3, false),
        ],
    )
    .unwrap();
    let made = fs::symlink_metadata(r.join("dev/xvdc")).unwrap();
    assert!(made.file_type().is_block_device());
    assert_eq!((major(made.rdev()), minor(made.rdev())), (254, 32));
    assert_eq!(
        made.mode() & 0o777,
        0o640,
        "the mode is exact, whatever the umask"
    );
    let tun = fs::symlink_metadata(r.join("dev/net/tun")).unwrap();
    assert!(tun.file_type().is_char_device());
    assert_eq!(fs::read(r.join("dev/null")).unwrap(), b"not a node");

    // Asked for by name: a path already there is an error.
    let error = create_all(r, &[node("/dev/null", NodeKind::Char, 1, 3, true)]).unwrap_err();
    assert!(error.to_string().contains("already there"), "{error}");
    // Through the agent's /dev/fd link: refused, nothing made where it points.
    for required in [true, false] {
        let error =
            create_all(r, &[node("/dev/fd/x", NodeKind::Block, 254, 0, required)]).unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
    }
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    for bad in ["dev/x", "/dev/../x", "/"] {
        assert!(
            create_all(r, &[node(bad, NodeKind::Block, 254, 0, true)]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn a_node_outside_dev_is_the_guests_node_bound_by_descriptor() {
    if !root("a bind mount in a private mount namespace") {
        return;
    }
    std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS).unwrap();
        let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
        mount(None::<&str>, "/", None::<&str>, private, None::<&str>).unwrap();
        let guest = tempfile::tempdir().unwrap();
        // A file stands in for the guest's node: a bind works the same for both.
        let source = guest.path().join("vdc");
        fs::write(&source, b"marker").unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        let r = rootfs.path();
        let mut disk = node("/srv/disk", NodeKind::Block, 254, 32, true);
        disk.source = source.clone();
        create_all(r, &[disk.clone()]).unwrap();
        assert_eq!(fs::read(r.join("srv/disk")).unwrap(), b"marker");
        // A symlinked directory on the way is refused, and nothing lands where it points.
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), r.join("link")).unwrap();
        disk.path = "/link/disk".into();
        let error = create_all(r, &[disk.clone()]).unwrap_err();
        assert!(error.to_string().contains("symlink"), "{error}");
        assert_eq!(fs::read_dir(elsewhere.path()).unwrap().count(), 0);
        // A symlink at the path itself is not followed either.
        std::os::unix::fs::symlink(elsewhere.path().join("f"), r.join("srv/l")).unwrap();
        disk.path = "/srv/l".into();
        assert!(create_all(r, &[disk]).is_err());
        assert!(!elsewhere.path().join("f").exists());
        let _ = nix::mount::umount2(&r.join("srv/disk"), nix::mount::MntFlags::MNT_DETACH);
    })
    .join()
    .unwrap();
}
