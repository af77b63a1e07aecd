//! Guest RAM: anonymous mappings laid out around the MMIO gap and registered as KVM memory slots.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout;

/// Errors while creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The mappings could not be created.
    #[error("cannot map {size} bytes of guest memory: {source}")]
    Map {
        /// Requested size.
        size: u64,
        /// Why.
        source: vm_memory::mmap::FromRangesError,
    },
    /// A size does not fit the host's address space.
    #[error("guest memory size {0} does not fit the host address space")]
    TooLarge(u64),
    /// KVM refused a memory slot.
    #[error("cannot register guest memory slot {slot} with KVM: {source}")]
    Slot {
        /// Slot number.
        slot: u32,
        /// The ioctl's error.
        source: kvm_ioctls::Error,
    },
}

/// Maps `size` bytes of guest RAM, split around the MMIO gap.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges = layout::ram_ranges(size)
        .into_iter()
        .map(|r| {
            usize::try_from(r.size)
                .map(|len| (GuestAddress(r.start), len))
                .map_err(|_| MemoryError::TooLarge(r.size))
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Map { size, source })
}

/// Registers every region of `mem` as a KVM memory slot, numbered from 0.
pub fn register_with_kvm(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let host_address = region.as_ptr() as u64;
        let slot_region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host_address,
        };
        // SAFETY: the host range [userspace_addr, +memory_size) is a live mapping owned by
        // `mem`, and the caller keeps `mem` alive as long as the VM (the `Vm` owns both and
        // drops the VM file descriptor first). Slots do not overlap: regions of one
        // GuestMemoryMmap are disjoint and each gets its own slot number.
        unsafe { vm.set_user_memory_region(slot_region) }
            .map_err(|source| MemoryError::Slot { slot, source })?;
    }
    Ok(())
}

/// Total bytes of guest RAM.
pub fn total_size(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// Whether `addr` is backed by guest RAM.
pub fn is_ram(mem: &GuestMemoryMmap, addr: u64) -> bool {
    mem.address_in_range(GuestAddress(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_split_around_the_gap() {
        let mem = create_guest_memory(64 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(total_size(&mem), 64 << 20);
        assert!(is_ram(&mem, 0));
        assert!(!is_ram(&mem, 64 << 20));
    }
}
