//! OCI and Docker schema2 manifests, indexes and manifest lists; choosing the manifest of our
//! platform (linux/amd64); and the image config fields a container is started from.

use std::collections::BTreeMap;
use std::fmt;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::Value;

use super::digest::{Digest, DigestError};
use super::reference::Reference;
use super::store::{Store, StoreError};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Layer media types we unpack (compression is recognised from the bytes, not the type).
const LAYER_TYPES: &[&str] = &[
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    DOCKER_LAYER_GZIP,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Indexes may nest; real images use one level, we allow a few.
const MAX_INDEX_DEPTH: usize = 4;

/// A manifest, index or config that cannot be used, naming its digest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} {digest} is not valid JSON of its kind: {source}")]
    Json {
        what: &'static str,
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("manifest {digest} has unsupported media type {media_type:?}")]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("manifest {digest} is Docker schema 1, which is not supported (re-push the image with a current Docker)")]
    SchemaV1 { digest: Digest },
    #[error("image {digest} has no {wanted} variant; available platforms: {}", available.join(", "))]
    NoMatchingPlatform {
        digest: Digest,
        wanted: Platform,
        available: Vec<String>,
    },
    #[error("manifest {manifest} lists {layers} layers but its config {config} lists {diff_ids} diff_ids")]
    LayerCountMismatch {
        manifest: Digest,
        config: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("manifest {manifest}: layer {layer} has unsupported media type {media_type:?}")]
    UnsupportedLayer {
        manifest: Digest,
        layer: Digest,
        media_type: String,
    },
    #[error("{what}: {source}")]
    BadDigest { what: String, source: DigestError },
    #[error("index {0} nests indexes too deeply")]
    TooDeep(Digest),
    #[error("image {0} is not in the image store")]
    NotFound(String),
}

type Result<T> = std::result::Result<T, ManifestError>;

/// An operating system and CPU architecture (and optional variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform our guests run: linux/amd64.
    pub fn host() -> Self {
        Self {
            os: "linux".to_owned(),
            architecture: "amd64".to_owned(),
            variant: None,
        }
    }

    fn from_oci(platform: &oci_spec::image::Platform) -> Self {
        Self {
            os: platform.os().to_string(),
            architecture: platform.architecture().to_string(),
            variant: platform.variant().clone(),
        }
    }

    /// Whether an image built for `other` runs here (a variant is only compared when we want one).
    pub fn accepts(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// A parsed manifest document: a list of per-platform manifests, or one image.
#[derive(Debug, Clone)]
pub enum Manifest {
    Index(Box<ImageIndex>),
    Image(Box<ImageManifest>),
}

impl Manifest {
    /// Parses an OCI index or manifest or a Docker schema2 list or manifest, recognised by its
    /// `mediaType` (or the descriptor's), else by its shape.
    pub fn parse(digest: &Digest, bytes: &[u8], descriptor_type: Option<&str>) -> Result<Self> {
        let json_err = |source| ManifestError::Json {
            what: "manifest",
            digest: digest.clone(),
            source,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(json_err)?;
        let media_type = value
            .get("mediaType")
            .and_then(Value::as_str)
            .or(descriptor_type)
            .map(str::to_owned);
        let is_index = match media_type.as_deref() {
            Some(OCI_INDEX | DOCKER_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED) => {
                return Err(ManifestError::SchemaV1 {
                    digest: digest.clone(),
                })
            }
            Some(other) => {
                return Err(ManifestError::UnsupportedMediaType {
                    digest: digest.clone(),
                    media_type: other.to_owned(),
                })
            }
            None if value.get("schemaVersion").and_then(Value::as_u64) == Some(1) => {
                return Err(ManifestError::SchemaV1 {
                    digest: digest.clone(),
                })
            }
            None => value.get("manifests").is_some(),
        };
        if is_index {
            serde_json::from_value(value)
                .map(Self::Index)
                .map_err(json_err)
        } else {
            serde_json::from_value(value)
                .map(Self::Image)
                .map_err(json_err)
        }
    }
}

/// Picks the manifest of `wanted` from an index, or says which platforms there are.
pub fn select_platform<'a>(
    digest: &Digest,
    index: &'a ImageIndex,
    wanted: &Platform,
) -> Result<&'a Descriptor> {
    let matching = index.manifests().iter().find(|descriptor| {
        descriptor
            .platform()
            .as_ref()
            .is_some_and(|p| wanted.accepts(&Platform::from_oci(p)))
    });
    let unlabelled = || {
        let mut without = index.manifests().iter().filter(|d| d.platform().is_none());
        match (without.next(), without.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    };
    matching.or_else(unlabelled).ok_or_else(|| {
        let available = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| Platform::from_oci(p).to_string())
            .filter(|p| p != "unknown/unknown")
            .collect();
        ManifestError::NoMatchingPlatform {
            digest: digest.clone(),
            wanted: wanted.clone(),
            available,
        }
    })
}

