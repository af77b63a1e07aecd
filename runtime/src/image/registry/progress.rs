//! What a pull reports while it runs, for a progress display; every method has a silent default.

use super::client::RegistryError;
use crate::image::digest::Digest;

/// Receives pull progress; called from the pull's tasks, hence `Send + Sync`.
pub trait Progress: Send + Sync {
    /// The manifest was resolved to the image `digest` with these layer blobs (digest, size);
    /// the config is fetched next, then the layers.
    fn resolved(&self, _manifest: &Digest, _layers: &[(Digest, u64)]) {}
    /// A blob is already in the store and will not be downloaded.
    fn blob_present(&self, _digest: &Digest) {}
    /// A download of `size` bytes starts.
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    /// `bytes` more bytes arrived.
    fn blob_advanced(&self, _digest: &Digest, _bytes: u64) {}
    /// The registry ignored a range request: the download starts over from byte 0.
    fn blob_restarted(&self, _digest: &Digest) {}
    /// The blob is downloaded and its digest checked.
    fn blob_finished(&self, _digest: &Digest) {}
    /// A transient failure; the step is tried again.
    fn retrying(&self, _what: &str, _attempt: u32, _error: &RegistryError) {}
    /// The disk of the layer blob `digest` is ready (`created`: built by this pull).
    fn layer_ready(&self, _digest: &Digest, _created: bool) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}
