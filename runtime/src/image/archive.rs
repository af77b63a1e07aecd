//! `rvm load`: importing a docker-archive (`docker save`) or an OCI image-layout archive into
//! the store. Every file is staged and hashed first; only a complete, verified image is moved
//! into the store and tagged, so a bad archive leaves nothing behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use serde::Deserialize;
use serde_json::json;
use tar::EntryType;

use super::compression::{self, Compression, CompressionError};
use super::digest::Digest;
use super::layer::{self, LayerError};
use super::manifest::{self, ImageConfig, Manifest, ManifestError};
use super::reference::{Reference, ReferenceError};
use super::store::{StagedBlob, Staging, Store, StoreError, MAX_METADATA_SIZE};

const DOCKER_MANIFEST_FILE: &str = "manifest.json";
const OCI_INDEX_FILE: &str = "index.json";
const OCI_LAYOUT_FILE: &str = "oci-layout";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Links inside an archive may chain (docker deduplicates layers with symlinks); bound it.
const MAX_LINK_HOPS: usize = 8;

/// A failure to load an archive, naming the archive and the file or blob inside it.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open image archive {}: {source}", archive.display())]
    Open { archive: PathBuf, source: io::Error },
    #[error("image archive {}: {source}", archive.display())]
    Compression {
        archive: PathBuf,
        source: CompressionError,
    },
    #[error("image archive {}: {source}", archive.display())]
    Tar {
        archive: PathBuf,
        source: LayerError,
    },
    #[error("image archive {}: {source}", archive.display())]
    Store {
        archive: PathBuf,
        source: StoreError,
    },
    #[error("image archive {}: {source}", archive.display())]
    Manifest {
        archive: PathBuf,
        source: Box<ManifestError>,
    },
    #[error("image archive {}: has neither manifest.json (docker-archive) nor index.json (OCI layout)", archive.display())]
    UnknownFormat { archive: PathBuf },
    #[error("image archive {}: {file} is not valid: {source}", archive.display())]
    Json {
        archive: PathBuf,
        file: String,
        source: serde_json::Error,
    },
    #[error("image archive {}: {file} is listed but not in the archive", archive.display())]
    MissingFile { archive: PathBuf, file: String },
    #[error("image archive {}: blob {digest} is referenced but not in the archive", archive.display())]
    MissingBlob { archive: PathBuf, digest: Digest },
    #[error("image archive {}: {file} should hash to {expected} but hashes to {actual}", archive.display())]
    BlobMismatch {
        archive: PathBuf,
        file: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("image archive {}: blob {digest} is {actual} bytes, its descriptor says {expected}", archive.display())]
    SizeMismatch {
        archive: PathBuf,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("image archive {}: {source}", archive.display())]
    Reference {
        archive: PathBuf,
        source: ReferenceError,
    },
    #[error("image archive {}: unsupported OCI layout version {version:?}", archive.display())]
    LayoutVersion { archive: PathBuf, version: String },
}

type Result<T> = std::result::Result<T, ArchiveError>;

/// An image the archive contained: its name (if it had one) and its manifest or index digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub reference: Option<Reference>,
    pub digest: Digest,
}

/// Loads a docker-archive or OCI-layout archive (optionally gzip or zstd compressed) into the
/// store and tags the names it carries.
pub fn load(store: &Store, archive: &Path) -> Result<Vec<LoadedImage>> {
    let mut loader = Loader {
        store,
        archive: archive.to_path_buf(),
        staging: store.stage().map_err(|source| ArchiveError::Store {
            archive: archive.to_path_buf(),
            source,
        })?,
        files: BTreeMap::new(),
        links: BTreeMap::new(),
    };
    loader.read_archive()?;
    loader.resolve_links();
    let images = if loader.files.contains_key(DOCKER_MANIFEST_FILE) {
        loader.load_docker()?
    } else if loader.files.contains_key(OCI_INDEX_FILE) {
        loader.load_oci()?
    } else {
        return Err(ArchiveError::UnknownFormat {
            archive: archive.to_path_buf(),
        });
    };
    for image in &images {
        tracing::info!(archive = %archive.display(), image = ?image.reference.as_ref().map(ToString::to_string), digest = %image.digest, "loaded image");
    }
    Ok(images)
}