/// The runtime defaults an image carries (the `config` object of the image config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// When the image was built (RFC 3339), if the config says.
    pub created: Option<String>,
    /// Digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses an OCI or Docker image config blob.
    pub fn parse(digest: &Digest, bytes: &[u8]) -> Result<Self> {
        let config: ImageConfiguration =
            serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
                what: "image config",
                digest: digest.clone(),
                source,
            })?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|id| {
                Digest::parse(id).map_err(|source| ManifestError::BadDigest {
                    what: format!("image config {digest}: diff_id"),
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut image = Self {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            created: config.created().clone(),
            diff_ids,
            ..Self::default()
        };
        if let Some(run) = config.config() {
            image.entrypoint = run.entrypoint().clone().unwrap_or_default();
            image.cmd = run.cmd().clone().unwrap_or_default();
            image.env = run.env().clone().unwrap_or_default();
            image.working_dir = run.working_dir().clone().filter(|d| !d.is_empty());
            image.user = run.user().clone().filter(|u| !u.is_empty());
            image.exposed_ports = sorted(run.exposed_ports().clone());
            image.volumes = sorted(run.volumes().clone());
            image.labels = run
                .labels()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            image.stop_signal = run.stop_signal().clone();
        }
        Ok(image)
    }

    /// The platform the config says the image is built for.
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: None,
        }
    }
}

fn sorted(items: Option<Vec<String>>) -> Vec<String> {
    let mut items = items.unwrap_or_default();
    items.sort();
    items
}

/// One layer of a resolved image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored (possibly compressed).
    pub digest: Digest,
    /// Digest of the uncompressed tar: names the layer disk.
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

/// Everything needed to run an image on one platform.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The platform-specific manifest.
    pub manifest: Digest,
    /// The image ID, as Docker prints it.
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
}

/// Looks an image up by name (or digest) in the store and resolves it for `platform`.
pub fn resolve_reference(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
) -> Result<ResolvedImage> {
    let top = store
        .resolve(reference)?
        .ok_or_else(|| ManifestError::NotFound(reference.familiar()))?;
    resolve(store, &top, platform)
}

/// Follows `top` (an index or a manifest in `store`) to the image for `platform`.
pub fn resolve(store: &Store, top: &Digest, platform: &Platform) -> Result<ResolvedImage> {
    let mut digest = top.clone();
    let mut media_type: Option<String> = None;
    for _ in 0..MAX_INDEX_DEPTH {
        let bytes = store.read_blob(&digest)?;
        match Manifest::parse(&digest, &bytes, media_type.as_deref())? {
            Manifest::Image(manifest) => {
                return resolve_manifest(store, &digest, &manifest, platform)
            }
            Manifest::Index(index) => {
                let chosen = select_platform(&digest, &index, platform)?;
                media_type = Some(chosen.media_type().to_string());
                digest = descriptor_digest(chosen, &digest)?;
            }
        }
    }
    Err(ManifestError::TooDeep(top.clone()))
}

/// The digest a descriptor points at, in our type.
pub fn descriptor_digest(descriptor: &Descriptor, parent: &Digest) -> Result<Digest> {
    Digest::try_from(descriptor.digest()).map_err(|source| ManifestError::BadDigest {
        what: format!("manifest {parent}: descriptor"),
        source,
    })
}

