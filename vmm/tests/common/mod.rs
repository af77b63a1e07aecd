//! Helpers shared by the VMM's integration tests.

/// Whether `/dev/kvm` can be opened; prints why a test is skipped when it cannot.
pub fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: cannot open /dev/kvm: {e}");
            false
        }
    }
}
