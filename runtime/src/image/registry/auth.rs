//! Registry credentials, read from the Docker client's config file as `docker login` writes it:
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, its `auths` map keyed by registry
//! (`host[:port]`, optionally with a scheme and path; Docker Hub's key is
//! `https://index.docker.io/v1/`), each entry with `auth` (base64 of `user:password`) or
//! `username` and `password`. Credential helpers (`credsStore`, `credHelpers`) are not run.
//! A registry without an entry is accessed anonymously (a bearer token is still fetched when
//! the registry asks for one).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// A Docker config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read Docker config {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("Docker config {} is not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("Docker config {}: the auth entry of {registry} is not base64 of user:password", path.display())]
    BadAuth { path: PathBuf, registry: String },
}

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Logins by registry domain (`docker.io`, `127.0.0.1:5000`).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    logins: BTreeMap<String, Login>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// No logins: every registry is accessed anonymously.
    pub fn none() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the login for `domain`.
    pub fn insert(&mut self, domain: &str, login: Login) {
        self.logins.insert(normalise_key(domain), login);
    }

    /// The Docker config file the Docker client would use, if a home is known.
    pub fn docker_config_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
    }

    /// Reads the Docker config (a missing file means no logins).
    pub fn from_docker_config() -> Result<Self, AuthError> {
        match Self::docker_config_path() {
            Some(path) => Self::from_file(&path),
            None => Ok(Self::none()),
        }
    }

    /// Reads logins from a Docker config file (a missing file means no logins).
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Self::none()),
            Err(source) => {
                return Err(AuthError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let config: DockerConfig =
            serde_json::from_slice(&bytes).map_err(|source| AuthError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        let mut credentials = Self::none();
        for (key, entry) in config.auths {
            let login = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    decode_auth(&auth).ok_or_else(|| AuthError::BadAuth {
                        path: path.to_path_buf(),
                        registry: key.clone(),
                    })?
                }
                (_, Some(username), Some(password)) => Login { username, password },
                _ => continue,
            };
            credentials.insert(&key, login);
        }
        Ok(credentials)
    }

    /// The login for a registry domain, if any.
    pub fn login(&self, domain: &str) -> Option<&Login> {
        self.logins.get(&normalise_key(domain))
    }

    /// What to present to the registry of `domain`.
    pub(super) fn auth_for(&self, domain: &str) -> RegistryAuth {
        match self.login(domain) {
            Some(login) => RegistryAuth::Basic(login.username.clone(), login.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`.
fn normalise_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        other => other.to_owned(),
    }
}

fn decode_auth(auth: &str) -> Option<Login> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Login {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_logins_are_found_by_domain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                    "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                    "ghcr.io": {{}}
                }}, "credsStore": "desktop"}}"#
            ),
        )
        .unwrap();
        let credentials = Credentials::from_file(&path).unwrap();
        let hub = credentials.login("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cret:x")
        );
        assert_eq!(credentials.login("127.0.0.1:5000").unwrap().username, "bob");
        assert!(credentials.login("ghcr.io").is_none());
        assert!(!format!("{hub:?}").contains("s3cret"));
    }

    #[test]
    fn missing_config_means_anonymous_and_bad_auth_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let none = Credentials::from_file(&dir.path().join("absent.json")).unwrap();
        assert!(none.login("docker.io").is_none());
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"auths": {"r.example": {"auth": "!!"}}}"#).unwrap();
        let err = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("r.example"), "{err}");
    }
}
