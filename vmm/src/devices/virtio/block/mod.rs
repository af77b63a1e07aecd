//! virtio-blk: a raw image file as a guest block device. [`disk`] opens and sizes the backing
//! file, [`request`] turns a descriptor chain into a typed request (the fuzzed parser), [`io`]
//! executes it against the file, and [`device`] is the device model and its queue worker.

pub mod device;
pub mod disk;
pub mod fuzzing;
pub mod io;
pub mod request;

pub use device::Block;
pub use disk::{DiskError, DiskImage};
