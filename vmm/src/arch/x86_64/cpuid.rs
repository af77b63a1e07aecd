//! CPUID seen by the guest: KVM's supported set, normalised per vCPU (APIC IDs, topology of one
//! socket with one thread per core, the hypervisor bit and the KVM leaves).

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Errors while building a vCPU's CPUID.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// The CPUID table could not be built.
    #[error("cannot build the CPUID table: {0:?}")]
    Table(vmm_sys_util::fam::Error),
}

/// Hypervisor signature leaf.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// KVM paravirtual feature leaf.
pub const KVM_FEATURE_LEAF: u32 = 0x4000_0001;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_SIZE: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_HTT: u32 = 1 << 28;
/// Topology level types of leaves 0xB/0x1F.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Where this vCPU sits in the VM, and what KVM emulates beyond its supported CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuTopology {
    /// Index of the vCPU, also its APIC ID.
    pub index: u8,
    /// Number of vCPUs in the VM.
    pub count: u8,
    /// The in-kernel local APIC emulates the TSC-deadline timer (KVM_CAP_TSC_DEADLINE_TIMER),
    /// which KVM_GET_SUPPORTED_CPUID does not announce by itself.
    pub tsc_deadline: bool,
}

impl VcpuTopology {
    /// Bits of the APIC ID that number the cores of the package.
    pub fn core_id_bits(&self) -> u32 {
        u32::from(self.count.max(1))
            .next_power_of_two()
            .trailing_zeros()
    }
}

/// Builds the CPUID table of one vCPU from KVM's supported CPUID.
pub fn vcpu_cpuid(supported: &CpuId, topology: VcpuTopology) -> Result<CpuId, CpuidError> {
    let mut entries = supported.as_slice().to_vec();
    normalize(&mut entries, topology);
    CpuId::from_entries(&entries).map_err(CpuidError::Table)
}

/// Rewrites `entries` for the vCPU at `topology`.
pub fn normalize(entries: &mut Vec<kvm_cpuid_entry2>, topology: VcpuTopology) {
    ensure_leaf(entries, HYPERVISOR_LEAF);
    ensure_leaf(entries, KVM_FEATURE_LEAF);
    for entry in entries.iter_mut() {
        match entry.function {
            LEAF_FEATURES => set_features(entry, topology),
            LEAF_CACHE_PARAMS => set_cache_params(entry, topology),
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => set_topology_level(entry, topology),
            LEAF_AMD_SIZE => set_amd_core_count(entry, topology),
            LEAF_AMD_EXT_APIC => set_amd_ext_apic(entry, topology),
            HYPERVISOR_LEAF => set_hypervisor_signature(entry),
            _ => {}
        }
    }
}

fn ensure_leaf(entries: &mut Vec<kvm_cpuid_entry2>, function: u32) {
    if !entries.iter().any(|e| e.function == function) {
        entries.push(kvm_cpuid_entry2 {
            function,
            ..Default::default()
        });
    }
}

fn set_features(entry: &mut kvm_cpuid_entry2, topology: VcpuTopology) {
    let apic_id = u32::from(topology.index) << 24;
    let logical_count = u32::from(topology.count) << 16;
    let clflush = entry.ebx & 0xff00;
    entry.ebx = apic_id | logical_count | clflush;
    entry.ecx |= ECX_HYPERVISOR;
    if topology.tsc_deadline {
        entry.ecx |= ECX_TSC_DEADLINE;
    }
    if topology.count > 1 {
        entry.edx |= EDX_HTT;
    } else {
        entry.edx &= !EDX_HTT;
    }
}

fn set_cache_params(entry: &mut kvm_cpuid_entry2, topology: VcpuTopology) {
    let cores_minus_one = u32::from(topology.count.saturating_sub(1)) & 0x3f;
    let level = (entry.eax >> 5) & 0x7;
    // L1 and L2 belong to one core; L3 is shared by the package.
    let sharing_minus_one = if level >= 3 { cores_minus_one } else { 0 };
    entry.eax = (entry.eax & 0x3fff) | (cores_minus_one << 26) | (sharing_minus_one << 14);
}

