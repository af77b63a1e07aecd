//! The Intel MultiProcessor Specification 1.4 table that tells a guest without ACPI its CPUs,
//! its IOAPIC and how ISA interrupts are wired.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;

/// Errors while writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// More vCPUs than the table and the APIC ID space allow.
    #[error("the MP table cannot describe {0} vCPUs (at most {MAX_VCPUS})")]
    TooManyVcpus(u8),
    /// The table does not fit in the EBDA.
    #[error("the MP table ({0} bytes) does not fit in the EBDA")]
    TooLarge(usize),
    /// Guest memory refused the write.
    #[error("cannot write the MP table to guest memory: {0}")]
    Memory(vm_memory::GuestMemoryError),
}

/// Most vCPUs the table may list.
pub const MAX_VCPUS: u8 = 32;
/// Pins of the in-kernel IOAPIC.
pub const IOAPIC_PINS: u8 = 24;

const SPEC_REVISION: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const CPU_ENABLED: u8 = 1;
const CPU_BOOT_PROCESSOR: u8 = 2;
const IRQ_TYPE_INT: u8 = 0;
const IRQ_TYPE_NMI: u8 = 1;
const IRQ_TYPE_EXTINT: u8 = 3;
/// Family 6 in the CPU signature; FPU and APIC in the feature flags.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const ISA_BUS_ID: u8 = 0;
const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;
/// Space from the MP table start to the end of the EBDA / start of the VGA hole.
const EBDA_SPACE: usize = 0x400;

/// Sum of `bytes` modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// The value that makes the byte sum of a structure zero.
fn balancing_byte(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(checksum(bytes))
}

/// IOAPIC ID: the first ID after the vCPUs' APIC IDs.
fn ioapic_id(vcpus: u8) -> u8 {
    vcpus
}

fn processor_entry(apic_id: u8) -> Vec<u8> {
    let mut flags = CPU_ENABLED;
    if apic_id == 0 {
        flags |= CPU_BOOT_PROCESSOR;
    }
    let mut entry = vec![ENTRY_PROCESSOR, apic_id, APIC_VERSION, flags];
    entry.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
    entry.extend_from_slice(&CPU_FEATURES.to_le_bytes());
    entry.extend_from_slice(&[0; 8]);
    entry
}

fn bus_entry() -> Vec<u8> {
    let mut entry = vec![ENTRY_BUS, ISA_BUS_ID];
    entry.extend_from_slice(b"ISA   ");
    entry
}

fn ioapic_entry(id: u8) -> Vec<u8> {
    let mut entry = vec![ENTRY_IOAPIC, id, IOAPIC_VERSION, CPU_ENABLED];
    // The IOAPIC sits below 4 GiB; the conversion cannot lose bits.
    entry.extend_from_slice(&(layout::IOAPIC_START as u32).to_le_bytes());
    entry
}

fn io_interrupt_entry(ioapic: u8, irq: u8) -> Vec<u8> {
    // Flags 0: polarity and trigger conform to the bus (ISA: active high, edge).
    vec![
        ENTRY_IO_INTERRUPT,
        IRQ_TYPE_INT,
        0,
        0,
        ISA_BUS_ID,
        irq,
        ioapic,
        irq,
    ]
}

fn local_interrupt_entry(irq_type: u8, dest_apic: u8, lint: u8) -> Vec<u8> {
    vec![
        ENTRY_LOCAL_INTERRUPT,
        irq_type,
        0,
        0,
        ISA_BUS_ID,
        0,
        dest_apic,
        lint,
    ]
}

/// The entries of the configuration table and their count.
fn config_entries(vcpus: u8) -> (Vec<u8>, u16) {
    let mut entries = Vec::new();
    let mut count = 0u16;
    let mut push = |entry: Vec<u8>| {
        entries.extend_from_slice(&entry);
        count += 1;
    };
    for apic_id in 0..vcpus {
        push(processor_entry(apic_id));
    }
    push(bus_entry());
    push(ioapic_entry(ioapic_id(vcpus)));
    for irq in 0..IOAPIC_PINS {
        push(io_interrupt_entry(ioapic_id(vcpus), irq));
    }
    // The legacy PIC reaches the boot CPU through LINT0; NMIs go to every CPU's LINT1.
    push(local_interrupt_entry(IRQ_TYPE_EXTINT, 0, 0));
    push(local_interrupt_entry(IRQ_TYPE_NMI, 0xff, 1));
    (entries, count)
}

