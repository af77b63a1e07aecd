//! Puts a kernel, its initrd and its command line into guest memory and says how to enter it.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{self, BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::boot_params::{self, BootInfo, InitrdPlacement};
use crate::arch::x86_64::{layout, BootEntry, BootProtocol};
use crate::config::KernelFormat;
use crate::vstate::memory;

/// Errors while loading the guest's boot files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file cannot be opened or read.
    #[error("{path}: {source}")]
    File {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// linux-loader rejected the kernel image.
    #[error("--kernel {path}: {source}")]
    Kernel {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: loader::Error,
    },
    /// A bzImage without a 64-bit entry point.
    #[error("--kernel {0}: this bzImage has no 64-bit entry point")]
    Not64Bit(PathBuf),
    /// The initrd does not fit between the kernel and the MMIO gap.
    #[error("--initrd {path}: {size} bytes do not fit in guest RAM above the kernel")]
    InitrdTooLarge {
        /// Which file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The initrd could not be copied into guest memory.
    #[error("--initrd {path}: cannot copy into guest memory: {source}")]
    InitrdCopy {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
    /// The command line could not be written.
    #[error("cannot write the kernel command line: {0}")]
    Cmdline(loader::Error),
    /// The zero page or start info could not be written.
    #[error(transparent)]
    BootParams(#[from] boot_params::BootParamsError),
}

/// What we boot.
#[derive(Debug)]
pub struct BootFiles<'a> {
    /// Kernel path.
    pub kernel: &'a Path,
    /// Its format.
    pub format: KernelFormat,
    /// Initrd, if any.
    pub initrd: Option<&'a Path>,
    /// Command line.
    pub cmdline: &'a Cmdline,
    /// Prefer the PVH entry point of an ELF kernel.
    pub pvh: bool,
}

/// A kernel image in guest memory.
#[derive(Debug)]
struct LoadedKernel {
    entry: GuestAddress,
    protocol: BootProtocol,
    end: u64,
    setup_header: Option<setup_header>,
}

fn open(path: &Path) -> Result<File, LoadError> {
    File::open(path).map_err(|source| LoadError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// `xloadflags` bit: the kernel has a 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 0x1;
/// Offset of the 64-bit entry point in a bzImage's protected-mode part.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

fn load_kernel_image(
    mem: &GuestMemoryMmap,
    files: &BootFiles<'_>,
) -> Result<LoadedKernel, LoadError> {
    let mut image = open(files.kernel)?;
    let kernel_error = |source| LoadError::Kernel {
        path: files.kernel.to_path_buf(),
        source,
    };
    let himem = Some(GuestAddress(layout::HIMEM_START));
    match files.format {
        KernelFormat::Elf => {
            let result = Elf::load(mem, None, &mut image, himem).map_err(kernel_error)?;
            let (entry, protocol) = match result.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) if files.pvh => (addr, BootProtocol::Pvh),
                _ => (result.kernel_load, BootProtocol::Linux64),
            };
            Ok(LoadedKernel {
                entry,
                protocol,
                end: result.kernel_end,
                setup_header: None,
            })
        }
        KernelFormat::BzImage => {
            let result = BzImage::load(mem, None, &mut image, himem).map_err(kernel_error)?;
            let header = result.setup_header;
            if header.is_none_or(|h| h.xloadflags & XLF_KERNEL_64 == 0) {
                return Err(LoadError::Not64Bit(files.kernel.to_path_buf()));
            }
            Ok(LoadedKernel {
                entry: GuestAddress(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
                protocol: BootProtocol::Linux64,
                end: result.kernel_end,
                setup_header: header,
            })
        }
    }
}

/// Where an initrd of `size` bytes goes: at the top of the RAM below the MMIO gap, page
/// aligned down, above the kernel.
pub fn initrd_placement(mem_size: u64, kernel_end: u64, size: u64) -> Option<InitrdPlacement> {
    let top = layout::low_ram_end(mem_size);
    let addr = top.checked_sub(size)? & !(layout::PAGE_SIZE - 1);
    if addr < kernel_end.max(layout::HIMEM_START) {
        return None;
    }
    Some(InitrdPlacement { addr, size })
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<InitrdPlacement, LoadError> {
    let mut file = open(path)?;
    let size = file
        .metadata()
        .map_err(|source| LoadError::File {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let too_large = || LoadError::InitrdTooLarge {
        path: path.to_path_buf(),
        size,
    };
    let placement =
        initrd_placement(memory::total_size(mem), kernel_end, size).ok_or_else(too_large)?;
    let count = usize::try_from(size).map_err(|_| too_large())?;
    mem.read_exact_volatile_from(GuestAddress(placement.addr), &mut file, count)
        .map_err(|source| LoadError::InitrdCopy {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(placement)
}

/// Loads kernel, initrd and command line, writes the zero page or PVH start info, and returns
/// the entry of the boot vCPU.
pub fn load_boot_files(
    mem: &GuestMemoryMmap,
    files: &BootFiles<'_>,
) -> Result<BootEntry, LoadError> {
    let kernel = load_kernel_image(mem, files)?;
    let initrd = match files.initrd {
        Some(path) => Some(load_initrd(mem, path, kernel.end)?),
        None => None,
    };
    loader::load_cmdline(mem, GuestAddress(layout::CMDLINE_START), files.cmdline)
        .map_err(LoadError::Cmdline)?;
    let cmdline_len = files
        .cmdline
        .as_cstring()
        .map(|c| c.as_bytes().len())
        .unwrap_or(0);
    let info = BootInfo {
        mem_size: memory::total_size(mem),
        cmdline_len,
        initrd,
        setup_header: kernel.setup_header,
    };
    let boot_info = match kernel.protocol {
        BootProtocol::Linux64 => boot_params::write_zero_page(mem, &info)?,
        BootProtocol::Pvh => boot_params::write_pvh_start_info(mem, &info)?,
    };
    tracing::info!(
        "{}: {:?} entry at {:#x}, initrd {:?}",
        files.kernel.display(),
        kernel.protocol,
        kernel.entry.0,
        initrd
    );
    Ok(BootEntry {
        entry: kernel.entry,
        protocol: kernel.protocol,
        boot_info,
    })
}

/// Copies raw 64-bit code to `addr` and returns an entry at its first byte, for guests that
/// are not Linux (the VMM's own tests).
pub fn load_raw_code(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    code: &[u8],
) -> Result<BootEntry, vm_memory::GuestMemoryError> {
    mem.write_slice(code, addr)?;
    Ok(BootEntry {
        entry: addr,
        protocol: BootProtocol::Linux64,
        boot_info: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_goes_to_the_top_of_low_ram_page_aligned() {
        let placement = initrd_placement(128 << 20, 0x200_0000, 0x1234).unwrap();
        assert_eq!(placement.addr, (128 << 20) - 0x2000);
        assert_eq!(placement.addr % 0x1000, 0);
        assert!(placement.addr + placement.size <= 128 << 20);
    }

    #[test]
    fn initrd_stays_below_the_mmio_gap() {
        let placement = initrd_placement(8 << 30, 0x200_0000, 0x1000).unwrap();
        assert_eq!(placement.addr, layout::MMIO_GAP_START - 0x1000);
    }

    #[test]
    fn initrd_must_not_overlap_the_kernel() {
        assert!(initrd_placement(64 << 20, 60 << 20, 8 << 20).is_none());
        assert!(initrd_placement(64 << 20, 0, 128 << 20).is_none());
    }
}