#[derive(Debug)]
struct Loader<'a> {
    store: &'a Store,
    archive: PathBuf,
    staging: Staging,
    /// Normalised path inside the archive → staged content.
    files: BTreeMap<String, StagedBlob>,
    /// Symlinks and hard links: path → the normalised path they point at.
    links: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl Loader<'_> {
    fn read_archive(&mut self) -> Result<()> {
        let file = File::open(&self.archive).map_err(|source| ArchiveError::Open {
            archive: self.archive.clone(),
            source,
        })?;
        let (_, decoded) = compression::decompress(BufReader::new(file)).map_err(|source| {
            ArchiveError::Compression {
                archive: self.archive.clone(),
                source,
            }
        })?;
        let archive = self.archive.clone();
        let mut store_err = None;
        let walked = layer::walk(decoded, |meta, data| {
            let path = normalise(&meta.path).map_err(|reason| LayerError::Rejected {
                entry: meta.name(),
                reason,
            })?;
            match meta.kind {
                EntryType::Regular | EntryType::Continuous => match self.staging.write(data) {
                    Ok(staged) => {
                        self.files.insert(path, staged);
                    }
                    Err(err) => {
                        store_err = Some(err);
                        return Err(LayerError::Stream {
                            after: meta.name(),
                            source: io::Error::other("staging failed"),
                        });
                    }
                },
                EntryType::Symlink | EntryType::Link => {
                    let target = meta.link.as_deref().unwrap_or_default();
                    let base = if meta.kind == EntryType::Symlink {
                        parent_of(&path)
                    } else {
                        ""
                    };
                    if let Some(target) = join_link(base, target) {
                        self.links.insert(path, target);
                    }
                }
                _ => {}
            }
            Ok(())
        });
        if let Some(source) = store_err {
            return Err(ArchiveError::Store { archive, source });
        }
        walked.map_err(|source| ArchiveError::Tar { archive, source })
    }

    fn resolve_links(&mut self) {
        for (path, target) in &self.links {
            let mut target = target.clone();
            for _ in 0..MAX_LINK_HOPS {
                match self.links.get(&target) {
                    Some(next) => target = next.clone(),
                    None => break,
                }
            }
            if let Some(staged) = self.files.get(&target).cloned() {
                self.files.entry(path.clone()).or_insert(staged);
            }
        }
    }

    fn file(&self, name: &str) -> Result<&StagedBlob> {
        self.files
            .get(&normalise(name.as_bytes()).unwrap_or_default())
            .ok_or_else(|| ArchiveError::MissingFile {
                archive: self.archive.clone(),
                file: name.to_owned(),
            })
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        let staged = self.file(name)?;
        let bytes = self
            .staging
            .read(staged, MAX_METADATA_SIZE)
            .map_err(|source| self.store_err(source))?;
        serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Json {
            archive: self.archive.clone(),
            file: name.to_owned(),
            source,
        })
    }

    fn store_err(&self, source: StoreError) -> ArchiveError {
        ArchiveError::Store {
            archive: self.archive.clone(),
            source,
        }
    }

    fn manifest_err(&self, source: ManifestError) -> ArchiveError {
        ArchiveError::Manifest {
            archive: self.archive.clone(),
            source: Box::new(source),
        }
    }

    fn reference(&self, text: &str) -> Result<Reference> {
        Reference::parse(text).map_err(|source| ArchiveError::Reference {
            archive: self.archive.clone(),
            source,
        })
    }

    // ---- docker-archive ----

    fn load_docker(&self) -> Result<Vec<LoadedImage>> {
        let images: Vec<DockerImage> = self.read_json(DOCKER_MANIFEST_FILE)?;
        // Check every image before committing any: a bad archive loads nothing.
        let mut prepared = Vec::new();
        for image in &images {
            prepared.push(self.prepare_docker_image(image)?);
        }
        let mut loaded = Vec::new();
        for (image, (blobs, manifest)) in images.iter().zip(prepared) {
            for blob in &blobs {
                self.store
                    .commit_staged(blob)
                    .map_err(|e| self.store_err(e))?;
            }
            let digest = self
                .store
                .put_bytes(&manifest)
                .map_err(|e| self.store_err(e))?;
            let tags = image.repo_tags.as_deref().unwrap_or_default();
            if tags.is_empty() {
                loaded.push(LoadedImage {
                    reference: None,
                    digest: digest.clone(),
                });
            }
            for tag in tags {
                let reference = self.reference(tag)?;
                self.store
                    .tag(&reference, &digest)
                    .map_err(|e| self.store_err(e))?;
                loaded.push(LoadedImage {
                    reference: Some(reference),
                    digest: digest.clone(),
                });
            }
        }
        Ok(loaded)
    }

    /// Verifies one docker-archive image and builds the OCI manifest we store for it.
    fn prepare_docker_image(&self, image: &DockerImage) -> Result<(Vec<StagedBlob>, Vec<u8>)> {
        for tag in image.repo_tags.as_deref().unwrap_or_default() {
            self.reference(tag)?;
        }
        let config = self.file(&image.config)?.clone();
        self.check_named_digest(&image.config, &config)?;
        let bytes = self
            .staging
            .read(&config, MAX_METADATA_SIZE)
            .map_err(|e| self.store_err(e))?;
        let parsed =
            ImageConfig::parse(&config.digest, &bytes).map_err(|e| self.manifest_err(e))?;
        let mut blobs = vec![config.clone()];
        let mut layers = Vec::new();
        for (index, name) in image.layers.iter().enumerate() {
            let layer = self.file(name)?.clone();
            self.check_named_digest(name, &layer)?;
            let compression = self.layer_compression(&layer)?;
            if let (Compression::None, Some(diff_id)) = (compression, parsed.diff_ids.get(index)) {
                if *diff_id != layer.digest {
                    return Err(ArchiveError::BlobMismatch {
                        archive: self.archive.clone(),
                        file: name.clone(),
                        expected: diff_id.clone(),
                        actual: layer.digest,
                    });
                }
            }
            layers.push(json!({
                "mediaType": layer_media_type(compression),
                "digest": layer.digest.to_string(),
                "size": layer.size,
            }));
            blobs.push(layer);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_MANIFEST,
            "config": {
                "mediaType": manifest::OCI_CONFIG,
                "digest": config.digest.to_string(),
                "size": config.size,
            },
            "layers": layers,
        });
        Ok((blobs, manifest.to_string().into_bytes()))
    }

    /// `blobs/sha256/<hex>` and `<hex>.json` name their own digest: check it.
    fn check_named_digest(&self, name: &str, staged: &StagedBlob) -> Result<()> {
        let base = name.rsplit('/').next().unwrap_or(name);
        let base = base.strip_suffix(".json").unwrap_or(base);
        let named = name.contains("sha256/") || name.ends_with(".json");
        match Digest::from_hex(base) {
            Some(expected) if named && expected != staged.digest => {
                Err(ArchiveError::BlobMismatch {
                    archive: self.archive.clone(),
                    file: name.to_owned(),
                    expected,
                    actual: staged.digest.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    fn layer_compression(&self, staged: &StagedBlob) -> Result<Compression> {
        let mut head = Vec::with_capacity(8);
        File::open(&staged.path)
            .and_then(|f| f.take(8).read_to_end(&mut head))
            .map_err(|source| {
                self.store_err(StoreError::Io {
                    action: "read staged layer",
                    path: staged.path.clone(),
                    source,
                })
            })?;
        Compression::detect(&head).map_err(|source| ArchiveError::Compression {
            archive: self.archive.clone(),
            source,
        })
    }

    // ---- OCI image layout ----

    fn load_oci(&self) -> Result<Vec<LoadedImage>> {
        self.check_layout_version()?;
        let blobs = self.oci_blobs()?;
        let index_blob = self.file(OCI_INDEX_FILE)?;
        let index_bytes = self
            .staging
            .read(index_blob, MAX_METADATA_SIZE)
            .map_err(|e| self.store_err(e))?;
        let index =
            match Manifest::parse(&index_blob.digest, &index_bytes, Some(manifest::OCI_INDEX))
                .map_err(|e| self.manifest_err(e))?
            {
                Manifest::Index(index) => index,
                Manifest::Image(_) => {
                    return Err(ArchiveError::UnknownFormat {
                        archive: self.archive.clone(),
                    })
                }
            };
        let mut needed = BTreeMap::new();
        let mut images = Vec::new();
        for descriptor in index.manifests() {
            let digest = manifest::descriptor_digest(descriptor, &index_blob.digest)
                .map_err(|e| self.manifest_err(e))?;
            self.collect(&blobs, descriptor, true, &mut needed, 0)?;
            images.push((
                image_name(descriptor)
                    .map(|n| self.reference(&n))
                    .transpose()?,
                digest,
            ));
        }
        for blob in needed.values() {
            self.store
                .commit_staged(blob)
                .map_err(|e| self.store_err(e))?;
        }
        for (reference, digest) in &images {
            if let Some(reference) = reference {
                self.store
                    .tag(reference, digest)
                    .map_err(|e| self.store_err(e))?;
            }
        }
        Ok(images
            .into_iter()
            .map(|(reference, digest)| LoadedImage { reference, digest })
            .collect())
    }

    fn check_layout_version(&self) -> Result<()> {
        #[derive(Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        if !self.files.contains_key(OCI_LAYOUT_FILE) {
            return Ok(());
        }
        let layout: Layout = self.read_json(OCI_LAYOUT_FILE)?;
        if layout.version.starts_with("1.") {
            Ok(())
        } else {
            Err(ArchiveError::LayoutVersion {
                archive: self.archive.clone(),
                version: layout.version,
            })
        }
    }

    /// The files under `blobs/sha256/`, each checked against the digest its name claims.
    fn oci_blobs(&self) -> Result<BTreeMap<Digest, StagedBlob>> {
        let mut blobs = BTreeMap::new();
        for (path, staged) in &self.files {
            let Some(hex) = path.strip_prefix("blobs/sha256/") else {
                continue;
            };
            let Some(expected) = Digest::from_hex(hex) else {
                continue;
            };
            if expected != staged.digest {
                return Err(ArchiveError::BlobMismatch {
                    archive: self.archive.clone(),
                    file: path.clone(),
                    expected,
                    actual: staged.digest.clone(),
                });
            }
            blobs.insert(expected, staged.clone());
        }
        Ok(blobs)
    }

    /// Adds the blob of `descriptor` and everything it references to `needed`. Children of an
    /// index may be absent (a layout may hold only some platforms); an image may not be partial.
    fn collect(
        &self,
        blobs: &BTreeMap<Digest, StagedBlob>,
        descriptor: &Descriptor,
        required: bool,
        needed: &mut BTreeMap<Digest, StagedBlob>,
        depth: usize,
    ) -> Result<()> {
        let digest = manifest::descriptor_digest(descriptor, &Digest::of(b""))
            .map_err(|e| self.manifest_err(e))?;
        let Some(staged) = blobs.get(&digest) else {
            if required {
                return Err(ArchiveError::MissingBlob {
                    archive: self.archive.clone(),
                    digest,
                });
            }
            return Ok(());
        };
        if staged.size != descriptor.size() {
            return Err(ArchiveError::SizeMismatch {
                archive: self.archive.clone(),
                digest,
                expected: descriptor.size(),
                actual: staged.size,
            });
        }
        needed.insert(digest.clone(), staged.clone());
        let media_type = descriptor.media_type().to_string();
        let is_manifest = matches!(
            media_type.as_str(),
            manifest::OCI_INDEX
                | manifest::OCI_MANIFEST
                | manifest::DOCKER_LIST
                | manifest::DOCKER_MANIFEST
        );
        if !is_manifest || depth > 4 {
            return Ok(());
        }
        let bytes = self
            .staging
            .read(staged, MAX_METADATA_SIZE)
            .map_err(|e| self.store_err(e))?;
        match Manifest::parse(&digest, &bytes, Some(&media_type))
            .map_err(|e| self.manifest_err(e))?
        {
            Manifest::Index(index) => {
                for child in index.manifests() {
                    self.collect(blobs, child, false, needed, depth + 1)?;
                }
            }
            Manifest::Image(image) => {
                self.collect(blobs, image.config(), true, needed, depth + 1)?;
                for layer in image.layers() {
                    self.collect(blobs, layer, true, needed, depth + 1)?;
                }
            }
        }
        Ok(())
    }
}

/// The name an OCI index entry carries: containerd's full name, else a `ref.name` that is a
/// full reference (a bare tag like `latest` names no repository).
fn image_name(descriptor: &Descriptor) -> Option<String> {
    let annotations = descriptor.annotations().as_ref()?;
    if let Some(name) = annotations.get(CONTAINERD_NAME) {
        return Some(name.clone());
    }
    annotations
        .get(OCI_REF_NAME)
        .filter(|name| name.contains(['/', ':', '@']))
        .cloned()
}

fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => manifest::OCI_LAYER,
        Compression::Gzip => manifest::OCI_LAYER_GZIP,
        Compression::Zstd => manifest::OCI_LAYER_ZSTD,
    }
}

/// `./a//b/` → `a/b`; refuses absolute paths and `..`.
fn normalise(path: &[u8]) -> std::result::Result<String, layer::Rejection> {
    let components = layer::components(path)?;
    let parts: Vec<_> = components.iter().map(|c| c.to_string_lossy()).collect();
    Ok(parts.join("/"))
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Resolves a link target lexically inside the archive; `None` if it leaves the archive.
fn join_link(base: &str, target: &[u8]) -> Option<String> {
    if target.starts_with(b"/") {
        return None;
    }
    let mut parts: Vec<String> = base
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            part => parts.push(String::from_utf8_lossy(part).into_owned()),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_archive() {
        assert_eq!(
            join_link("abc", b"../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(join_link("", b"x/y").as_deref(), Some("x/y"));
        assert_eq!(join_link("a", b"../../x"), None);
        assert_eq!(join_link("a", b"/etc/passwd"), None);
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise(b"./blobs//sha256/ab").unwrap(), "blobs/sha256/ab");
        assert!(normalise(b"../x").is_err());
    }
}
