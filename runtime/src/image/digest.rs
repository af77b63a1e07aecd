//! SHA-256 content digests (`sha256:<hex>`): parsing, computing, and hashing byte streams.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A digest that is not a valid `sha256:<64 lowercase hex digits>`.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The text is not `algorithm:encoded` with a known shape.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Malformed(String),
    /// A well-formed digest of an algorithm we do not support.
    #[error("unsupported digest algorithm {algorithm:?} in {digest:?}: only sha256 is supported")]
    Unsupported { algorithm: String, digest: String },
}

/// A SHA-256 digest, the identity of every blob and layer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        let Some((algorithm, encoded)) = text.split_once(':') else {
            return Err(DigestError::Malformed(text.to_owned()));
        };
        if algorithm != "sha256" {
            let known_shape = !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            if known_shape && !encoded.is_empty() {
                return Err(DigestError::Unsupported {
                    algorithm: algorithm.to_owned(),
                    digest: text.to_owned(),
                });
            }
            return Err(DigestError::Malformed(text.to_owned()));
        }
        Self::from_hex(encoded).ok_or_else(|| DigestError::Malformed(text.to_owned()))
    }

    /// Builds a digest from its 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self {
            hex: hex.to_owned(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut hasher = Hasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A short form for log lines and display (12 hex digits, as Docker prints image IDs).
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;

    fn try_from(digest: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Self::parse(digest.as_ref())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 that also counts the bytes it has seen.
#[derive(Debug, Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    /// A hasher that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// How many bytes were fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        let bytes = self.sha.finalize();
        let mut hex = String::with_capacity(64);
        for byte in bytes {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Digest { hex }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes every byte read through it into a borrowed [`Hasher`].
#[derive(Debug)]
pub struct HashingReader<'h, R> {
    inner: R,
    hasher: &'h mut Hasher,
}

impl<'h, R: Read> HashingReader<'h, R> {
    /// Wraps `inner`, feeding `hasher`.
    pub fn new(inner: R, hasher: &'h mut Hasher) -> Self {
        Self { inner, hasher }
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_digests() {
        let text = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::parse(text).unwrap().to_string(), text);
        assert!(matches!(
            Digest::parse("sha512:abcd"),
            Err(DigestError::Unsupported { .. })
        ));
        for bad in [
            "sha256:abc",
            "e3b0c442",
            "sha256:",
            "SHA256:00",
            &text.to_uppercase(),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hashing_reader_feeds_its_hasher() {
        let mut hasher = Hasher::new();
        let mut out = Vec::new();
        HashingReader::new(&b"hello"[..], &mut hasher)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(hasher.len(), 5);
        assert_eq!(hasher.finish(), Digest::of(b"hello"));
    }
}