fn set_topology_level(entry: &mut kvm_cpuid_entry2, topology: VcpuTopology) {
    entry.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    entry.edx = u32::from(topology.index);
    match entry.index {
        0 => {
            entry.eax = 0;
            entry.ebx = 1;
            entry.ecx = (LEVEL_SMT << 8) | entry.index;
        }
        1 => {
            entry.eax = topology.core_id_bits();
            entry.ebx = u32::from(topology.count);
            entry.ecx = (LEVEL_CORE << 8) | entry.index;
        }
        _ => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = entry.index;
        }
    }
}

fn set_amd_core_count(entry: &mut kvm_cpuid_entry2, topology: VcpuTopology) {
    let cores_minus_one = u32::from(topology.count.saturating_sub(1));
    entry.ecx = (entry.ecx & !0xf0ff) | (topology.core_id_bits() << 12) | cores_minus_one;
}

fn set_amd_ext_apic(entry: &mut kvm_cpuid_entry2, topology: VcpuTopology) {
    entry.eax = u32::from(topology.index);
    // One thread per core: ThreadsPerCore (bits 15:8) is 0, the core ID is the vCPU index.
    entry.ebx = u32::from(topology.index);
    entry.ecx = 0;
}

fn set_hypervisor_signature(entry: &mut kvm_cpuid_entry2) {
    entry.eax = KVM_FEATURE_LEAF;
    [entry.ebx, entry.ecx, entry.edx] = KVM_SIGNATURE;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xdead_0800,
            edx: 0xffff_ffff,
            ..Default::default()
        }
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    fn normalized(index: u8, count: u8) -> Vec<kvm_cpuid_entry2> {
        let mut entries = vec![
            leaf(1, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x1f, 1),
            leaf(0x8000_0008, 0),
        ];
        let topology = VcpuTopology {
            index,
            count,
            tsc_deadline: true,
        };
        normalize(&mut entries, topology);
        entries
    }

    #[test]
    fn leaf_1_carries_apic_id_and_count() {
        let entries = normalized(3, 4);
        let features = find(&entries, 1, 0);
        assert_eq!(features.ebx >> 24, 3);
        assert_eq!((features.ebx >> 16) & 0xff, 4);
        assert_eq!(features.ebx & 0xff00, 0x0800);
        assert_ne!(features.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(features.ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(features.edx & EDX_HTT, 0);
        assert_eq!(find(&normalized(0, 1), 1, 0).edx & EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_has_x2apic_ids_and_core_level() {
        let entries = normalized(2, 3);
        for function in [0xb, 0x1f] {
            let core = find(&entries, function, 1);
            assert_eq!(core.edx, 2);
            assert_eq!(core.eax, 2, "3 vCPUs need 2 bits of core ID");
            assert_eq!(core.ebx, 3);
            assert_eq!(core.ecx >> 8, LEVEL_CORE);
        }
        let smt = find(&entries, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8), (0, 1, LEVEL_SMT));
        let end = find(&entries, 0xb, 2);
        assert_eq!((end.ebx, end.ecx), (0, 2));
    }

    #[test]
    fn hypervisor_leaves_say_kvm() {
        let entries = normalized(0, 1);
        let sig = find(&entries, HYPERVISOR_LEAF, 0);
        let mut text = Vec::new();
        for reg in [sig.ebx, sig.ecx, sig.edx] {
            text.extend_from_slice(&reg.to_le_bytes());
        }
        assert_eq!(&text, b"KVMKVMKVM\0\0\0");
        assert_eq!(sig.eax, KVM_FEATURE_LEAF);
        assert!(entries.iter().any(|e| e.function == KVM_FEATURE_LEAF));
    }

    #[test]
    fn amd_core_count() {
        let entries = normalized(0, 2);
        let size = find(&entries, 0x8000_0008, 0);
        assert_eq!(size.ecx & 0xff, 1);
        assert_eq!((size.ecx >> 12) & 0xf, 1);
    }
}