fn resolve_manifest(
    store: &Store,
    digest: &Digest,
    manifest: &ImageManifest,
    platform: &Platform,
) -> Result<ResolvedImage> {
    let config_digest = descriptor_digest(manifest.config(), digest)?;
    let config = ImageConfig::parse(&config_digest, &store.read_blob(&config_digest)?)?;
    if !platform.accepts(&config.platform()) {
        return Err(ManifestError::NoMatchingPlatform {
            digest: digest.clone(),
            wanted: platform.clone(),
            available: vec![config.platform().to_string()],
        });
    }
    if manifest.layers().len() != config.diff_ids.len() {
        return Err(ManifestError::LayerCountMismatch {
            manifest: digest.clone(),
            config: config_digest,
            layers: manifest.layers().len(),
            diff_ids: config.diff_ids.len(),
        });
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(&config.diff_ids)
        .map(|(descriptor, diff_id)| layer(digest, descriptor, diff_id))
        .collect::<Result<Vec<_>>>()?;
    Ok(ResolvedImage {
        manifest: digest.clone(),
        config_digest,
        config,
        layers,
    })
}

fn layer(manifest: &Digest, descriptor: &Descriptor, diff_id: &Digest) -> Result<Layer> {
    let digest = descriptor_digest(descriptor, manifest)?;
    let media_type = descriptor.media_type().to_string();
    if !LAYER_TYPES.contains(&media_type.as_str()) {
        return Err(ManifestError::UnsupportedLayer {
            manifest: manifest.clone(),
            layer: digest,
            media_type,
        });
    }
    Ok(Layer {
        digest,
        diff_id: diff_id.clone(),
        media_type,
        size: descriptor.size(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(store: &Store, value: &Value) -> Digest {
        store
            .put_bytes(&serde_json::to_vec(value).unwrap())
            .unwrap()
    }

    fn descriptor(media_type: &str, digest: &Digest, size: usize) -> Value {
        json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
    }

    fn config(os: &str, arch: &str) -> Value {
        json!({
            "architecture": arch, "os": os,
            "config": {
                "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["PATH=/bin"],
                "WorkingDir": "/work", "User": "1000:1000",
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}},
                "Labels": {"a": "b"}
            },
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"layer").to_string()]},
            "container_config": {"Hostname": "ignored"},
            "docker_version": "24.0.0"
        })
    }

    /// A Docker schema2 image for `os/arch`, returning the manifest digest.
    fn docker_image(store: &Store, os: &str, arch: &str) -> Digest {
        let config_digest = put(store, &config(os, arch));
        let layer = store.put_bytes(b"layer").unwrap();
        put(
            store,
            &json!({
                "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                "config": descriptor(DOCKER_CONFIG, &config_digest, 1),
                "layers": [descriptor(DOCKER_LAYER_GZIP, &layer, 5)]
            }),
        )
    }

    fn list(store: &Store, media_type: &str, entries: &[(&Digest, &str, &str)]) -> Digest {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(digest, os, arch)| {
                let mut d = descriptor(DOCKER_MANIFEST, digest, 1);
                d["platform"] = json!({"os": os, "architecture": arch});
                d
            })
            .collect();
        put(
            store,
            &json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}),
        )
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn docker_manifest_list_resolves_to_amd64() {
        let (_dir, store) = store();
        let arm = docker_image(&store, "linux", "arm64");
        let amd = docker_image(&store, "linux", "amd64");
        let top = list(
            &store,
            DOCKER_LIST,
            &[(&arm, "linux", "arm64"), (&amd, "linux", "amd64")],
        );
        let image = resolve(&store, &top, &Platform::host()).unwrap();
        assert_eq!(image.manifest, amd);
        let config = &image.config;
        assert_eq!(config.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(config.cmd, ["echo hi"]);
        assert_eq!(config.env, ["PATH=/bin"]);
        assert_eq!(config.working_dir.as_deref(), Some("/work"));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        assert_eq!(config.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(config.volumes, ["/data"]);
        assert_eq!(config.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.layers[0].diff_id, Digest::of(b"layer"));
    }

    #[test]
    fn other_platforms_only_is_a_clear_error() {
        let (_dir, store) = store();
        let arm = docker_image(&store, "linux", "arm64");
        let s390 = docker_image(&store, "linux", "s390x");
        let top = list(
            &store,
            OCI_INDEX,
            &[(&arm, "linux", "arm64"), (&s390, "linux", "s390x")],
        );
        let err = resolve(&store, &top, &Platform::host()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("linux/arm64") && message.contains("linux/s390x"),
            "{message}"
        );
        assert!(message.contains("linux/amd64"), "{message}");
        let err = resolve(&store, &arm, &Platform::host()).unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
    }

    #[test]
    fn schema1_and_unknown_types_are_refused() {
        let digest = Digest::of(b"x");
        let v1 = br#"{"schemaVersion": 1, "name": "x", "fsLayers": []}"#;
        assert!(matches!(
            Manifest::parse(&digest, v1, None),
            Err(ManifestError::SchemaV1 { .. })
        ));
        let odd = br#"{"schemaVersion": 2, "mediaType": "text/plain"}"#;
        assert!(matches!(
            Manifest::parse(&digest, odd, None),
            Err(ManifestError::UnsupportedMediaType { .. })
        ));
        assert!(matches!(
            Manifest::parse(&digest, b"{", None),
            Err(ManifestError::Json { .. })
        ));
    }

    #[test]
    fn oci_manifest_without_media_type_is_recognised_by_shape() {
        let (_dir, store) = store();
        let config_digest = put(&store, &config("linux", "amd64"));
        let layer = store.put_bytes(b"layer").unwrap();
        let manifest = put(
            &store,
            &json!({
                "schemaVersion": 2,
                "config": descriptor(OCI_CONFIG, &config_digest, 1),
                "layers": [descriptor(OCI_LAYER, &layer, 5)]
            }),
        );
        let image = resolve(&store, &manifest, &Platform::host()).unwrap();
        assert_eq!(image.config_digest, config_digest);
        let name = Reference::parse("example.com/app").unwrap();
        let missing = resolve_reference(&store, &name, &Platform::host()).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "image example.com/app:latest is not in the image store"
        );
        store.tag(&name, &manifest).unwrap();
        let by_name = resolve_reference(&store, &name, &Platform::host()).unwrap();
        assert_eq!(by_name.manifest, manifest);
        assert_eq!(image.layers[0].media_type, OCI_LAYER);
    }
}
