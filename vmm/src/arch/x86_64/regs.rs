//! Boot register state of a vCPU: general registers, FPU, special registers and the boot page
//! tables for entering the kernel in 64-bit long mode or in 32-bit protected mode (PVH).

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{self, BOOT_GDT};
use super::layout;
use super::{BootEntry, BootProtocol};

/// Errors while setting up a vCPU's registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// KVM refused a register ioctl.
    #[error("cannot set vCPU {what}: {source}")]
    Kvm {
        /// Which register set.
        what: &'static str,
        /// The ioctl's error.
        source: kvm_ioctls::Error,
    },
    /// A boot structure does not fit in guest memory.
    #[error("cannot write the boot {what} to guest memory: {source}")]
    Memory {
        /// Which structure.
        what: &'static str,
        /// The guest memory error.
        source: vm_memory::GuestMemoryError,
    },
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
/// Page table entry flags: present, writable.
const PTE_PRESENT_RW: u64 = 0x3;
/// Page directory entry flags: present, writable, 2 MiB page.
const PDE_HUGE_PAGE: u64 = 0x83;
/// x87 control word after FNINIT.
const FPU_CONTROL_WORD: u16 = 0x37f;
/// MXCSR default: all SIMD exceptions masked.
const MXCSR_DEFAULT: u32 = 0x1f80;

/// General registers at the kernel entry point.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    let mut regs = kvm_regs {
        // Bit 1 of RFLAGS is reserved and always set.
        rflags: 0x2,
        rip: entry.entry.0,
        ..Default::default()
    };
    match entry.protocol {
        BootProtocol::Linux64 => {
            regs.rsp = layout::BOOT_STACK_POINTER;
            regs.rbp = layout::BOOT_STACK_POINTER;
            // 64-bit boot protocol: RSI points at the zero page.
            regs.rsi = entry.boot_info;
        }
        BootProtocol::Pvh => {
            // PVH: EBX holds the physical address of hvm_start_info.
            regs.rbx = entry.boot_info;
        }
    }
    regs
}

/// Sets the general registers of `vcpu` for `entry`.
pub fn setup_regs(vcpu: &VcpuFd, entry: &BootEntry) -> Result<(), RegsError> {
    vcpu.set_regs(&boot_regs(entry))
        .map_err(|source| RegsError::Kvm {
            what: "registers",
            source,
        })
}

/// Sets a freshly initialised x87/SSE state.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|source| RegsError::Kvm {
        what: "FPU state",
        source,
    })
}

/// Sets segments, descriptor tables and control registers for `protocol`, starting from the
/// vCPU's current special registers.
pub fn setup_sregs(vcpu: &VcpuFd, protocol: BootProtocol) -> Result<(), RegsError> {
    let mut sregs = vcpu.get_sregs().map_err(|source| RegsError::Kvm {
        what: "special registers (get)",
        source,
    })?;
    apply_boot_sregs(&mut sregs, protocol);
    vcpu.set_sregs(&sregs).map_err(|source| RegsError::Kvm {
        what: "special registers",
        source,
    })
}

