//! One registry, spoken to over OCI distribution v2 through `oci-client`: authentication,
//! manifests and blob downloads, with retries and backoff on connection errors and 5xx/429
//! answers, and every failure turned into a [`RegistryError`] naming the registry and what was
//! asked for.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol, LayerDescriptor};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

use super::progress::Progress;
use crate::image::digest::Digest;
use crate::image::manifest;
use crate::image::reference::Reference;
use crate::image::store::{BlobWriter, StagedBlob, StoreError, MAX_METADATA_SIZE};

/// Media types we accept for manifests and indexes.
const MANIFEST_TYPES: &[&str] = &[
    manifest::OCI_INDEX,
    manifest::OCI_MANIFEST,
    manifest::DOCKER_LIST,
    manifest::DOCKER_MANIFEST,
];

/// A failure talking to a registry; every variant names the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error("registry {registry} refused access to {repository} (401/403 unauthorized): {detail}; check the credentials in the Docker config (docker login)")]
    Unauthorized {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("manifest for {repository}:{tag} not found on registry {registry} (404): unknown image, tag or repository")]
    ManifestNotFound {
        registry: String,
        repository: String,
        tag: String,
    },
    #[error("blob {digest} of {repository} not found on registry {registry} (404)")]
    BlobNotFound {
        registry: String,
        repository: String,
        digest: Digest,
    },
    #[error("registry {registry} answered HTTP {status} for {url}: {message}")]
    Server {
        registry: String,
        status: u16,
        url: String,
        message: String,
    },
    #[error("{what} {expected} from registry {registry}: content hashes to {actual} (corrupt or tampered)")]
    DigestMismatch {
        registry: String,
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {digest} from registry {registry}: got {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        registry: String,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("manifest {reference} from registry {registry} is {size} bytes, more than the {MAX_METADATA_SIZE} allowed")]
    ManifestTooLarge {
        registry: String,
        reference: String,
        size: u64,
    },
    #[error("registry {registry}: {detail}")]
    Protocol { registry: String, detail: String },
    #[error("registry {registry}: {source}")]
    Store {
        registry: String,
        source: StoreError,
    },
}

impl RegistryError {
    /// Whether trying again may succeed: connection failures, 5xx, 429.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Server { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubled for each next one.
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX);
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// A connection to one registry for one repository.
pub(super) struct Registry {
    client: Client,
    auth: RegistryAuth,
    registry: String,
    repository: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("registry", &self.registry)
            .field("repository", &self.repository)
            .finish_non_exhaustive()
    }
}

/// Registries spoken to over plain HTTP: the loopback ones, and those listed as insecure.
pub fn is_plain_http(domain: &str, insecure: &[String]) -> bool {
    let host = match domain.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => domain.split(':').next().unwrap_or(domain),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1") || insecure.iter().any(|i| i == domain)
}

