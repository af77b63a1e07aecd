//! virtio-net on a TAP interface: [`device::Net`] (features, configuration space, worker),
//! [`tap`] (the host side), [`frame`] (the vnet header and transmit-chain parser, fuzzed
//! through [`fuzzing`]), [`rx`] and [`tx`] (the two directions).

pub mod device;
pub mod features;
pub mod frame;
pub mod fuzzing;
pub mod rx;
pub mod tap;
pub mod tx;

pub use device::{generated_mac, Net};
pub use tap::{Tap, TapError};

#[cfg(test)]
mod test_util;
