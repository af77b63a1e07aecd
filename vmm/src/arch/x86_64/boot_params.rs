//! What the kernel reads at entry: the zero page (Linux boot protocol) or `hvm_start_info`
//! (PVH), both with the e820 memory map and the command line location.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;

/// Errors while writing the boot information.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    /// More memory ranges than the zero page holds.
    #[error("the e820 map has {0} entries, more than the zero page holds")]
    TooManyE820Entries(usize),
    /// Guest memory refused the write.
    #[error("cannot write the {what} to guest memory: {source}")]
    Memory {
        /// Which structure.
        what: &'static str,
        /// The guest memory error.
        source: vm_memory::GuestMemoryError,
    },
}

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// "HdrS": the boot protocol header magic.
const HDR_MAGIC: u32 = 0x5372_6448;
/// 0xAA55 boot sector signature expected in `boot_flag`.
const BOOT_FLAG: u16 = 0xaa55;
/// Loader type "undefined" (0xff): we are not one of the registered boot loaders.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `loadflags` bit: the protected-mode kernel is loaded at 1 MiB or above.
const LOADED_HIGH: u8 = 0x1;

/// Where the PVH start info, module list and memory map go.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initrd).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map; shares its page with the zero page, which PVH boots do not use.
pub const PVH_MEMMAP_START: u64 = layout::ZERO_PAGE_START;
/// `hvm_start_info.magic`.
const PVH_MAGIC: u32 = 0x336e_c578;

/// One entry of the guest memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The initrd's place in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// What the kernel needs to know at boot, besides its own image.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// Guest RAM size in bytes.
    pub mem_size: u64,
    /// Length of the command line without its NUL.
    pub cmdline_len: usize,
    /// The initrd, if any.
    pub initrd: Option<InitrdPlacement>,
    /// Setup header from a bzImage, to start the zero page from.
    pub setup_header: Option<setup_header>,
}

/// The guest memory map for `mem_size` bytes of RAM.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: layout::EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: layout::EBDA_START,
            size: layout::HIMEM_START - layout::EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    for range in layout::ram_ranges(mem_size) {
        let start = range.start.max(layout::HIMEM_START);
        let end = range.start + range.size;
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

/// The zero page for a Linux boot-protocol entry.
pub fn zero_page(info: &BootInfo) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params::default();
    if let Some(header) = info.setup_header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.header = HDR_MAGIC;
    params.hdr.loadflags |= LOADED_HIGH;
    // The command line lives below 1 MiB; the conversion cannot lose bits.
    params.hdr.cmd_line_ptr = layout::CMDLINE_START as u32;
    params.hdr.cmdline_size = info.cmdline_len as u32;
    params.hdr.kernel_alignment = layout::KERNEL_ALIGNMENT;
    if let Some(initrd) = info.initrd {
        // The initrd is placed below the MMIO gap, so below 4 GiB.
        params.hdr.ramdisk_image = initrd.addr as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    let map = e820_map(info.mem_size);
    if map.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyE820Entries(map.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

fn memory_error(what: &'static str) -> impl Fn(vm_memory::GuestMemoryError) -> BootParamsError {
    move |source| BootParamsError::Memory { what, source }
}

/// Writes the zero page at [`layout::ZERO_PAGE_START`]; returns its address.
pub fn write_zero_page(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<u64, BootParamsError> {
    let params = zero_page(info)?;
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE_START))
        .map_err(memory_error("zero page"))?;
    Ok(layout::ZERO_PAGE_START)
}

/// Writes `hvm_start_info`, its module list and memory map; returns the start info's address.
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    info: &BootInfo,
) -> Result<u64, BootParamsError> {
    let map = e820_map(info.mem_size);
    let mut start_info = hvm_start_info {
        magic: PVH_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(initrd) = info.initrd {
        let module = hvm_modlist_entry {
            paddr: initrd.addr,
            size: initrd.size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(PVH_MODLIST_START))
            .map_err(memory_error("PVH module list"))?;
        start_info.nr_modules = 1;
        start_info.modlist_paddr = PVH_MODLIST_START;
    }
    let entry_size = std::mem::size_of::<hvm_memmap_table_entry>() as u64;
    for (index, entry) in map.iter().enumerate() {
        let table_entry = hvm_memmap_table_entry {
            addr: entry.addr,
            size: entry.size,
            type_: entry.kind,
            reserved: 0,
        };
        let addr = PVH_MEMMAP_START + index as u64 * entry_size;
        mem.write_obj(table_entry, GuestAddress(addr))
            .map_err(memory_error("PVH memory map"))?;
    }
    mem.write_obj(start_info, GuestAddress(PVH_INFO_START))
        .map_err(memory_error("PVH start info"))?;
    Ok(PVH_INFO_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(mem_size: u64) -> BootInfo {
        BootInfo {
            mem_size,
            cmdline_len: 30,
            initrd: Some(InitrdPlacement {
                addr: 0x7f0_0000,
                size: 0x10_0000,
            }),
            setup_header: None,
        }
    }

    #[test]
    fn e820_skips_legacy_area_and_mmio_gap() {
        let map = e820_map(4 << 30);
        let ram: Vec<(u64, u64)> = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| (e.addr, e.addr + e.size))
            .collect();
        assert_eq!(
            ram,
            vec![
                (0, 0x9fc00),
                (0x10_0000, layout::MMIO_GAP_START),
                (1 << 32, (1 << 32) + (4 << 30) - layout::MMIO_GAP_START)
            ]
        );
        let total: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(
            total,
            (4 << 30) - (layout::HIMEM_START - layout::EBDA_START)
        );
    }

    #[test]
    fn e820_small_memory() {
        let map = e820_map(128 << 20);
        assert_eq!(map.len(), 3);
        assert_eq!(map[2].addr + map[2].size, 128 << 20);
    }

    #[test]
    fn zero_page_fields() {
        let params = zero_page(&info(128 << 20)).unwrap();
        assert_eq!({ params.hdr.header }, HDR_MAGIC);
        assert_eq!({ params.hdr.boot_flag }, 0xaa55);
        assert_eq!({ params.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ params.hdr.cmdline_size }, 30);
        assert_eq!({ params.hdr.ramdisk_image }, 0x7f0_0000);
        assert_eq!({ params.hdr.ramdisk_size }, 0x10_0000);
        assert_eq!(params.e820_entries, 3);
        let last = params.e820_table[2];
        assert_eq!(
            ({ last.addr }, { last.size }),
            (0x10_0000, (128 << 20) - 0x10_0000)
        );
    }

    #[test]
    fn pvh_start_info_is_written() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let addr = write_pvh_start_info(&mem, &info(128 << 20)).unwrap();
        let start: hvm_start_info = mem.read_obj(GuestAddress(addr)).unwrap();
        assert_eq!(start.magic, PVH_MAGIC);
        assert_eq!((start.nr_modules, start.memmap_entries), (1, 3));
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!(module.paddr, 0x7f0_0000);
    }
}
