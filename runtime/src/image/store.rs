//! The content-addressed blob store (`<root>/images/blobs/sha256/<hex>`) and the index of image
//! names (`<root>/images/repositories.json`). Every write is atomic and every digest is checked.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use super::digest::{Digest, Hasher, HashingReader};
use super::fsutil::{self, TempDir};
use super::reference::Reference;
use crate::host::private;

/// Manifests, indexes and configs are read into memory; anything larger is refused.
pub const MAX_METADATA_SIZE: u64 = 16 << 20;

/// A failure of the image store, naming the blob, image or file involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation on the store failed.
    #[error("image store: cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Content did not hash to the digest it was stored or announced under.
    #[error("blob {expected}: content hashes to {actual} (corrupt or tampered)")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// The blob is not in the store.
    #[error("blob {0} is not in the image store")]
    BlobNotFound(Digest),
    /// A metadata blob larger than [`MAX_METADATA_SIZE`].
    #[error("blob {digest} is {size} bytes, more than the {MAX_METADATA_SIZE} bytes allowed for a manifest or config")]
    TooLarge { digest: Digest, size: u64 },
    /// `repositories.json` cannot be parsed.
    #[error("image index {} is corrupt: {source}", path.display())]
    CorruptIndex {
        path: PathBuf,
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The image store rooted at an rvm state directory (`/var/lib/rvm` or `--root`).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RepositoriesFile {
    /// Full reference (`docker.io/library/busybox:latest`) → digest of its manifest or index.
    images: BTreeMap<String, Digest>,
}

impl Store {
    /// Opens the store under `root`, creating its directories when missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let store = Self { root: root.into() };
        let images = store.root.join("images");
        // Each level named, so that one an older version made readable is narrowed too.
        for dir in [
            store.root.clone(),
            images.clone(),
            images.join("blobs"),
            store.blobs_dir(),
            store.tmp_dir(),
            store.layers_dir(),
        ] {
            private::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(store)
    }

    /// The rvm state directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where layer disks (`<diff_id hex>.erofs`) are kept.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Scratch space on the store's file system, for staging and unpacking.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("images").join("tmp")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("images").join("blobs").join("sha256")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images").join("repositories.json")
    }

    /// The file holding the blob `digest` (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores the bytes as a blob and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        self.write_blob(None, bytes)
    }

    /// Streams `reader` into the store. With `expected`, content that hashes differently is
    /// refused and nothing is left behind.
    pub fn write_blob(&self, expected: Option<&Digest>, reader: impl Read) -> Result<Digest> {
        let dir = self.blobs_dir();
        let temp = dir.join(fsutil::temp_name(""));
        let result = write_hashed(&temp, reader).and_then(|(digest, _)| {
            if let Some(expected) = expected.filter(|e| **e != digest) {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
            let path = self.blob_path(&digest);
            fs::rename(&temp, &path).map_err(io_err("rename blob into", &path))?;
            Ok(digest)
        });
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        let digest = result?;
        fsutil::sync_dir(&dir).map_err(io_err("sync", &dir))?;
        tracing::debug!(%digest, "blob stored");
        Ok(digest)
    }

    /// Opens a blob for streaming; the caller hashes what it reads (see [`Store::verify_blob`]).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound(digest.clone()),
            _ => StoreError::Io {
                action: "open blob",
                path,
                source,
            },
        })
    }

    /// Reads a small blob (manifest, index, config) and checks its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let file = self.open_blob(digest)?;
        let path = self.blob_path(digest);
        let size = file.metadata().map_err(io_err("stat", &path))?.len();
        if size > MAX_METADATA_SIZE {
            return Err(StoreError::TooLarge {
                digest: digest.clone(),
                size,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(MAX_METADATA_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read blob", &path))?;
        check_digest(digest, Digest::of(&bytes))?;
        Ok(bytes)
    }

    /// Re-hashes a stored blob of any size.
    pub fn verify_blob(&self, digest: &Digest) -> Result<()> {
        let file = self.open_blob(digest)?;
        let mut hasher = Hasher::new();
        let path = self.blob_path(digest);
        io::copy(&mut HashingReader::new(file, &mut hasher), &mut io::sink())
            .map_err(io_err("read blob", &path))?;
        check_digest(digest, hasher.finish())
    }

    /// Deletes a blob; a missing one is not an error.
    pub fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(StoreError::Io {
                action: "remove blob",
                path,
                source: err,
            }),
            _ => Ok(()),
        }
    }

    /// All blobs present, for garbage collection and checks.
    pub fn blobs(&self) -> Result<Vec<Digest>> {
        let dir = self.blobs_dir();
        let mut digests = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(digest) = entry.file_name().to_str().and_then(Digest::from_hex) {
                digests.push(digest);
            }
        }
        digests.sort();
        Ok(digests)
    }

    /// Starts a staging area where blobs are written before their digests are known to be wanted.
    pub fn stage(&self) -> Result<Staging> {
        let tmp = self.tmp_dir();
        let dir = TempDir::new_in(&tmp, "-stage").map_err(io_err("create staging dir in", &tmp))?;
        Ok(Staging { dir, count: 0 })
    }

    /// Moves a staged blob into the store (its digest was computed while staging). Returns
    /// whether the blob is new to the store.
    pub fn commit_staged(&self, staged: &StagedBlob) -> Result<bool> {
        let path = self.blob_path(&staged.digest);
        if path.is_file() {
            return Ok(false);
        }
        fs::rename(&staged.path, &path).map_err(io_err("rename blob into", &path))?;
        let dir = self.blobs_dir();
        fsutil::sync_dir(&dir).map_err(io_err("sync", &dir))?;
        Ok(true)
    }

    /// Removes temporary files and staging directories left by rvm processes that no longer
    /// run (a pull or load killed half-way). Returns how many entries were removed and the
    /// bytes they held.
    pub fn sweep_temp(&self) -> Result<(usize, u64)> {
        let (mut removed, mut bytes) = (0, 0);
        for dir in [self.tmp_dir(), self.blobs_dir(), self.layers_dir()] {
            let (count, size) =
                fsutil::sweep_dead_temp(&dir).map_err(io_err("sweep temporary files in", &dir))?;
            removed += count;
            bytes += size;
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "removed temporary files of interrupted rvm processes"
            );
        }
        Ok((removed, bytes))
    }

    /// Shared lock held while content is committed but not yet named (a pull or load between
    /// moving blobs in and tagging); garbage collection takes it exclusively.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        self.lock(FlockOperation::LockShared)
    }

    /// Exclusive lock for garbage collection (`rmi`, `system prune`).
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        self.lock(FlockOperation::LockExclusive)
    }

    fn lock(&self, operation: FlockOperation) -> Result<StoreLock> {
        let path = self.root.join("images").join("gc.lock");
        let file = private::file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock", &path))?;
        flock(&file, operation).map_err(|err| io_err("lock", &path)(err.into()))?;
        Ok(StoreLock { _file: file })
    }

    /// The manifest digest an image name points at; a digest reference resolves to its own
    /// digest when the blob is present.
    pub fn resolve(&self, reference: &Reference) -> Result<Option<Digest>> {
        if let Some(digest) = reference.digest() {
            return Ok(self.has_blob(digest).then(|| digest.clone()));
        }
        Ok(self.read_index()?.images.remove(&reference.to_string()))
    }

    /// Points `reference` at `digest`, replacing what it pointed at.
    pub fn tag(&self, reference: &Reference, digest: &Digest) -> Result<()> {
        self.update_index(|index| {
            index.images.insert(reference.to_string(), digest.clone());
        })?;
        tracing::info!(image = %reference, %digest, "tagged");
        Ok(())
    }

    /// Removes a name; returns whether it existed.
    pub fn untag(&self, reference: &Reference) -> Result<bool> {
        let mut existed = false;
        self.update_index(|index| existed = index.images.remove(&reference.to_string()).is_some())?;
        Ok(existed)
    }

    /// Every name with the digest it points at.
    pub fn images(&self) -> Result<BTreeMap<String, Digest>> {
        Ok(self.read_index()?.images)
    }

    fn read_index(&self) -> Result<RepositoriesFile> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::CorruptIndex { path, source }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(RepositoriesFile::default()),
            Err(source) => Err(StoreError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Read-modify-write of the index under an exclusive lock, replaced atomically.
    fn update_index(&self, change: impl FnOnce(&mut RepositoriesFile)) -> Result<()> {
        let lock_path = self.root.join("images").join("repositories.lock");
        let lock = private::file_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open lock", &lock_path))?;
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|err| io_err("lock", &lock_path)(err.into()))?;
        let mut index = self.read_index()?;
        change(&mut index);
        let path = self.index_path();
        let mut bytes =
            serde_json::to_vec_pretty(&index).map_err(|source| StoreError::CorruptIndex {
                path: path.clone(),
                source,
            })?;
        bytes.push(b'\n');
        fsutil::write_atomic(&path, &bytes).map_err(io_err("write", &path))
    }
}

