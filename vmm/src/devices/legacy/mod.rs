//! Legacy PC devices emulated in the VMM: COM1 and the i8042 reset line.

pub mod i8042;
pub mod serial;
