//! On a host whose /dev/kvm cannot boot rvm's guest (KVM-PVM, or none), `rvm run` of an image
//! it has says why in one line and exits 125 before creating anything. Skipped on hosts with
//! hardware KVM, where there is nothing to explain.

#[path = "../../tests/fixtures/images.rs"]
mod images;

use std::process::Command;

use rvm_runtime::host::KvmKind;

#[test]
fn run_explains_a_host_that_cannot_boot_guests() {
    // Not a missing prerequisite but a host this check does not apply to: with hardware KVM,
    // `rvm run` goes on to boot the guest, and the end-to-end tests cover that. So this skips
    // (saying so) under CI too.
    let Some(why) = KvmKind::detect().limitation() else {
        eprintln!("skipped: this host has hardware KVM, which this check is not about");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    // The image is there: otherwise rvm would try to pull it first, as Docker does.
    let archive = root.path().join("busybox.tar");
    images::write_oci_archive(
        &images::busybox_image(images::Compression::None),
        &archive,
        "busybox:latest",
    );
    let load = Command::new(env!("CARGO_BIN_EXE_rvm"))
        .arg("--root")
        .arg(root.path())
        .args(["load", "-i"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(load.status.success(), "{load:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_rvm"))
        .arg("--root")
        .arg(root.path())
        .args(["run", "--rm", "busybox", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), format!("rvm: {why}"));
    assert!(
        !root.path().join("containers").exists()
            || std::fs::read_dir(root.path().join("containers"))
                .unwrap()
                .all(|e| e.unwrap().file_name() == ".lock")
    );
}
