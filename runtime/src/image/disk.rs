//! Layer disks: each layer is unpacked once, its blob digest and diff_id checked on the way,
//! and turned into a read-only erofs image `<root>/layers/<diff_id hex>.erofs` that every image
//! containing the layer shares.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::compression::{self, CompressionError};
use super::digest::{Digest, Hasher, HashingReader};
use super::fsutil::{self, TempDir};
use super::layer::{self, LayerError, UnpackStats};
use super::manifest::{Layer, ResolvedImage};
use super::store::{Store, StoreError};

/// The tool that builds the disks (Debian's erofs-utils).
const MKFS_EROFS: &str = "mkfs.erofs";

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

/// Where the disk of the layer with this diff_id lives.
pub fn disk_path(store: &Store, diff_id: &Digest) -> PathBuf {
    store.layers_dir().join(format!("{}.erofs", diff_id.hex()))
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
    let path = disk_path(store, &layer.diff_id);
    if path.is_file() {
        tracing::debug!(diff_id = %layer.diff_id, "layer disk already built");
        return Ok(LayerDisk {
            path,
            diff_id: layer.diff_id.clone(),
            created: false,
        });
    }
    let layers_dir = store.layers_dir();
    let work = TempDir::new_in(&layers_dir, "-unpack")
        .map_err(io_err("create unpack directory in", &layers_dir))?;
    let rootfs = work.path().join("rootfs");
    fs::create_dir(&rootfs).map_err(io_err("create", &rootfs))?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))
        .map_err(io_err("set mode of", &rootfs))?;
    let stats = unpack_verified(store, layer, &rootfs)?;
    let image = work.path().join("layer.erofs");
    mkfs_erofs(&layer.digest, &image, &rootfs)?;
    File::open(&image)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", &image))?;
    fs::rename(&image, &path).map_err(io_err("rename layer disk to", &path))?;
    fsutil::sync_dir(&layers_dir).map_err(io_err("sync", &layers_dir))?;
    tracing::info!(layer = %layer.digest, diff_id = %layer.diff_id, entries = stats.entries, "layer disk built");
    Ok(LayerDisk {
        path,
        diff_id: layer.diff_id.clone(),
        created: true,
    })
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

fn mkfs_erofs(layer: &Digest, image: &Path, rootfs: &Path) -> Result<()> {
    let output = Command::new(MKFS_EROFS)
        .arg("--quiet")
        .arg(image)
        .arg(rootfs)
        .output()
        .map_err(|source| DiskError::MkfsMissing {
            layer: layer.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(DiskError::Mkfs {
        layer: layer.clone(),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
