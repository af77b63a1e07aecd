//! Garbage collection of the store: which blobs and layer disks the named images still use,
//! `rmi` (drop names, then the content only they used) and `system prune` (drop everything no
//! name uses, and temporary files of dead processes). Layer disks are pruned by the layer cache's
//! one policy ([`LayerCache::prune`](crate::layer_cache::LayerCache::prune)); this module says
//! which image layers are gone, under the store's exclusive lock.

use std::collections::BTreeSet;
use std::fs;

use super::digest::Digest;
use super::disk;
use super::manifest::{self, ImageConfig, Manifest, ManifestError};
use super::reference::Reference;
use super::store::{Store, StoreError};
use crate::layer_cache::{ImageLayer, LayerCacheError, Liveness};

/// A failure while collecting garbage, naming the image or file.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    LayerCache(#[from] LayerCacheError),
    #[error("image {image}: {source}")]
    Image {
        image: String,
        source: Box<ManifestError>,
    },
}

type Result<T> = std::result::Result<T, GcError>;

/// Content reachable from names.
#[derive(Debug, Default, Clone)]
pub struct Reachable {
    pub blobs: BTreeSet<Digest>,
    /// diff_ids of the layers: the names of their disks.
    pub diff_ids: BTreeSet<Digest>,
}

/// What was removed and how many bytes that freed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub blobs: Vec<Digest>,
    pub disks: Vec<Digest>,
    pub temp_entries: usize,
    pub bytes: u64,
}

/// Everything the image `top` (manifest or index) uses that is in the store: all platforms'
/// manifests of an index that are present, configs and layers.
pub fn reachable_from(store: &Store, image: &str, top: &Digest) -> Result<Reachable> {
    let mut reachable = Reachable::default();
    walk(store, image, top, None, 0, &mut reachable)?;
    Ok(reachable)
}

fn walk(
    store: &Store,
    image: &str,
    digest: &Digest,
    media_type: Option<&str>,
    depth: usize,
    reachable: &mut Reachable,
) -> Result<()> {
    if depth > 4 || !store.has_blob(digest) || !reachable.blobs.insert(digest.clone()) {
        return Ok(());
    }
    let image_err = |source: ManifestError| GcError::Image {
        image: image.to_owned(),
        source: Box::new(source),
    };
    let bytes = store.read_blob(digest)?;
    match Manifest::parse(digest, &bytes, media_type).map_err(image_err)? {
        Manifest::Index(index) => {
            for child in index.manifests() {
                let child_digest = manifest::descriptor_digest(child, digest).map_err(image_err)?;
                let child_type = child.media_type().to_string();
                walk(
                    store,
                    image,
                    &child_digest,
                    Some(&child_type),
                    depth + 1,
                    reachable,
                )?;
            }
        }
        Manifest::Image(manifest) => {
            let config =
                manifest::descriptor_digest(manifest.config(), digest).map_err(image_err)?;
            if store.has_blob(&config) {
                let bytes = store.read_blob(&config)?;
                let parsed = ImageConfig::parse(&config, &bytes).map_err(image_err)?;
                reachable.diff_ids.extend(parsed.diff_ids);
                reachable.blobs.insert(config);
            }
            for layer in manifest.layers() {
                reachable
                    .blobs
                    .insert(manifest::descriptor_digest(layer, digest).map_err(image_err)?);
            }
        }
    }
    Ok(())
}

/// Everything any name in the store uses.
pub fn reachable(store: &Store) -> Result<Reachable> {
    let mut all = Reachable::default();
    for (name, top) in store.images()? {
        let one = reachable_from(store, &name, &top)?;
        all.blobs.extend(one.blobs);
        all.diff_ids.extend(one.diff_ids);
    }
    Ok(all)
}

/// Removes the names, then whatever of their content no remaining name uses.
pub fn remove_images(store: &Store, names: &[Reference]) -> Result<Removed> {
    let _lock = store.lock_exclusive()?;
    let mut candidates = Reachable::default();
    for name in names {
        if let Some(top) = store.resolve(name)? {
            let one = reachable_from(store, &name.to_string(), &top)?;
            candidates.blobs.extend(one.blobs);
            candidates.diff_ids.extend(one.diff_ids);
        }
        store.untag(name)?;
    }
    let kept = reachable(store)?;
    let mut removed = Removed::default();
    delete_blobs(
        store,
        candidates.blobs.difference(&kept.blobs),
        &mut removed,
    )?;
    // Only the removed images' layers are judged: any other disk is not this command's to
    // remove, so it counts as live.
    prune_disks(store, &mut removed, |layer| {
        if candidates.diff_ids.contains(&layer.diff_id) {
            unreferenced(&kept, layer)
        } else {
            Liveness::Live
        }
    })?;
    Ok(removed)
}

/// Removes every blob and layer disk no name uses, and leftovers of interrupted processes.
pub fn prune(store: &Store) -> Result<Removed> {
    let _lock = store.lock_exclusive()?;
    let (temp_entries, bytes) = store.sweep_temp()?;
    let mut removed = Removed {
        temp_entries,
        bytes,
        ..Removed::default()
    };
    let kept = reachable(store)?;
    let blobs: Vec<Digest> = store
        .blobs()?
        .into_iter()
        .filter(|d| !kept.blobs.contains(d))
        .collect();
    delete_blobs(store, blobs.iter(), &mut removed)?;
    prune_disks(store, &mut removed, |layer| unreferenced(&kept, layer))?;
    Ok(removed)
}

/// A layer is gone when no name references its diff_id.
fn unreferenced(kept: &Reachable, layer: &ImageLayer) -> Liveness {
    if kept.diff_ids.contains(&layer.diff_id) {
        Liveness::Live
    } else {
        Liveness::Gone("no image references it")
    }
}

/// Prunes the layer cache with `judge`, adding what went to `removed`.
fn prune_disks(
    store: &Store,
    removed: &mut Removed,
    judge: impl FnMut(&ImageLayer) -> Liveness,
) -> Result<()> {
    let pruned = disk::cache(store).prune(judge)?;
    removed.disks.extend(
        pruned
            .removed
            .iter()
            .filter_map(|key| Digest::from_hex(key)),
    );
    removed.temp_entries += pruned.temps;
    removed.bytes += pruned.freed_bytes + pruned.temp_bytes;
    Ok(())
}

fn delete_blobs<'a>(
    store: &Store,
    blobs: impl Iterator<Item = &'a Digest>,
    removed: &mut Removed,
) -> Result<()> {
    for blob in blobs {
        let size = fs::metadata(store.blob_path(blob)).map_or(0, |m| m.len());
        store.remove_blob(blob)?;
        tracing::info!(%blob, size, "removed blob");
        removed.bytes += size;
        removed.blobs.push(blob.clone());
    }
    Ok(())
}
