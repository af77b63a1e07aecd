//! The images the store names, as `rvm images` lists them, and finding images by name or ID
//! (`rvm rmi`).

use super::digest::Digest;
use super::manifest::{self, Platform};
use super::reference::Reference;
use super::store::{Store, StoreError};

/// A failure to list or find images.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image index names {name:?}, which is not a valid reference")]
    BadName { name: String },
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("image ID {id} is ambiguous: it names {} different images", .count)]
    Ambiguous { id: String, count: usize },
}

/// One name of an image, with what `rvm images` shows about it.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub reference: Reference,
    /// The manifest or index the name points at.
    pub digest: Digest,
    /// The image ID: the digest of its config (for the platform asked for), as Docker shows.
    pub id: Option<Digest>,
    /// When the image was built (RFC 3339), if its config says.
    pub created: Option<String>,
    /// Bytes of the config and layer blobs (compressed as shipped).
    pub size: u64,
    /// Why the image cannot be resolved for the platform, if it cannot.
    pub problem: Option<String>,
}

/// Every name in the store, sorted.
pub fn list(store: &Store, platform: &Platform) -> Result<Vec<ImageSummary>, CatalogError> {
    let mut summaries = Vec::new();
    for (name, digest) in store.images()? {
        let reference =
            Reference::parse(&name).map_err(|_| CatalogError::BadName { name: name.clone() })?;
        summaries.push(summarise(store, reference, digest, platform));
    }
    Ok(summaries)
}

fn summarise(
    store: &Store,
    reference: Reference,
    digest: Digest,
    platform: &Platform,
) -> ImageSummary {
    match manifest::resolve(store, &digest, platform) {
        Ok(image) => {
            let config_size =
                std::fs::metadata(store.blob_path(&image.config_digest)).map_or(0, |m| m.len());
            ImageSummary {
                reference,
                digest,
                id: Some(image.config_digest),
                created: image.config.created,
                size: config_size + image.layers.iter().map(|l| l.size).sum::<u64>(),
                problem: None,
            }
        }
        Err(err) => ImageSummary {
            reference,
            digest,
            id: None,
            created: None,
            size: 0,
            problem: Some(err.to_string()),
        },
    }
}

/// The names `text` means: a name in the store (`busybox`, `busybox:1.36`,
/// `name@sha256:...`), else every name of the image whose ID (config digest) or manifest digest
/// starts with `text` (`sha256:` optional).
pub fn find(
    store: &Store,
    text: &str,
    platform: &Platform,
) -> Result<Vec<Reference>, CatalogError> {
    if let Ok(reference) = Reference::parse(text) {
        if store.images()?.contains_key(&reference.to_string()) {
            return Ok(vec![reference]);
        }
    }
    let prefix = text.strip_prefix("sha256:").unwrap_or(text);
    let is_id =
        !prefix.is_empty() && prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_id {
        return Err(CatalogError::NotFound(text.to_owned()));
    }
    let prefix = prefix.to_ascii_lowercase();
    let mut matches: Vec<(Digest, Reference)> = Vec::new();
    for summary in list(store, platform)? {
        let by_id = summary
            .id
            .as_ref()
            .filter(|id| id.hex().starts_with(&prefix));
        let by_digest = summary
            .digest
            .hex()
            .starts_with(&prefix)
            .then_some(&summary.digest);
        if let Some(key) = by_id.or(by_digest) {
            matches.push((key.clone(), summary.reference));
        }
    }
    let distinct: std::collections::BTreeSet<_> = matches.iter().map(|(key, _)| key).collect();
    match distinct.len() {
        0 => Err(CatalogError::NotFound(text.to_owned())),
        1 => Ok(matches
            .into_iter()
            .map(|(_, reference)| reference)
            .collect()),
        count => Err(CatalogError::Ambiguous {
            id: text.to_owned(),
            count,
        }),
    }
}
