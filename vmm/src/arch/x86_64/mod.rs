//! x86_64 boot: the guest memory map, CPU state at entry and the tables a kernel reads.

pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;

use kvm_bindings::{kvm_lapic_state, CpuId};
use kvm_ioctls::VcpuFd;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// How the kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// 64-bit long mode with paging, RSI pointing at the zero page.
    Linux64,
    /// 32-bit protected mode without paging, EBX pointing at `hvm_start_info`.
    Pvh,
}

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    /// First instruction.
    pub entry: GuestAddress,
    /// Entry mode.
    pub protocol: BootProtocol,
    /// Zero page (Linux64) or start info (PVH) address; 0 for raw code.
    pub boot_info: u64,
}

/// Errors while configuring the x86_64 boot state.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// Registers.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// MSRs.
    #[error(transparent)]
    Msr(#[from] msr::MsrError),
    /// CPUID.
    #[error(transparent)]
    Cpuid(#[from] cpuid::CpuidError),
    /// MP table.
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    /// Zero page or PVH start info.
    #[error(transparent)]
    BootParams(#[from] boot_params::BootParamsError),
    /// Local APIC.
    #[error("cannot {what} the local APIC: {source}")]
    Lapic {
        /// get or set.
        what: &'static str,
        /// The ioctl's error.
        source: kvm_ioctls::Error,
    },
    /// CPUID.
    #[error("cannot set the vCPU's CPUID: {0}")]
    SetCpuid(kvm_ioctls::Error),
}

/// Writes the tables every guest needs, whatever it runs: GDT, IDT, page tables, MP table.
pub fn write_boot_tables(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), ArchError> {
    regs::write_gdt_and_idt(mem)?;
    regs::write_page_tables(mem)?;
    mptable::write_mptable(mem, vcpus)?;
    Ok(())
}

/// Sets CPUID, MSRs and the local APIC of a vCPU; the boot vCPU also gets its entry registers.
/// Application processors stay in wait-for-SIPI, as KVM creates them.
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    supported_cpuid: &CpuId,
    topology: cpuid::VcpuTopology,
    entry: &BootEntry,
) -> Result<(), ArchError> {
    let table = cpuid::vcpu_cpuid(supported_cpuid, topology)?;
    vcpu.set_cpuid2(&table).map_err(ArchError::SetCpuid)?;
    msr::setup_msrs(vcpu)?;
    setup_lapic(vcpu)?;
    if topology.index == 0 {
        regs::setup_regs(vcpu, entry)?;
        regs::setup_fpu(vcpu)?;
        regs::setup_sregs(vcpu, entry.protocol)?;
    }
    Ok(())
}

const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_register(state: &kvm_lapic_state, offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (i, byte) in bytes.iter_mut().enumerate() {
        // c_char to u8: a bit-for-bit reinterpretation.
        *byte = state.regs[offset + i] as u8;
    }
    u32::from_le_bytes(bytes)
}

fn set_lapic_register(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        // u8 to c_char: a bit-for-bit reinterpretation.
        state.regs[offset + i] = *byte as _;
    }
}

/// Delivery mode bits 8-10 of an LVT entry set to `mode`.
fn with_delivery_mode(lvt: u32, mode: u32) -> u32 {
    (lvt & !0x700) | (mode << 8)
}

/// Routes LINT0 as ExtINT (the legacy PIC) and LINT1 as NMI, as a BIOS would.
fn setup_lapic(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let mut state = vcpu.get_lapic().map_err(|source| ArchError::Lapic {
        what: "read",
        source,
    })?;
    let lint0 = lapic_register(&state, APIC_LVT_LINT0);
    set_lapic_register(
        &mut state,
        APIC_LVT_LINT0,
        with_delivery_mode(lint0, APIC_MODE_EXTINT),
    );
    let lint1 = lapic_register(&state, APIC_LVT_LINT1);
    set_lapic_register(
        &mut state,
        APIC_LVT_LINT1,
        with_delivery_mode(lint1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&state).map_err(|source| ArchError::Lapic {
        what: "set",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapic_register_round_trip() {
        let mut state = kvm_lapic_state::default();
        set_lapic_register(&mut state, APIC_LVT_LINT0, 0x0001_0000);
        let lvt = with_delivery_mode(lapic_register(&state, APIC_LVT_LINT0), APIC_MODE_EXTINT);
        assert_eq!(lvt, 0x0001_0700);
        set_lapic_register(&mut state, APIC_LVT_LINT0, lvt);
        assert_eq!(lapic_register(&state, APIC_LVT_LINT0), 0x0001_0700);
    }
}
