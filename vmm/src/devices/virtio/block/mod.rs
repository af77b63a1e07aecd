//! virtio-blk: a raw image file as a guest block device. [`disk`] opens and sizes the backing
//! file, [`request`] turns a descriptor chain into a typed request (the fuzzed parser), [`io`]
//! executes it against the file, [`slot`] holds what the device serves now (swapped at run
//! time for `--disk-slots`), and [`device`] is the device model and its queue worker.

pub mod device;
pub mod disk;
pub mod fuzzing;
pub mod io;
pub mod request;
pub mod slot;

pub use device::Block;
pub use disk::{DiskError, DiskImage};
pub use slot::{Backing, DiskSlot, ImageError, SlotError};
