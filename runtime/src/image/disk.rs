//! Layer disks of the image store: each layer is unpacked once, its blob digest and diff_id
//! checked on the way, and turned into a read-only erofs disk `<root>/layers/<diff_id hex>.erofs`
//! (with its record `<diff_id hex>.source`) that every image containing the layer shares. The
//! disks live in the [`LayerCache`] of [`ImageLayer`]s, which builds them and prunes them; this
//! module owns unpacking and verifying.

use std::fs;
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::compression::{self, CompressionError};
use super::digest::{Digest, Hasher, HashingReader};
use super::fsutil::TempDir;
use super::layer::{self, LayerError, UnpackStats};
use super::manifest::{Layer, ResolvedImage};
use super::store::{Store, StoreError};
use crate::layer_cache::{ImageLayer, LayerCache, LayerCacheError, MkfsError, MKFS_EROFS};

/// A failure to build a layer disk, naming the layer blob.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("layer {layer}: {source}")]
    Unpack { layer: Digest, source: LayerError },
    #[error("layer {layer}: {source}")]
    Compression {
        layer: Digest,
        source: CompressionError,
    },
    #[error("layer {layer}: cannot read blob: {source}")]
    Read { layer: Digest, source: io::Error },
    #[error("layer blob {layer}: content hashes to {actual} (corrupt or tampered)")]
    DigestMismatch { layer: Digest, actual: Digest },
    #[error("layer {layer}: uncompressed content hashes to {actual}, but the image config says diff_id {expected}")]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {layer}: cannot run {MKFS_EROFS} (install erofs-utils): {source}")]
    MkfsMissing { layer: Digest, source: io::Error },
    #[error("layer {layer}: {MKFS_EROFS} failed ({status}): {stderr}")]
    Mkfs {
        layer: Digest,
        status: String,
        stderr: String,
    },
    #[error("layer disks: cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl DiskError {
    /// The cache's failure to build the disk of blob `layer`, named by the blob: the directory
    /// it names is a temporary one.
    fn of_cache(layer: &Digest, error: LayerCacheError) -> Self {
        let layer = layer.clone();
        match error {
            LayerCacheError::Mkfs(MkfsError::Missing { source, .. }) => {
                Self::MkfsMissing { layer, source }
            }
            LayerCacheError::Mkfs(MkfsError::Failed { status, stderr, .. }) => Self::Mkfs {
                layer,
                status,
                stderr,
            },
            LayerCacheError::Mkfs(MkfsError::Create { image, source }) => Self::Io {
                action: "create",
                path: image,
                source,
            },
            LayerCacheError::Io {
                action,
                path,
                source,
            } => Self::Io {
                action,
                path,
                source,
            },
        }
    }
}

type Result<T> = std::result::Result<T, DiskError>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A layer disk and whether this call built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDisk {
    pub path: PathBuf,
    pub diff_id: Digest,
    pub created: bool,
}

/// The cache of the store's layer disks, `<root>/layers`.
pub fn cache(store: &Store) -> LayerCache<ImageLayer> {
    LayerCache::new(store.layers_dir())
}

/// Where the disk of the layer with this diff_id lives.
pub fn disk_path(store: &Store, diff_id: &Digest) -> PathBuf {
    cache(store).disk_path(&ImageLayer {
        diff_id: diff_id.clone(),
    })
}

/// The disks of every layer of `image`, bottom first, building the missing ones.
pub fn ensure_image_disks(store: &Store, image: &ResolvedImage) -> Result<Vec<LayerDisk>> {
    image
        .layers
        .iter()
        .map(|layer| ensure_layer_disk(store, layer))
        .collect()
}

/// Returns the disk of `layer`, building it when no image has built it yet.
pub fn ensure_layer_disk(store: &Store, layer: &Layer) -> Result<LayerDisk> {
    let cache = cache(store);
    let source = ImageLayer {
        diff_id: layer.diff_id.clone(),
    };
    if let Some(disk) = cache.lookup(&source) {
        tracing::debug!(diff_id = %layer.diff_id, "layer disk already built");
        return Ok(LayerDisk {
            path: disk.path,
            diff_id: layer.diff_id.clone(),
            created: false,
        });
    }
    // Unpacked in the store's scratch space, which sweeps what a killed process leaves there.
    let tmp = store.tmp_dir();
    let work =
        TempDir::new_in(&tmp, "-unpack").map_err(io_err("create unpack directory in", &tmp))?;
    let rootfs = work.path().join("rootfs");
    fs::create_dir(&rootfs).map_err(io_err("create", &rootfs))?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))
        .map_err(io_err("set mode of", &rootfs))?;
    let stats = unpack_verified(store, layer, &rootfs)?;
    let disk = cache
        .build(&source, &rootfs)
        .map_err(|e| DiskError::of_cache(&layer.digest, e))?;
    tracing::info!(layer = %layer.digest, diff_id = %layer.diff_id, entries = stats.entries, "layer disk built");
    Ok(LayerDisk {
        path: disk.path,
        diff_id: layer.diff_id.clone(),
        created: true,
    })
}

/// Removes the disk of the layer with this diff_id and its record (undoing a build).
pub fn remove_layer_disk(store: &Store, diff_id: &Digest) -> Result<()> {
    cache(store)
        .remove(&ImageLayer {
            diff_id: diff_id.clone(),
        })
        .map_err(|e| DiskError::of_cache(diff_id, e))
}

/// Unpacks the layer blob into `target`, checking the blob digest and the diff_id of the
/// decompressed stream; both are only known once the streams are read to their end.
pub fn unpack_verified(store: &Store, layer: &Layer, target: &Path) -> Result<UnpackStats> {
    let blob = store.open_blob(&layer.digest)?;
    let read_err = |source| DiskError::Read {
        layer: layer.digest.clone(),
        source,
    };
    let mut blob_hasher = Hasher::new();
    let mut diff_hasher = Hasher::new();
    let mut compressed = BufReader::new(HashingReader::new(blob, &mut blob_hasher));
    let (unpacked, drained) = {
        let (_, decoded) =
            compression::decompress(&mut compressed).map_err(|source| DiskError::Compression {
                layer: layer.digest.clone(),
                source,
            })?;
        let mut tar_stream = HashingReader::new(decoded, &mut diff_hasher);
        let unpacked = layer::unpack(&mut tar_stream, target);
        // Hash what follows the end-of-archive blocks too: the diff_id covers the whole stream.
        let drained = io::copy(&mut tar_stream, &mut io::sink());
        (unpacked, drained)
    };
    let rest = io::copy(&mut compressed, &mut io::sink());
    drop(compressed);
    // A digest mismatch explains any other failure better than that failure itself.
    let actual = blob_hasher.finish();
    if actual != layer.digest {
        return Err(DiskError::DigestMismatch {
            layer: layer.digest.clone(),
            actual,
        });
    }
    let stats = unpacked.map_err(|source| DiskError::Unpack {
        layer: layer.digest.clone(),
        source,
    })?;
    drained.and(rest).map_err(read_err)?;
    let actual = diff_hasher.finish();
    if actual != layer.diff_id {
        return Err(DiskError::DiffIdMismatch {
            layer: layer.digest.clone(),
            expected: layer.diff_id.clone(),
            actual,
        });
    }
    Ok(stats)
}