/// Fills `sregs` with the boot segments and control registers of `protocol`.
pub fn apply_boot_sregs(sregs: &mut kvm_sregs, protocol: BootProtocol) {
    let code_index = match protocol {
        BootProtocol::Linux64 => gdt::CODE64_INDEX,
        BootProtocol::Pvh => gdt::CODE32_INDEX,
    };
    let data = gdt::kvm_segment_from_gdt(&BOOT_GDT, gdt::DATA_INDEX);
    sregs.cs = gdt::kvm_segment_from_gdt(&BOOT_GDT, code_index);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::kvm_segment_from_gdt(&BOOT_GDT, gdt::TSS_INDEX);
    sregs.gdt.base = layout::BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    match protocol {
        BootProtocol::Linux64 => {
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.cr3 = layout::PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        BootProtocol::Pvh => {
            // PVH enters in 32-bit protected mode with paging off.
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

/// Writes the boot GDT and the empty IDT to guest memory.
pub fn write_gdt_and_idt(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    for (index, entry) in BOOT_GDT.iter().enumerate() {
        let addr = GuestAddress(layout::BOOT_GDT_START + (index * 8) as u64);
        mem.write_obj(*entry, addr)
            .map_err(|source| RegsError::Memory {
                what: "GDT",
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))
        .map_err(|source| RegsError::Memory {
            what: "IDT",
            source,
        })
}

/// Writes page tables identity-mapping the first 4 GiB with 2 MiB pages.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let memory_error = |source| RegsError::Memory {
        what: "page tables",
        source,
    };
    mem.write_obj(
        layout::PDPTE_START | PTE_PRESENT_RW,
        GuestAddress(layout::PML4_START),
    )
    .map_err(memory_error)?;
    for dir in 0..layout::PDE_COUNT {
        let pde_page = layout::PDE_START + dir * layout::PAGE_SIZE;
        mem.write_obj(
            pde_page | PTE_PRESENT_RW,
            GuestAddress(layout::PDPTE_START + dir * 8),
        )
        .map_err(memory_error)?;
        for slot in 0..512u64 {
            let phys = ((dir << 9) + slot) << 21;
            mem.write_obj(phys | PDE_HUGE_PAGE, GuestAddress(pde_page + slot * 8))
                .map_err(memory_error)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn long_mode_sregs() {
        let mut sregs = kvm_sregs::default();
        apply_boot_sregs(&mut sregs, BootProtocol::Linux64);
        assert_eq!(sregs.cr0 & 0x8000_0001, 0x8000_0001);
        assert_eq!(sregs.cr3, layout::PML4_START);
        assert_eq!(sregs.efer & 0x500, 0x500);
        assert_eq!((sregs.cs.selector, sregs.cs.l), (8, 1));
        assert_eq!(sregs.gdt.limit, 39);
    }

    #[test]
    fn pvh_sregs_have_paging_off() {
        let mut sregs = kvm_sregs::default();
        apply_boot_sregs(&mut sregs, BootProtocol::Pvh);
        assert_eq!(sregs.cr0, 0x11);
        assert_eq!(sregs.efer, 0);
        assert_eq!((sregs.cs.l, sregs.cs.db), (0, 1));
    }

    #[test]
    fn regs_follow_the_boot_protocol() {
        let linux = BootEntry {
            entry: GuestAddress(0x100_0000),
            protocol: BootProtocol::Linux64,
            boot_info: layout::ZERO_PAGE_START,
        };
        let regs = boot_regs(&linux);
        assert_eq!((regs.rip, regs.rsi, regs.rflags), (0x100_0000, 0x7000, 2));
        let pvh = BootEntry {
            protocol: BootProtocol::Pvh,
            boot_info: 0x6000,
            ..linux
        };
        assert_eq!(boot_regs(&pvh).rbx, 0x6000);
    }

    #[test]
    fn page_tables_identity_map_4_gib() {
        let mem = memory();
        write_page_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(layout::PML4_START)).unwrap();
        assert_eq!(pml4, layout::PDPTE_START | 3);
        let pdpte3: u64 = mem
            .read_obj(GuestAddress(layout::PDPTE_START + 24))
            .unwrap();
        assert_eq!(pdpte3, (layout::PDE_START + 3 * 0x1000) | 3);
        // The last 2 MiB page of the fourth GiB maps 0xffe0_0000.
        let last: u64 = mem
            .read_obj(GuestAddress(layout::PDE_START + 3 * 0x1000 + 511 * 8))
            .unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
    }

    #[test]
    fn gdt_is_written_where_sregs_point() {
        let mem = memory();
        write_gdt_and_idt(&mem).unwrap();
        let code: u64 = mem
            .read_obj(GuestAddress(layout::BOOT_GDT_START + 8))
            .unwrap();
        assert_eq!(code, BOOT_GDT[1]);
    }
}
