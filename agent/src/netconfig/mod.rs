//! The guest side of bridge networking (ConfigureNetwork): the interface, addresses and routes
//! set through netlink ([`link`]), and the `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`
//! written into each container's rootfs ([`files`]).

pub mod files;
pub mod link;

pub use files::NetworkFiles;
pub use link::{apply, LinkError};
