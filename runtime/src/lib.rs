//! Host side of rvm shared by the `rvm` command line and the containerd shim.

pub mod escape;
pub mod host;
pub mod image;
pub mod jail;
pub mod layer_cache;
pub mod network;
pub mod sandbox;
pub mod vm;
