//! What a cached disk was made from: the [`Source`] kinds the cache is generic over, their records
//! (`<key>.source`), and the [`Liveness`] verdict pruning acts on.
//!
//! A kind owns three things and nothing else: how a source is keyed, how its record is written
//! and read back, and whether a key alone names a source (so that a disk without a record can
//! still be judged). What "gone" means is decided by the caller of
//! [`LayerCache::prune`](super::LayerCache::prune), which may need state the kind does not have
//! (the image store's names).

/// A kind of source the cache builds disks from.
pub trait Source: Sized + std::fmt::Debug {
    /// The cache key: the stem of the disk's and the record's file names. A function of the
    /// source's identity only, so that the same source always finds the same disk.
    fn key(&self) -> String;

    /// Whether `name` has the shape of this kind's keys; other files in the cache directory are
    /// not the cache's and are left alone.
    fn is_key(name: &str) -> bool;

    /// The record's bytes.
    fn to_record(&self) -> Vec<u8>;

    /// Reads a record back.
    fn parse_record(bytes: &[u8]) -> Result<Self, RecordError>;

    /// The source a disk without a record was made from, when the key alone says it (`None`:
    /// such a disk cannot be judged and is kept).
    fn from_key(key: &str) -> Option<Self>;
}

/// A `<key>.source` file that is not a record of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} is not `{expected}`")]
pub struct RecordError {
    pub line: usize,
    pub expected: &'static str,
}

/// Whether a disk's source is still there, as the caller of a prune judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Still there: the disk stays.
    Live,
    /// Gone, for this reason: the disk and its record go.
    Gone(&'static str),
    /// Cannot tell, for this reason: the disk stays (and the reason is logged).
    Unknown(String),
}

/// Reads `<field> <value>\n` at the start of `rest`; returns the value and what follows.
pub(super) fn field<'a>(
    rest: &'a [u8],
    line: usize,
    field: &str,
    expected: &'static str,
) -> Result<(&'a [u8], &'a [u8]), RecordError> {
    let bad = RecordError { line, expected };
    let end = rest.iter().position(|&b| b == b'\n').ok_or(bad.clone())?;
    let value = rest[..end]
        .strip_prefix(field.as_bytes())
        .and_then(|value| value.strip_prefix(b" "))
        .ok_or(bad)?;
    Ok((value, &rest[end + 1..]))
}

/// Whether `name` is `len` lowercase hex digits.
pub(super) fn is_hex(name: &str, len: usize) -> bool {
    name.len() == len && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