impl Registry {
    pub(super) fn new(
        reference: &Reference,
        auth: RegistryAuth,
        insecure: &[String],
        retry: RetryPolicy,
    ) -> Self {
        let domain = reference.domain().to_owned();
        let protocol = if is_plain_http(&domain, insecure) {
            ClientProtocol::HttpsExcept(vec![domain.clone()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("rvm/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        Self {
            client: Client::new(config),
            auth,
            registry: domain,
            repository: reference.repository().to_owned(),
            retry,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.registry
    }

    fn by_tag(&self, tag: &str) -> oci_client::Reference {
        oci_client::Reference::with_tag(
            self.registry.clone(),
            self.repository.clone(),
            tag.to_owned(),
        )
    }

    fn by_digest(&self, digest: &Digest) -> oci_client::Reference {
        oci_client::Reference::with_digest(
            self.registry.clone(),
            self.repository.clone(),
            digest.to_string(),
        )
    }

    /// Runs `attempt` until it succeeds, fails for good, or the attempts are used up.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        progress: &dyn Progress,
        mut attempt: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut tried = 0;
        loop {
            tried += 1;
            match attempt().await {
                Err(err) if err.is_transient() && tried < self.retry.attempts => {
                    let delay = self.retry.delay(tried - 1);
                    tracing::debug!(registry = %self.registry, what, attempt = tried, %err, ?delay, "retrying");
                    progress.retrying(what, tried, &err);
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Logs in (basic, or a bearer token from the registry's token endpoint) when the registry
    /// asks for it.
    pub(super) async fn authenticate(
        &self,
        tag_or_digest: &str,
        progress: &dyn Progress,
    ) -> Result<()> {
        let reference = self.reference_for(tag_or_digest);
        self.retrying("authentication", progress, || async {
            self.client
                .auth(&reference, &self.auth, RegistryOperation::Pull)
                .await
                .map(|_| ())
                .map_err(|err| self.classify(err, tag_or_digest))
        })
        .await
    }

    fn reference_for(&self, tag_or_digest: &str) -> oci_client::Reference {
        match Digest::parse(tag_or_digest) {
            Ok(digest) => self.by_digest(&digest),
            Err(_) => self.by_tag(tag_or_digest),
        }
    }

    /// Fetches a manifest or index by tag or digest; its bytes and their digest (checked
    /// against `tag_or_digest` when that is a digest).
    pub(super) async fn manifest(
        &self,
        tag_or_digest: &str,
        progress: &dyn Progress,
    ) -> Result<(Vec<u8>, Digest)> {
        let reference = self.reference_for(tag_or_digest);
        let bytes = self
            .retrying("manifest", progress, || async {
                self.client
                    .pull_manifest_raw(&reference, &self.auth, MANIFEST_TYPES)
                    .await
                    .map(|(bytes, _)| bytes)
                    .map_err(|err| self.classify(err, tag_or_digest))
            })
            .await?;
        let size = bytes.len() as u64;
        if size > MAX_METADATA_SIZE {
            return Err(RegistryError::ManifestTooLarge {
                registry: self.registry.clone(),
                reference: tag_or_digest.to_owned(),
                size,
            });
        }
        let actual = Digest::of(&bytes);
        if let Ok(expected) = Digest::parse(tag_or_digest) {
            if expected != actual {
                return Err(RegistryError::DigestMismatch {
                    registry: self.registry.clone(),
                    what: "manifest",
                    expected,
                    actual,
                });
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Streams the blob `digest` of `size` bytes into `writer`, resuming after a broken
    /// connection where the registry allows ranges, and checks size and digest at the end.
    pub(super) async fn download(
        &self,
        digest: &Digest,
        size: u64,
        mut writer: BlobWriter,
        progress: &dyn Progress,
    ) -> Result<StagedBlob> {
        let reference = self.by_digest(digest);
        let text = digest.to_string();
        let descriptor = LayerDescriptor {
            digest: &text,
            urls: &None,
        };
        progress.blob_started(digest, size);
        let mut tried = 0;
        loop {
            tried += 1;
            match self
                .download_attempt(&reference, &descriptor, digest, size, &mut writer, progress)
                .await
            {
                Err(err) if err.is_transient() && tried < self.retry.attempts => {
                    let delay = self.retry.delay(tried - 1);
                    tracing::debug!(registry = %self.registry, %digest, attempt = tried, %err, "retrying download");
                    progress.retrying("blob download", tried, &err);
                    tokio::time::sleep(delay).await;
                }
                Err(err) => return Err(err),
                Ok(()) => break,
            }
        }
        let store_err = |source| RegistryError::Store {
            registry: self.registry.clone(),
            source,
        };
        // fsync of a large blob may take a while: keep it off the async workers.
        let staged = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|err| RegistryError::Protocol {
                registry: self.registry.clone(),
                detail: format!("saving blob {digest} failed: {err}"),
            })?
            .map_err(store_err)?;
        if staged.digest != *digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                what: "blob",
                expected: digest.clone(),
                actual: staged.digest,
            });
        }
        progress.blob_finished(digest);
        Ok(staged)
    }

    async fn download_attempt(
        &self,
        reference: &oci_client::Reference,
        descriptor: &LayerDescriptor<'_>,
        digest: &Digest,
        size: u64,
        writer: &mut BlobWriter,
        progress: &dyn Progress,
    ) -> Result<()> {
        let store_err = |source| RegistryError::Store {
            registry: self.registry.clone(),
            source,
        };
        let offset = writer.len();
        let response = self
            .client
            .pull_blob_stream_partial(reference, descriptor, offset, None)
            .await
            .map_err(|err| self.classify(err, &digest.to_string()))?;
        let mut stream = match response {
            BlobResponse::Partial(stream) => stream.stream,
            BlobResponse::Full(stream) => {
                if offset > 0 {
                    writer.restart().map_err(store_err)?;
                    progress.blob_restarted(digest);
                }
                stream.stream
            }
        };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client checks the digest at the end of a full response; report a
                // mismatch in our terms, with the digest we computed ourselves.
                Err(_) if writer.len() == size && writer.digest() != *digest => break,
                Err(err) => {
                    return Err(RegistryError::Unreachable {
                        registry: self.registry.clone(),
                        detail: format!(
                            "download of blob {digest} broke off after {} bytes: {err}",
                            writer.len()
                        ),
                    })
                }
            };
            if writer.len() + chunk.len() as u64 > size {
                return Err(RegistryError::SizeMismatch {
                    registry: self.registry.clone(),
                    digest: digest.clone(),
                    expected: size,
                    actual: writer.len() + chunk.len() as u64,
                });
            }
            // A chunk goes to the page cache; writing it in place is cheaper than a hop to a
            // blocking thread.
            writer.write(&chunk).map_err(store_err)?;
            progress.blob_advanced(digest, chunk.len() as u64);
        }
        if writer.len() < size {
            return Err(RegistryError::Unreachable {
                registry: self.registry.clone(),
                detail: format!(
                    "download of blob {digest} ended after {} of {size} bytes",
                    writer.len()
                ),
            });
        }
        Ok(())
    }

    /// Turns an `oci-client` error into ours; `target` is the tag or digest asked for.
    fn classify(&self, err: OciDistributionError, target: &str) -> RegistryError {
        let registry = self.registry.clone();
        let repository = self.repository.clone();
        let not_found = || match Digest::parse(target) {
            Ok(digest) if !target.is_empty() => RegistryError::BlobNotFound {
                registry: registry.clone(),
                repository: repository.clone(),
                digest,
            },
            _ => RegistryError::ManifestNotFound {
                registry: registry.clone(),
                repository: repository.clone(),
                tag: target.to_owned(),
            },
        };
        match err {
            OciDistributionError::RequestError(err) => RegistryError::Unreachable {
                registry,
                detail: error_chain(&err),
            },
            OciDistributionError::IoError(err) => RegistryError::Unreachable {
                registry,
                detail: err.to_string(),
            },
            OciDistributionError::UnauthorizedError { url } => RegistryError::Unauthorized {
                registry,
                repository,
                detail: format!("{url} answered 401"),
            },
            OciDistributionError::AuthenticationFailure(reason) => RegistryError::Unauthorized {
                registry,
                repository,
                detail: format!("the token endpoint refused: {}", reason.trim()),
            },
            OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
            OciDistributionError::RegistryError { envelope, url } => {
                let codes: Vec<_> = envelope.errors.iter().map(|e| &e.code).collect();
                let message = envelope.to_string();
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found()
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    RegistryError::Unauthorized {
                        registry,
                        repository,
                        detail: message,
                    }
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
                {
                    RegistryError::Server {
                        registry,
                        status: 429,
                        url,
                        message,
                    }
                } else {
                    RegistryError::Protocol {
                        registry,
                        detail: format!("{url}: {message}"),
                    }
                }
            }
            OciDistributionError::ServerError { code, url, message } => match code {
                404 => not_found(),
                401 | 403 => RegistryError::Unauthorized {
                    registry,
                    repository,
                    detail: format!("{url} answered {code}"),
                },
                _ => RegistryError::Server {
                    registry,
                    status: code,
                    url,
                    message: message.trim().chars().take(200).collect(),
                },
            },
            other => RegistryError::Protocol {
                registry,
                detail: other.to_string(),
            },
        }
    }
}

/// An error with its causes, `a: b: c` (reqwest's own message hides the cause).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_use_plain_http() {
        assert!(is_plain_http("localhost:5000", &[]));
        assert!(is_plain_http("127.0.0.1:40001", &[]));
        assert!(is_plain_http("[::1]:5000", &[]));
        assert!(!is_plain_http("docker.io", &[]));
        assert!(is_plain_http(
            "registry.lan:5000",
            &["registry.lan:5000".to_owned()]
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        assert_eq!(policy.delay(0), Duration::from_millis(100));
        assert_eq!(policy.delay(1), Duration::from_millis(200));
        assert_eq!(policy.delay(5), Duration::from_millis(500));
    }
}
