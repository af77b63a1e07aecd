//! Pulling images from registries (OCI distribution v2) into the store.
//!
//! A pull resolves the tag to a manifest (following an index to the linux/amd64 manifest),
//! downloads the config and the missing layers concurrently into a staging area of the store,
//! checking each blob's size and digest while it streams, and only then moves the blobs in,
//! builds the layer disks (the path `load` takes too, see [`crate::image::install`]) and points
//! the name at the image. A failure at any step leaves the store as it was; temporary files of a
//! pull that was killed are swept by the next pull or `system prune`.
//!
//! Transport: HTTPS, except plain HTTP for loopback registries (`localhost`, `127.0.0.1`,
//! `[::1]`) and those listed in [`PullOptions::insecure`]. Credentials: see [`auth`].

pub mod auth;
pub mod client;
pub mod progress;

use std::collections::BTreeSet;

use futures_util::{StreamExt, TryStreamExt};

pub use auth::{AuthError, Credentials, Login};
pub use client::{is_plain_http, RegistryError, RetryPolicy};
pub use progress::{Progress, Silent};

use self::client::Registry;
use super::digest::Digest;
use super::install::{self, InstallError, InstalledImage};
use super::manifest::{self, ImageConfig, Manifest, ManifestError, Platform};
use super::reference::Reference;
use super::store::{StagedBlob, Staging, Store, StoreError, MAX_METADATA_SIZE};

/// Indexes may nest; real images use one level.
const MAX_INDEX_DEPTH: usize = 4;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform whose manifest is picked from an index (linux/amd64 for our guests).
    pub platform: Platform,
    pub credentials: Credentials,
    /// Registries (`host[:port]`) spoken to over plain HTTP besides the loopback ones.
    pub insecure: Vec<String>,
    /// Layers downloaded at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: Platform::host(),
            credentials: Credentials::none(),
            insecure: Vec::new(),
            concurrency: 3,
            retry: RetryPolicy::default(),
        }
    }
}

/// A pull that failed, naming the image and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pull {image}: {source}")]
    Registry {
        image: String,
        source: RegistryError,
    },
    #[error("pull {image}: {source}")]
    Manifest {
        image: String,
        source: Box<ManifestError>,
    },
    #[error("pull {image}: {source}")]
    Store { image: String, source: StoreError },
    #[error("pull {image}: {source}")]
    Install {
        image: String,
        source: Box<InstallError>,
    },
    #[error("pull {image}: the pull task failed: {detail}")]
    Task { image: String, detail: String },
}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    pub reference: Reference,
    /// The digest the name now points at (an index, or the manifest).
    pub digest: Digest,
    pub installed: InstalledImage,
    /// Blobs downloaded (those already in the store are not).
    pub downloaded: usize,
}

/// Pulls `reference` into `store` (see the module documentation).
pub async fn pull(
    store: &Store,
    reference: &Reference,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<PulledImage, PullError> {
    let image = reference.familiar();
    let errors = Errors { image: &image };
    store.sweep_temp().map_err(|e| errors.store(e))?;
    let registry = Registry::new(
        reference,
        options.credentials.auth_for(reference.domain()),
        &options.insecure,
        options.retry.clone(),
    );
    let target = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    tracing::info!(image = %reference, registry = registry.name(), "pulling");
    registry
        .authenticate(&target, progress)
        .await
        .map_err(|e| errors.registry(e))?;
    let mut staging = store.stage().map_err(|e| errors.store(e))?;
    let mut staged = Vec::new();

    let (top_bytes, top) = registry
        .manifest(&target, progress)
        .await
        .map_err(|e| errors.registry(e))?;
    let (manifest_digest, manifest) = follow_index(
        store,
        &registry,
        &mut staging,
        &mut staged,
        top.clone(),
        top_bytes,
        options,
        progress,
        &errors,
    )
    .await?;

    let mut layers = Vec::new();
    for layer in manifest.layers() {
        let digest =
            manifest::descriptor_digest(layer, &manifest_digest).map_err(|e| errors.manifest(e))?;
        layers.push((digest, layer.size()));
    }
    progress.resolved(&manifest_digest, &layers);
    let config_digest = manifest::descriptor_digest(manifest.config(), &manifest_digest)
        .map_err(|e| errors.manifest(e))?;
    let config = fetch_config(
        store,
        &registry,
        &mut staging,
        &mut staged,
        &config_digest,
        manifest.config().size(),
        progress,
        &errors,
    )
    .await?;
    if manifest.layers().len() != config.diff_ids.len() {
        return Err(errors.manifest(ManifestError::LayerCountMismatch {
            manifest: manifest_digest,
            config: config_digest,
            layers: manifest.layers().len(),
            diff_ids: config.diff_ids.len(),
        }));
    }
    let downloaded_layers = download_layers(
        store,
        &registry,
        &mut staging,
        &layers,
        options,
        progress,
        &errors,
    )
    .await?;
    staged.extend(downloaded_layers);
    let downloaded = staged.len();

    let store_owned = store.clone();
    let reference_owned = reference.clone();
    let platform = options.platform.clone();
    let image_owned = image.clone();
    let installed = tokio::task::spawn_blocking(move || {
        commit(
            &store_owned,
            staging,
            &staged,
            &top,
            &reference_owned,
            &platform,
            &image_owned,
        )
        .map(|installed| (installed, top))
    })
    .await
    .map_err(|err| PullError::Task {
        image: image.clone(),
        detail: err.to_string(),
    })??;
    let (installed, top) = installed;
    for (layer, disk) in installed.image.layers.iter().zip(&installed.disks) {
        progress.layer_ready(&layer.digest, disk.created);
    }
    tracing::info!(image = %reference, digest = %top, downloaded, "pulled");
    Ok(PulledImage {
        reference: reference.clone(),
        digest: top,
        installed,
        downloaded,
    })
}

/// Builds the errors of one pull, each naming the image.
struct Errors<'a> {
    image: &'a str,
}

