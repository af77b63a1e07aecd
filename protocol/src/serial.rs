//! The virtio-blk serials by which the host names the disks it gives a VM and the agent finds
//! them (`/sys/block/vd*/serial`). The host makes them with the functions here; the agent
//! takes a serial from a request, checks it with [`is_valid_serial`] (it becomes a directory
//! name) and looks the disk up by it.
//!
//! Invariant: every serial made here is valid and at most [`MAX_SERIAL_LEN`] bytes, so the
//! device never cuts it off and the agent finds the disk under the very name it was sent.

use sha2::{Digest, Sha256};

/// virtio-blk serials hold at most 20 bytes (`VIRTIO_BLK_ID_BYTES`); longer ones are cut off.
pub const MAX_SERIAL_LEN: usize = 20;

/// The serial of a container's writable ext4 scratch disk.
pub const SCRATCH_SERIAL: &str = "rvm-scratch";

/// The serial of layer disk `index` (bottom layer 0) of a VM of its own; fits for any index
/// below 10^10.
pub fn layer_serial(index: usize) -> String {
    format!("rvm-layer-{index}")
}

/// The serial of volume disk `index` (`rvm run -v NAME:/path`); fits for any index below 10^12.
pub fn volume_serial(index: usize) -> String {
    format!("rvm-vol-{index}")
}

/// The serial of the disk that is host block device `index` (`rvm run --device`); fits for any
/// index below 10^12.
pub fn device_serial(index: usize) -> String {
    format!("rvm-dev-{index}")
}

/// The serial of a layer disk on a pod VM's disk slot: derived from the layer's cache key, so a
/// layer shared by two containers of the pod has one serial (and one slot); 56 bits of the
/// key's SHA-256 keep it within [`MAX_SERIAL_LEN`].
pub fn slot_serial(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(7).map(|b| format!("{b:02x}")).collect();
    format!("rvm-s-{hex}")
}

/// Whether `serial` is one the agent accepts: 1 to [`MAX_SERIAL_LEN`] bytes of letters,
/// digits, '-', '_' and '.', and not "." or ".." (it becomes a directory name).
pub fn is_valid_serial(serial: &str) -> bool {
    !serial.is_empty()
        && serial.len() <= MAX_SERIAL_LEN
        && serial != "."
        && serial != ".."
        && serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_serial_fits_virtio_and_is_valid() {
        let serials = [
            SCRATCH_SERIAL.to_owned(),
            layer_serial(0),
            layer_serial(9_999_999_999),
            volume_serial(0),
            volume_serial(999_999_999_999),
            device_serial(0),
            device_serial(999_999_999_999),
            slot_serial(""),
            slot_serial(&"k".repeat(4096)),
        ];
        for serial in serials {
            assert!(serial.len() <= MAX_SERIAL_LEN, "{serial}");
            assert!(is_valid_serial(&serial), "{serial}");
        }
    }

    #[test]
    fn slot_serials_follow_the_layer() {
        let a = slot_serial("0123456789abcdef0123456789abcdef");
        assert_eq!(a.len(), MAX_SERIAL_LEN, "{a}");
        assert_eq!(a, slot_serial("0123456789abcdef0123456789abcdef"));
        assert_ne!(a, slot_serial("other"));
    }

    #[test]
    fn kinds_of_disk_never_share_a_serial() {
        assert_ne!(layer_serial(0), volume_serial(0));
        assert_ne!(device_serial(0), volume_serial(0));
        assert_ne!(device_serial(0), layer_serial(0));
        assert!(!slot_serial("0").starts_with(&layer_serial(0)));
        assert_ne!(layer_serial(0), SCRATCH_SERIAL);
    }

    #[test]
    fn bad_serials_are_refused() {
        let too_long = "x".repeat(MAX_SERIAL_LEN + 1);
        for serial in ["", ".", "..", "a/b", "x y", "é", too_long.as_str()] {
            assert!(!is_valid_serial(serial), "{serial:?}");
        }
        assert!(is_valid_serial("layer-0_a.b"));
    }
}
