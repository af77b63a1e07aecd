//! Image references as Docker reads them: `busybox` means `docker.io/library/busybox:latest`,
//! `localhost:5000/foo:tag` names a private registry, `name@sha256:...` pins a digest.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// The registry a name without a domain lives on.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LENGTH: usize = 255;
const MAX_TAG_LENGTH: usize = 128;

/// Why a reference was refused; every variant names the reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference: empty")]
    Empty,
    #[error("invalid image reference {0:?}: a 64-character hexadecimal string is an image ID, not a name")]
    HexName(String),
    #[error("invalid image reference {reference:?}: repository name {name:?} must be lowercase")]
    Uppercase { reference: String, name: String },
    #[error("invalid image reference {reference:?}: bad path component {component:?} (lowercase letters and digits, separated by '.', '_', '__' or '-')")]
    BadComponent {
        reference: String,
        component: String,
    },
    #[error("invalid image reference {reference:?}: bad registry {domain:?}")]
    BadDomain { reference: String, domain: String },
    #[error("invalid image reference {reference:?}: bad tag {tag:?} (at most 128 of letters, digits, '_', '.', '-', not starting with '.' or '-')")]
    BadTag { reference: String, tag: String },
    #[error(
        "invalid image reference {reference:?}: name longer than {MAX_NAME_LENGTH} characters"
    )]
    TooLong { reference: String },
    #[error("invalid image reference {reference:?}: {source}")]
    BadDigest {
        reference: String,
        source: DigestError,
    },
}

