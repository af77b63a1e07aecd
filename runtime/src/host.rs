//! What this host's `/dev/kvm` can run: hardware virtualization, KVM-PVM, or nothing. Its
//! submodules own rvm's other dealings with the host's kernel: private file modes and long Unix
//! socket paths.

pub mod private;
pub mod unix_path;

use std::fs;
use std::path::Path;

/// The kind of KVM this host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    /// `/dev/kvm` backed by VT-x or AMD-V: stock guest kernels run at full speed.
    Hardware,
    /// `/dev/kvm` backed by KVM-PVM: only PVM-enabled guest kernels can run.
    Pvm,
    /// No usable `/dev/kvm`.
    Missing,
}

impl KvmKind {
    /// Detects the KVM flavour of the running host.
    pub fn detect() -> Self {
        Self::from_parts(
            Path::new("/dev/kvm").exists(),
            Path::new("/sys/module/kvm_pvm").exists(),
            &fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
        )
    }

    fn from_parts(dev_kvm: bool, pvm_module: bool, cpuinfo: &str) -> Self {
        let hw_flag = cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .flat_map(|line| line.split_whitespace())
            .any(|flag| flag == "vmx" || flag == "svm");
        match (dev_kvm, pvm_module, hw_flag) {
            (false, _, _) => Self::Missing,
            (true, _, true) => Self::Hardware,
            (true, true, false) => Self::Pvm,
            // A /dev/kvm without hardware flags or the PVM module: treat it as PVM-like, since a
            // stock guest kernel would not run on it either.
            (true, false, false) => Self::Pvm,
        }
    }

    /// One line telling a user why this host cannot boot rvm's guest directly, if it cannot.
    pub fn limitation(self) -> Option<&'static str> {
        match self {
            Self::Hardware => None,
            Self::Pvm => Some(
                "this host's /dev/kvm is KVM-PVM (no VT-x/AMD-V): it boots only PVM guest \
                 kernels, so run rvm inside the lab (tests/lab/run) or on a host with hardware \
                 virtualization",
            ),
            Self::Missing => Some(
                "/dev/kvm is missing: load kvm-intel or kvm-amd, or run rvm inside the lab \
                 (tests/lab/run)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_flags_mean_hardware() {
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu vme svm sse\n";
        assert_eq!(KvmKind::from_parts(true, false, cpuinfo), KvmKind::Hardware);
        assert!(KvmKind::Hardware.limitation().is_none());
    }

    #[test]
    fn pvm_module_without_flags_means_pvm() {
        let cpuinfo = "flags\t\t: fpu vme sse hypervisor\n";
        assert_eq!(KvmKind::from_parts(true, true, cpuinfo), KvmKind::Pvm);
        let line = KvmKind::Pvm.limitation().unwrap_or_default();
        assert!(line.contains("PVM") && !line.contains('\n'));
    }

    #[test]
    fn no_device_means_missing() {
        assert_eq!(
            KvmKind::from_parts(false, true, "flags: vmx"),
            KvmKind::Missing
        );
    }
}