impl Errors<'_> {
    fn registry(&self, source: RegistryError) -> PullError {
        PullError::Registry {
            image: self.image.to_owned(),
            source,
        }
    }

    fn manifest(&self, source: ManifestError) -> PullError {
        PullError::Manifest {
            image: self.image.to_owned(),
            source: Box::new(source),
        }
    }

    fn store(&self, source: StoreError) -> PullError {
        PullError::Store {
            image: self.image.to_owned(),
            source,
        }
    }
}

/// From the top manifest or index down to the image manifest of our platform, staging every
/// manifest that is not in the store yet.
#[allow(clippy::too_many_arguments)]
async fn follow_index(
    store: &Store,
    registry: &Registry,
    staging: &mut Staging,
    staged: &mut Vec<StagedBlob>,
    mut digest: Digest,
    mut bytes: Vec<u8>,
    options: &PullOptions,
    progress: &dyn Progress,
    errors: &Errors<'_>,
) -> Result<(Digest, Box<oci_spec::image::ImageManifest>), PullError> {
    let mut media_type: Option<String> = None;
    for _ in 0..MAX_INDEX_DEPTH {
        if !store.has_blob(&digest) {
            staged.push(staging.write(&bytes[..]).map_err(|e| errors.store(e))?);
        }
        match Manifest::parse(&digest, &bytes, media_type.as_deref())
            .map_err(|e| errors.manifest(e))?
        {
            Manifest::Image(image) => return Ok((digest, image)),
            Manifest::Index(index) => {
                let chosen = manifest::select_platform(&digest, &index, &options.platform)
                    .map_err(|e| errors.manifest(e))?;
                media_type = Some(chosen.media_type().to_string());
                let child =
                    manifest::descriptor_digest(chosen, &digest).map_err(|e| errors.manifest(e))?;
                bytes = if store.has_blob(&child) {
                    store.read_blob(&child).map_err(|e| errors.store(e))?
                } else {
                    registry
                        .manifest(&child.to_string(), progress)
                        .await
                        .map_err(|e| errors.registry(e))?
                        .0
                };
                digest = child;
            }
        }
    }
    Err(errors.manifest(ManifestError::TooDeep(digest)))
}

#[allow(clippy::too_many_arguments)]
async fn fetch_config(
    store: &Store,
    registry: &Registry,
    staging: &mut Staging,
    staged: &mut Vec<StagedBlob>,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
    errors: &Errors<'_>,
) -> Result<ImageConfig, PullError> {
    let bytes = if store.has_blob(digest) {
        store.read_blob(digest).map_err(|e| errors.store(e))?
    } else {
        if size > MAX_METADATA_SIZE {
            return Err(errors.store(StoreError::TooLarge {
                digest: digest.clone(),
                size,
            }));
        }
        let writer = staging.writer().map_err(|e| errors.store(e))?;
        let blob = registry
            .download(digest, size, writer, progress)
            .await
            .map_err(|e| errors.registry(e))?;
        let bytes = staging
            .read(&blob, MAX_METADATA_SIZE)
            .map_err(|e| errors.store(e))?;
        staged.push(blob);
        bytes
    };
    ImageConfig::parse(digest, &bytes).map_err(|e| errors.manifest(e))
}

/// Downloads the layers not in the store, `options.concurrency` at a time; the first failure
/// cancels the others.
async fn download_layers(
    store: &Store,
    registry: &Registry,
    staging: &mut Staging,
    layers: &[(Digest, u64)],
    options: &PullOptions,
    progress: &dyn Progress,
    errors: &Errors<'_>,
) -> Result<Vec<StagedBlob>, PullError> {
    let mut seen = BTreeSet::new();
    let mut jobs = Vec::new();
    for (digest, size) in layers {
        if !seen.insert(digest.clone()) {
            continue;
        }
        if store.has_blob(digest) {
            progress.blob_present(digest);
            continue;
        }
        jobs.push((
            digest.clone(),
            *size,
            staging.writer().map_err(|e| errors.store(e))?,
        ));
    }
    futures_util::stream::iter(jobs)
        .map(|(digest, size, writer)| async move {
            registry
                .download(&digest, size, writer, progress)
                .await
                .map_err(|e| errors.registry(e))
        })
        .buffer_unordered(options.concurrency.max(1))
        .try_collect()
        .await
}

/// Moves the staged blobs in, builds the disks and names the image; undoes the blobs it moved
/// in when a later step fails.
fn commit(
    store: &Store,
    staging: Staging,
    staged: &[StagedBlob],
    top: &Digest,
    reference: &Reference,
    platform: &Platform,
    image: &str,
) -> Result<InstalledImage, PullError> {
    let errors = Errors { image };
    let _lock = store.lock_shared().map_err(|e| errors.store(e))?;
    let mut added = Vec::new();
    let result = (|| {
        for blob in staged {
            if store.commit_staged(blob).map_err(|e| errors.store(e))? {
                added.push(blob.digest.clone());
            }
        }
        let installed = install::install(store, top, platform).map_err(|e| PullError::Install {
            image: image.to_owned(),
            source: Box::new(e),
        })?;
        store.tag(reference, top).map_err(|e| errors.store(e))?;
        Ok(installed)
    })();
    drop(staging);
    if result.is_err() {
        for digest in &added {
            if let Err(err) = store.remove_blob(digest) {
                tracing::warn!(%digest, %err, "cannot remove blob of a failed pull");
            }
        }
    }
    result
}
