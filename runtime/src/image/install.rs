//! Making a stored image runnable, shared by `pull` and `load`: resolve it for the platform and
//! build the layer disks it lacks, all or nothing (disks built by a failed attempt are removed).

use super::digest::Digest;
use super::disk::{self, DiskError, LayerDisk};
use super::manifest::{self, ManifestError, Platform, ResolvedImage};
use super::store::Store;

/// Why a stored image cannot be made runnable.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// An image ready to run: resolved, with a disk per layer (bottom first).
#[derive(Debug, Clone)]
pub struct InstalledImage {
    pub image: ResolvedImage,
    pub disks: Vec<LayerDisk>,
}

/// Resolves `top` (a manifest or index in the store) for `platform` and builds its missing
/// layer disks. On failure the disks this call built are removed again.
pub fn install(
    store: &Store,
    top: &Digest,
    platform: &Platform,
) -> Result<InstalledImage, InstallError> {
    let image = manifest::resolve(store, top, platform)?;
    let mut disks = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        match disk::ensure_layer_disk(store, layer) {
            Ok(built) => disks.push(built),
            Err(err) => {
                for built in disks.iter().filter(|d| d.created) {
                    if let Err(remove) = disk::remove_layer_disk(store, &built.diff_id) {
                        tracing::warn!(path = %built.path.display(), %remove, "cannot remove layer disk");
                    }
                }
                return Err(err.into());
            }
        }
    }
    Ok(InstalledImage { image, disks })
}
