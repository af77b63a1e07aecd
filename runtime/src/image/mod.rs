//! Container images on the host: the content-addressed store, references, manifests, archive
//! import, registry pulls, garbage collection, safe layer unpacking and the erofs layer disks
//! built from the layers.

pub mod archive;
pub mod catalog;
pub mod compression;
pub mod digest;
pub mod disk;
pub mod gc;
pub mod install;
pub mod layer;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod store;

mod fsutil;

pub use digest::Digest;
pub use manifest::{ImageConfig, Platform, ResolvedImage};
pub use reference::Reference;
pub use store::Store;
