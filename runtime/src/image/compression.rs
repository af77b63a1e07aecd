//! Layer and archive compression, recognised by magic bytes: none, gzip or zstd.

use std::io::{self, BufRead, Read};

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A compression we recognise but do not read.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("{0} compression is not supported (only gzip and zstd)")]
    Unsupported(&'static str),
    #[error("cannot read stream header: {0}")]
    Io(#[from] io::Error),
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

impl Compression {
    /// Recognises the compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Result<Self, CompressionError> {
        if head.starts_with(GZIP_MAGIC) {
            Ok(Self::Gzip)
        } else if head.starts_with(ZSTD_MAGIC) {
            Ok(Self::Zstd)
        } else if head.starts_with(BZIP2_MAGIC) {
            Err(CompressionError::Unsupported("bzip2"))
        } else if head.starts_with(XZ_MAGIC) {
            Err(CompressionError::Unsupported("xz"))
        } else {
            Ok(Self::None)
        }
    }
}

/// Peeks at `reader` and returns a reader of the decompressed stream. Concatenated gzip members
/// are read as one stream, as `gzip -d` does.
pub fn decompress<'a, R: BufRead + 'a>(
    mut reader: R,
) -> Result<(Compression, Box<dyn Read + 'a>), CompressionError> {
    let head = fill_at_least(&mut reader, XZ_MAGIC.len())?;
    let compression = Compression::detect(&head)?;
    let decoded: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    };
    Ok((compression, decoded))
}

/// The first `want` bytes (fewer at end of stream), without consuming them.
fn fill_at_least<R: BufRead>(reader: &mut R, want: usize) -> io::Result<Vec<u8>> {
    let buffered = reader.fill_buf()?;
    // A BufReader returns at least 8 KiB when the stream has it; a shorter first read only
    // happens at the end of the stream, so peeking at what is buffered is enough.
    Ok(buffered[..buffered.len().min(want)].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn round_trip(compressed: Vec<u8>, expected: Compression) {
        let (found, mut reader) = decompress(&compressed[..]).unwrap();
        assert_eq!(found, expected);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"layer bytes");
    }

    #[test]
    fn detects_and_decodes_each_kind() {
        round_trip(b"layer bytes".to_vec(), Compression::None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"layer bytes").unwrap();
        round_trip(gz.finish().unwrap(), Compression::Gzip);
        round_trip(
            zstd::encode_all(&b"layer bytes"[..], 1).unwrap(),
            Compression::Zstd,
        );
    }

    #[test]
    fn refuses_unsupported_kinds() {
        assert!(matches!(
            Compression::detect(b"BZh91AY"),
            Err(CompressionError::Unsupported("bzip2"))
        ));
    }
}
