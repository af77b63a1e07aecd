//! rvm-agent: the guest's PID 1 (kernel filesystems, reaping, power) and the in-guest container
//! engine, served to the host over ttrpc.

pub mod disks;
pub mod engine;
pub mod helper;
pub mod init;
pub mod reaper;
pub mod server;
