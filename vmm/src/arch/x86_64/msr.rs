//! Model-specific registers a vCPU starts with: syscall MSRs cleared, fast strings on, MTRRs
//! enabled with write-back as the default memory type.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

/// Errors while setting the boot MSRs.
#[derive(Debug, thiserror::Error)]
pub enum MsrError {
    /// The MSR list could not be built.
    #[error("cannot build the MSR list: {0:?}")]
    List(vmm_sys_util::fam::Error),
    /// KVM refused the MSR write.
    #[error("cannot set the boot MSRs: {0}")]
    Kvm(kvm_ioctls::Error),
    /// KVM set only part of the MSRs.
    #[error("KVM set {set} of {wanted} boot MSRs")]
    Partial {
        /// How many were set.
        set: usize,
        /// How many were asked.
        wanted: usize,
    },
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

const MISC_ENABLE_FAST_STRING: u64 = 0x1;
const MTRR_ENABLE: u64 = 0x800;
const MTRR_MEM_TYPE_WB: u64 = 0x6;

/// The `(index, value)` pairs of the boot MSRs.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets the boot MSRs on `vcpu`; all of them must be accepted.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), MsrError> {
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(MsrError::List)?;
    let set = vcpu.set_msrs(&msrs).map_err(MsrError::Kvm)?;
    if set != entries.len() {
        return Err(MsrError::Partial {
            set,
            wanted: entries.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtrrs_default_to_write_back() {
        let entries = boot_msr_entries();
        let def_type = entries
            .iter()
            .find(|e| e.index == MSR_MTRR_DEF_TYPE)
            .unwrap();
        assert_eq!(def_type.data, 0x806);
        assert!(entries.iter().all(|e| e.index != 0));
    }
}
