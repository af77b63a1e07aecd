//! Guest physical memory map of an x86_64 microVM: where boot structures, RAM and MMIO live.
//!
//! ```text
//! 0x0000_0500  GDT (boot)                 0x0000_9000  PML4, then PDPT and 4 page directories
//! 0x0000_0520  IDT (empty)                0x0002_0000  kernel command line (2 KiB)
//! 0x0000_7000  zero page (boot_params)    0x0009_fc00  MP table (EBDA), reserved up to 1 MiB
//! 0x0000_8ff0  boot stack pointer         0x0010_0000  high memory: kernel, then free RAM
//! 0xd000_0000  MMIO gap (virtio-mmio devices, 4 KiB apart) up to 4 GiB; RAM resumes at 4 GiB
//! ```

/// Boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT: a single null entry, so that any exception during early boot is a triple fault.
pub const BOOT_IDT_START: u64 = 0x520;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Top-level page table (PML4).
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of [`PDE_COUNT`] page directories, one page each, mapping 1 GiB each with 2 MiB pages.
pub const PDE_START: u64 = 0xb000;
/// Page directories: the boot page tables identity-map the first 4 GiB, MMIO gap included.
pub const PDE_COUNT: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Kernel command line capacity, terminating NUL included (boot protocol 2.06+ default).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area, where the MP table goes.
pub const EBDA_START: u64 = 0x9fc00;
/// MP table location.
pub const MPTABLE_START: u64 = EBDA_START;
/// End of the reserved legacy area (EBDA, VGA hole, BIOS ROM).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the MMIO gap (exclusive): 4 GiB.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio devices are placed from here, [`MMIO_DEVICE_SIZE`] apart.
pub const MMIO_DEVICES_START: u64 = MMIO_GAP_START;
/// Size of the window of one virtio-mmio device.
pub const MMIO_DEVICE_SIZE: u64 = 0x1000;
/// First IRQ handed to virtio-mmio devices (0-4 are PIT, keyboard, cascade, COM2, COM1).
pub const MMIO_FIRST_IRQ: u32 = 5;
/// Local APIC of every vCPU.
pub const APIC_START: u64 = 0xfee0_0000;
/// The IOAPIC of the in-kernel irqchip.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Where KVM puts the TSS it needs on Intel (3 pages), inside the MMIO gap.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Default kernel alignment announced in the zero page.
pub const KERNEL_ALIGNMENT: u32 = 0x0100_0000;
/// Page size used for aligning the initrd.
pub const PAGE_SIZE: u64 = 0x1000;

// The boot stack grows down from between the zero page and the page tables.
const _: () =
    assert!(BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + PAGE_SIZE);

/// A guest RAM range `[start, start + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// First guest physical address.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Splits `mem_size` bytes of RAM around the MMIO gap: RAM from 0, the rest above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<RamRange> {
    if mem_size <= MMIO_GAP_START {
        return vec![RamRange {
            start: 0,
            size: mem_size,
        }];
    }
    vec![
        RamRange {
            start: 0,
            size: MMIO_GAP_START,
        },
        RamRange {
            start: MMIO_GAP_END,
            size: mem_size - MMIO_GAP_START,
        },
    ]
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

/// Guest address of the `index`-th virtio-mmio device window.
pub fn mmio_device_addr(index: u32) -> u64 {
    MMIO_DEVICES_START + u64::from(index) * MMIO_DEVICE_SIZE
}

/// Most virtio-mmio devices: one IOAPIC pin each, from [`MMIO_FIRST_IRQ`] to pin 23.
pub const MMIO_MAX_DEVICES: u32 = 24 - MMIO_FIRST_IRQ;

/// IRQ of the `index`-th virtio-mmio device.
pub fn mmio_device_irq(index: u32) -> u32 {
    MMIO_FIRST_IRQ + index
}

/// Whether `addr` lies in the MMIO gap below 4 GiB.
pub fn in_mmio_gap(addr: u64) -> bool {
    (MMIO_GAP_START..MMIO_GAP_END).contains(&addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_range_from_zero() {
        assert_eq!(
            ram_ranges(128 << 20),
            vec![RamRange {
                start: 0,
                size: 128 << 20
            }]
        );
        assert_eq!(low_ram_end(128 << 20), 128 << 20);
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].start + ranges[0].size, MMIO_GAP_START);
        assert_eq!(ranges[1].start, MMIO_GAP_END);
        assert_eq!(ranges[0].size + ranges[1].size, 4 << 30);
        assert_eq!(low_ram_end(4 << 30), MMIO_GAP_START);
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (BOOT_GDT_START, 0x20),
            (BOOT_IDT_START, 0x8),
            (ZERO_PAGE_START, PAGE_SIZE),
            (PML4_START, PAGE_SIZE),
            (PDPTE_START, PAGE_SIZE),
            (PDE_START, PDE_COUNT * PAGE_SIZE),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
            (MPTABLE_START, HIMEM_START - MPTABLE_START),
        ];
        areas.sort();
        for pair in areas.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:x?}");
        }
    }

    #[test]
    fn mmio_devices_are_a_page_apart_from_irq_5() {
        assert_eq!(mmio_device_addr(0), 0xd000_0000);
        assert_eq!(mmio_device_addr(2), 0xd000_2000);
        assert_eq!(mmio_device_irq(0), 5);
        assert!(in_mmio_gap(mmio_device_addr(100)));
        assert!(!in_mmio_gap(MMIO_GAP_START - 1));
        assert!(in_mmio_gap(KVM_TSS_ADDRESS) && in_mmio_gap(APIC_START));
    }
}