/// A fully qualified image reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference as `docker pull` does; a reference with neither tag
    /// nor digest gets the tag `latest`.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::HexName(text.to_owned()));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(parse_digest(text, digest)?)),
            None => (text, None),
        };
        let (name, tag) = split_tag(rest);
        let (domain, path) = split_domain(name);
        if path.to_lowercase() != path {
            return Err(ReferenceError::Uppercase {
                reference: text.to_owned(),
                name: path,
            });
        }
        check_domain(text, &domain)?;
        check_path(text, &path)?;
        if let Some(tag) = tag {
            check_tag(text, tag)?;
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LENGTH {
            return Err(ReferenceError::TooLong {
                reference: text.to_owned(),
            });
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (and port): `docker.io`, `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.path
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        check_tag(tag, tag)?;
        Ok(Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The short form Docker prints: `busybox:latest` for `docker.io/library/busybox:latest`.
    pub fn familiar(&self) -> String {
        self.append_tag_and_digest(self.familiar_name())
    }

    /// The short repository name Docker prints: `busybox` for `docker.io/library/busybox`.
    pub fn familiar_name(&self) -> String {
        let mut name = self.name();
        if self.domain == DEFAULT_DOMAIN {
            name = self.path.clone();
            if let Some(short) = name.strip_prefix(OFFICIAL_REPO_PREFIX) {
                if !short.contains('/') {
                    name = short.to_owned();
                }
            }
        }
        name
    }

    fn append_tag_and_digest(&self, mut text: String) -> String {
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(&digest.to_string());
        }
        text
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.append_tag_and_digest(self.name()))
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

fn parse_digest(reference: &str, digest: &str) -> Result<Digest, ReferenceError> {
    Digest::parse(digest).map_err(|source| ReferenceError::BadDigest {
        reference: reference.to_owned(),
        source,
    })
}

/// Splits `name:tag`; a colon before the last slash belongs to a registry port.
fn split_tag(text: &str) -> (&str, Option<&str>) {
    match text.rfind(':') {
        Some(colon) if !text[colon..].contains('/') => (&text[..colon], Some(&text[colon + 1..])),
        _ => (text, None),
    }
}

/// Docker's rule: the first component is a registry if it has a `.` or `:`, is `localhost`, or
/// has an uppercase letter; otherwise the name lives on Docker Hub.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_owned();
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_REPO_PREFIX}{path}");
    }
    (domain, path)
}

fn check_domain(reference: &str, domain: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::BadDomain {
        reference: reference.to_owned(),
        domain: domain.to_owned(),
    };
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (domain, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    let valid_host = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty() && host.split('.').all(valid_domain_component)
    };
    if valid_host {
        Ok(())
    } else {
        Err(bad())
    }
}

fn valid_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

fn check_path(reference: &str, path: &str) -> Result<(), ReferenceError> {
    match path.split('/').find(|c| !valid_path_component(c)) {
        Some(component) => Err(ReferenceError::BadComponent {
            reference: reference.to_owned(),
            component: component.to_owned(),
        }),
        None => Ok(()),
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if !bytes.first().is_some_and(|b| alnum(*b)) || !bytes.last().is_some_and(|b| alnum(*b)) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(b) {
            let ok = matches!(separator.as_str(), "" | "." | "_" | "__")
                || separator.bytes().all(|s| s == b'-');
            if !ok {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(char::from(b));
        } else {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn check_tag(reference: &str, tag: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let valid = bytes.len() <= MAX_TAG_LENGTH
        && bytes.first().is_some_and(|b| word(*b))
        && bytes.iter().all(|b| word(*b) || *b == b'.' || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ReferenceError::BadTag {
            reference: reference.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn full(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            full("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            full("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(full("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(full("a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn registries_are_recognised_by_dot_colon_or_localhost() {
        assert_eq!(full("localhost:5000/foo:tag"), "localhost:5000/foo:tag");
        assert_eq!(full("localhost/foo"), "localhost/foo:latest");
        assert_eq!(full("quay.io/coreos/etcd"), "quay.io/coreos/etcd:latest");
        assert_eq!(full("127.0.0.1:5000/x"), "127.0.0.1:5000/x:latest");
        assert_eq!(full("[::1]:5000/x:y"), "[::1]:5000/x:y");
        assert_eq!(full("Registry/foo"), "Registry/foo:latest");
        let r = Reference::parse("localhost:5000/foo:tag").unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.repository(), "foo");
        assert_eq!(r.tag(), Some("tag"));
    }

    #[test]
    fn port_without_path_is_a_tag() {
        assert_eq!(full("localhost:5000"), "docker.io/library/localhost:5000");
    }

    #[test]
    fn digests_pin_without_default_tag() {
        let r = Reference::parse(&format!("busybox@{DIGEST}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), DIGEST);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{DIGEST}"));
        let both = Reference::parse(&format!("busybox:1@{DIGEST}")).unwrap();
        assert_eq!(both.tag(), Some("1"));
        assert_eq!(both.familiar(), format!("busybox:1@{DIGEST}"));
    }

    #[test]
    fn familiar_form_drops_docker_hub() {
        assert_eq!(
            Reference::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(
            Reference::parse("user/app").unwrap().familiar(),
            "user/app:latest"
        );
        assert_eq!(
            Reference::parse("localhost:5000/x").unwrap().familiar(),
            "localhost:5000/x:latest"
        );
    }

    #[test]
    fn separators_follow_the_grammar() {
        for good in ["a_b", "a__b", "a.b", "a-b", "a---b", "a1.b2_c3"] {
            assert!(Reference::parse(good).is_ok(), "{good} refused");
        }
        for bad in [
            "a___b", "a._b", "-a", "a-", "_a", "a..b", "a//b", "a/", "/a",
        ] {
            assert!(
                matches!(
                    Reference::parse(bad),
                    Err(ReferenceError::BadComponent { .. })
                ),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn bad_references_say_why() {
        let err = |text: &str| Reference::parse(text).unwrap_err();
        assert!(matches!(err(""), ReferenceError::Empty));
        assert!(matches!(err(&"a".repeat(64)), ReferenceError::HexName(_)));
        assert!(matches!(err("Busybox"), ReferenceError::Uppercase { .. }));
        assert!(matches!(err("busybox:"), ReferenceError::BadTag { .. }));
        assert!(matches!(err("busybox:-x"), ReferenceError::BadTag { .. }));
        assert!(matches!(
            err(&format!("b:{}", "t".repeat(129))),
            ReferenceError::BadTag { .. }
        ));
        assert!(matches!(
            err("busybox@sha256:abc"),
            ReferenceError::BadDigest { .. }
        ));
        assert!(matches!(
            err("local-.host:5000/x"),
            ReferenceError::BadDomain { .. }
        ));
        assert!(matches!(
            err("host:port/x"),
            ReferenceError::BadDomain { .. }
        ));
        assert!(matches!(
            err(&"a/".repeat(130)),
            ReferenceError::TooLong { .. } | ReferenceError::BadComponent { .. }
        ));
        assert!(matches!(
            err(&format!("x/{}", "a".repeat(260))),
            ReferenceError::TooLong { .. }
        ));
        let message = err("Busybox").to_string();
        assert!(
            message.contains("Busybox") && message.contains("lowercase"),
            "{message}"
        );
    }
}