fn check_digest(expected: &Digest, actual: Digest) -> Result<()> {
    if *expected == actual {
        Ok(())
    } else {
        Err(StoreError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}

/// Writes `reader` to a new file at `path`, fsynced, returning its digest and size.
fn write_hashed(path: &Path, reader: impl Read) -> Result<(Digest, u64)> {
    let file = fsutil::create_new(path).map_err(io_err("create", path))?;
    let mut hasher = Hasher::new();
    let mut out = BufWriter::new(file);
    io::copy(&mut HashingReader::new(reader, &mut hasher), &mut out)
        .map_err(io_err("write", path))?;
    let file = out
        .into_inner()
        .map_err(|err| io_err("write", path)(err.into_error()))?;
    file.sync_all().map_err(io_err("sync", path))?;
    let size = hasher.len();
    Ok((hasher.finish(), size))
}

/// A held store lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// A temporary area in the store's file system; whatever was not committed is removed on drop.
#[derive(Debug)]
pub struct Staging {
    dir: TempDir,
    count: u64,
}

/// A blob written to a staging area, with the digest of its content.
#[derive(Debug, Clone)]
pub struct StagedBlob {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

impl Staging {
    /// Writes `reader` to a new staged file, hashing it.
    pub fn write(&mut self, reader: impl Read) -> Result<StagedBlob> {
        self.count += 1;
        let path = self.dir.path().join(format!("blob-{}", self.count));
        let (digest, size) = write_hashed(&path, reader)?;
        Ok(StagedBlob { path, digest, size })
    }

    /// Starts a staged file written piece by piece (a download), hashed as it is written.
    pub fn writer(&mut self) -> Result<BlobWriter> {
        self.count += 1;
        let path = self.dir.path().join(format!("blob-{}", self.count));
        let file = fsutil::create_new(&path).map_err(io_err("create", &path))?;
        Ok(BlobWriter {
            path,
            file,
            hasher: Hasher::new(),
        })
    }

    /// Reads back a small staged file (at most `limit` bytes).
    pub fn read(&self, staged: &StagedBlob, limit: u64) -> Result<Vec<u8>> {
        if staged.size > limit {
            return Err(StoreError::TooLarge {
                digest: staged.digest.clone(),
                size: staged.size,
            });
        }
        fs::read(&staged.path).map_err(io_err("read", &staged.path))
    }
}

/// A staged blob being written; [`BlobWriter::finish`] syncs it and reports its digest.
#[derive(Debug)]
pub struct BlobWriter {
    path: PathBuf,
    file: File,
    hasher: Hasher,
}

impl BlobWriter {
    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(io_err("write", &self.path))?;
        self.hasher.update(bytes);
        Ok(())
    }

    /// How many bytes were written.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// Throws away what was written, to start over.
    pub fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.rewind())
            .map_err(io_err("truncate", &self.path))?;
        self.hasher = Hasher::new();
        Ok(())
    }

    /// Syncs the file and returns it as a staged blob.
    pub fn finish(self) -> Result<StagedBlob> {
        self.file.sync_all().map_err(io_err("sync", &self.path))?;
        Ok(StagedBlob {
            size: self.hasher.len(),
            digest: self.hasher.finish(),
            path: self.path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn blobs_are_content_addressed_and_verified() {
        let (_dir, store) = store();
        let digest = store.put_bytes(b"hello").unwrap();
        assert_eq!(digest, Digest::of(b"hello"));
        assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
        fs::write(store.blob_path(&digest), b"tampered").unwrap();
        assert!(matches!(
            store.read_blob(&digest),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(store.verify_blob(&digest).is_err());
    }

    #[test]
    fn the_store_is_private() {
        use crate::host::private::tests::mode_of;
        let (dir, store) = store();
        let digest = store.put_bytes(b"secret layer").unwrap();
        assert_eq!(mode_of(&store.blob_path(&digest)), 0o600);
        for sub in [
            "",
            "images",
            "images/blobs",
            "images/blobs/sha256",
            "images/tmp",
            "layers",
        ] {
            assert_eq!(mode_of(&dir.path().join(sub)), 0o700, "{sub}");
        }
    }

    #[test]
    fn mismatching_write_leaves_nothing() {
        let (_dir, store) = store();
        let wrong = Digest::of(b"other");
        let err = store.write_blob(Some(&wrong), &b"hello"[..]).unwrap_err();
        assert!(err.to_string().contains(&wrong.to_string()), "{err}");
        assert!(store.blobs().unwrap().is_empty());
        let leftovers = fs::read_dir(store.blobs_dir()).unwrap().count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn names_point_at_digests() {
        let (_dir, store) = store();
        let digest = store.put_bytes(b"{}").unwrap();
        let busybox = Reference::parse("busybox").unwrap();
        assert_eq!(store.resolve(&busybox).unwrap(), None);
        store.tag(&busybox, &digest).unwrap();
        let again = Store::open(store.root()).unwrap();
        assert_eq!(again.resolve(&busybox).unwrap(), Some(digest.clone()));
        let by_digest = Reference::parse(&format!("busybox@{digest}")).unwrap();
        assert_eq!(again.resolve(&by_digest).unwrap(), Some(digest));
        assert!(again.untag(&busybox).unwrap());
        assert_eq!(again.resolve(&busybox).unwrap(), None);
    }
}