fn config_header(table_len: u16, entry_count: u16) -> Vec<u8> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&table_len.to_le_bytes());
    header.push(SPEC_REVISION);
    header.push(0); // checksum, filled in later
    header.extend_from_slice(b"RVM     ");
    header.extend_from_slice(b"RVM MICROVM ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&entry_count.to_le_bytes());
    // The local APIC sits below 4 GiB; the conversion cannot lose bits.
    header.extend_from_slice(&(layout::APIC_START as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    header
}

fn floating_pointer(config_addr: u32) -> Vec<u8> {
    let mut pointer = Vec::with_capacity(FLOATING_POINTER_LEN);
    pointer.extend_from_slice(b"_MP_");
    pointer.extend_from_slice(&config_addr.to_le_bytes());
    pointer.push(1); // length in 16-byte units
    pointer.push(SPEC_REVISION);
    pointer.push(0); // checksum, filled in later
    pointer.extend_from_slice(&[0; 5]); // features: a configuration table is present
    pointer[10] = balancing_byte(&pointer);
    pointer
}

/// The MP floating pointer followed by the configuration table, as placed at `base`.
pub fn mptable_bytes(base: u32, vcpus: u8) -> Result<Vec<u8>, MptableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MptableError::TooManyVcpus(vcpus));
    }
    let (entries, count) = config_entries(vcpus);
    let table_len = HEADER_LEN + entries.len();
    let table_len_u16 = u16::try_from(table_len).map_err(|_| MptableError::TooLarge(table_len))?;
    let mut table = config_header(table_len_u16, count);
    table.extend_from_slice(&entries);
    table[7] = balancing_byte(&table);

    let config_addr = base + FLOATING_POINTER_LEN as u32;
    let mut bytes = floating_pointer(config_addr);
    bytes.extend_from_slice(&table);
    if bytes.len() > EBDA_SPACE {
        return Err(MptableError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// Writes the MP table for `vcpus` vCPUs at [`layout::MPTABLE_START`].
pub fn write_mptable(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MptableError> {
    // The MP table is in the first MiB; the conversion cannot lose bits.
    let bytes = mptable_bytes(layout::MPTABLE_START as u32, vcpus)?;
    mem.write_slice(&bytes, GuestAddress(layout::MPTABLE_START))
        .map_err(MptableError::Memory)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u32 = layout::MPTABLE_START as u32;

    #[test]
    fn floating_pointer_and_table_checksums_are_zero() {
        for vcpus in [1, 2, 7, MAX_VCPUS] {
            let bytes = mptable_bytes(BASE, vcpus).unwrap();
            assert_eq!(&bytes[..4], b"_MP_");
            assert_eq!(checksum(&bytes[..16]), 0);
            let table = &bytes[16..];
            assert_eq!(&table[..4], b"PCMP");
            let len = usize::from(u16::from_le_bytes([table[4], table[5]]));
            assert_eq!(len, table.len());
            assert_eq!(checksum(table), 0, "{vcpus} vCPUs");
        }
    }

    #[test]
    fn pointer_leads_to_table() {
        let bytes = mptable_bytes(BASE, 2).unwrap();
        let physptr = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        assert_eq!(physptr, BASE + 16);
    }

    #[test]
    fn lists_each_cpu_with_the_first_as_boot_processor() {
        let bytes = mptable_bytes(BASE, 3).unwrap();
        let table = &bytes[16..];
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 3 + 1 + 1 + u16::from(IOAPIC_PINS) + 2);
        let cpus: Vec<&[u8]> = table[HEADER_LEN..].chunks(20).take(3).collect();
        for (id, cpu) in cpus.iter().enumerate() {
            assert_eq!(cpu[0], ENTRY_PROCESSOR);
            assert_eq!(usize::from(cpu[1]), id);
        }
        assert_eq!(cpus[0][3], CPU_ENABLED | CPU_BOOT_PROCESSOR);
        assert_eq!(cpus[1][3], CPU_ENABLED);
    }

    #[test]
    fn rejects_zero_and_too_many_vcpus() {
        assert!(matches!(
            mptable_bytes(BASE, 0),
            Err(MptableError::TooManyVcpus(0))
        ));
        assert!(mptable_bytes(BASE, MAX_VCPUS + 1).is_err());
        assert!(mptable_bytes(BASE, MAX_VCPUS).unwrap().len() <= EBDA_SPACE);
    }
}
