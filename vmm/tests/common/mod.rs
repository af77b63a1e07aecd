//! Helpers shared by the VMM's integration tests.

#[path = "../../../tests/fixtures/prerequisite.rs"]
mod prerequisite;
// Not every test binary that includes this module asks for a prerequisite of its own.
#[allow(unused_imports)]
pub use prerequisite::prerequisite;

/// Whether `/dev/kvm` can be opened. When it cannot, the test fails under CI and is skipped,
/// with the reason, elsewhere (see `tests/fixtures/prerequisite.rs`).
pub fn kvm_available() -> bool {
    let missing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .err()
        .map(|e| {
            format!(
                "cannot open /dev/kvm: {e} (the host needs KVM, the kvm_intel/kvm_amd or \
                 kvm_pvm module, and access to /dev/kvm)"
            )
        });
    prerequisite::prerequisite(missing)
}
