//! The boot GDT: flat code, data and TSS descriptors, and their KVM segment form.

use kvm_bindings::kvm_segment;

/// Index of the 64-bit code segment in [`BOOT_GDT`].
pub const CODE64_INDEX: u16 = 1;
/// Index of the data segment in [`BOOT_GDT`].
pub const DATA_INDEX: u16 = 2;
/// Index of the TSS descriptor in [`BOOT_GDT`].
pub const TSS_INDEX: u16 = 3;
/// Index of the 32-bit code segment in [`BOOT_GDT`] (PVH entry).
pub const CODE32_INDEX: u16 = 4;

/// Access (low byte) and flags (high nibble) of each boot descriptor, as `flags << 12 | access`.
const NULL: u16 = 0;
/// Present, ring 0, code, execute/read, accessed; L=1 (64-bit), G=1.
const CODE64: u16 = 0xa09b;
/// Present, ring 0, data, read/write, accessed; D/B=1, G=1.
const DATA: u16 = 0xc093;
/// Present, ring 0, system, 64-bit TSS (busy).
const TSS: u16 = 0x808b;
/// Present, ring 0, code, execute/read, accessed; D=1 (32-bit), G=1.
const CODE32: u16 = 0xc09b;

/// The boot GDT, flat segments with a 4 GiB limit.
pub const BOOT_GDT: [u64; 5] = [
    gdt_entry(NULL, 0, 0),
    gdt_entry(CODE64, 0, 0xfffff),
    gdt_entry(DATA, 0, 0xfffff),
    gdt_entry(TSS, 0, 0xfffff),
    gdt_entry(CODE32, 0, 0xfffff),
];

/// Packs a segment descriptor from `flags` (`flags << 12 | access`), `base` and `limit`.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0x0000_f0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

fn entry_base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn entry_limit(entry: u64) -> u32 {
    // Truncation is intended: the limit is 20 bits.
    (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32
}

fn entry_bit(entry: u64, bit: u32) -> u8 {
    u8::from(entry & (1 << bit) != 0)
}

/// The KVM segment register value for GDT entry `index` of `table`.
pub fn kvm_segment_from_gdt(table: &[u64], index: u16) -> kvm_segment {
    let entry = table.get(usize::from(index)).copied().unwrap_or(0);
    let granular = entry_bit(entry, 55) == 1;
    let raw_limit = entry_limit(entry);
    let limit = if granular {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base: entry_base(entry),
        limit,
        selector: index * 8,
        // Bits 40-43: segment type. Truncation to 4 bits is intended.
        type_: ((entry >> 40) & 0xf) as u8,
        present: entry_bit(entry, 47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: entry_bit(entry, 54),
        s: entry_bit(entry, 44),
        l: entry_bit(entry, 53),
        g: entry_bit(entry, 55),
        avl: entry_bit(entry, 52),
        padding: 0,
        unusable: u8::from(entry_bit(entry, 47) == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_segment_is_long_mode_flat() {
        let seg = kvm_segment_from_gdt(&BOOT_GDT, CODE64_INDEX);
        assert_eq!(seg.selector, 0x8);
        assert_eq!((seg.base, seg.limit), (0, 0xffff_ffff));
        assert_eq!((seg.l, seg.db, seg.g, seg.present, seg.s), (1, 0, 1, 1, 1));
        assert_eq!(seg.type_, 0xb);
    }

    #[test]
    fn data_and_tss_segments() {
        let data = kvm_segment_from_gdt(&BOOT_GDT, DATA_INDEX);
        assert_eq!(
            (data.selector, data.type_, data.db, data.l),
            (0x10, 3, 1, 0)
        );
        let tss = kvm_segment_from_gdt(&BOOT_GDT, TSS_INDEX);
        assert_eq!((tss.selector, tss.type_, tss.s), (0x18, 0xb, 0));
    }

    #[test]
    fn entry_round_trips_base_and_limit() {
        let entry = gdt_entry(DATA, 0x1234_5678, 0xabcde);
        assert_eq!(entry_base(entry), 0x1234_5678);
        assert_eq!(entry_limit(entry), 0xabcde);
    }

    #[test]
    fn missing_entry_is_unusable() {
        let seg = kvm_segment_from_gdt(&BOOT_GDT, 40);
        assert_eq!((seg.present, seg.unusable), (0, 1));
    }
}
