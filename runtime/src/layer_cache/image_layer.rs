//! The image-layer source kind: a layer of the image store, identified by its diff_id (the
//! digest of its uncompressed tar stream). The key is the diff_id's hex digits, so the key alone
//! names the source and a disk without a record is judged like one with a record. Whether the
//! layer is gone (no image name in the store references its diff_id) is for the caller to say:
//! see `image::gc`.

use crate::image::Digest;

use super::source::{self, RecordError, Source};

/// An image layer, by its diff_id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    pub diff_id: Digest,
}

impl Source for ImageLayer {
    fn key(&self) -> String {
        self.diff_id.hex().to_owned()
    }

    fn is_key(name: &str) -> bool {
        source::is_hex(name, 64)
    }

    /// One line, `diff_id sha256:<hex>`.
    fn to_record(&self) -> Vec<u8> {
        format!("diff_id {}\n", self.diff_id).into_bytes()
    }

    fn parse_record(bytes: &[u8]) -> Result<Self, RecordError> {
        const EXPECTED: &str = "diff_id sha256:<64 hex digits>";
        let bad = RecordError {
            line: 1,
            expected: EXPECTED,
        };
        let (value, rest) = source::field(bytes, 1, "diff_id", EXPECTED)?;
        let diff_id = std::str::from_utf8(value)
            .ok()
            .and_then(|text| Digest::parse(text).ok())
            .ok_or(bad)?;
        if !rest.is_empty() {
            return Err(RecordError {
                line: 2,
                expected: "the end of the record",
            });
        }
        Ok(Self { diff_id })
    }

    fn from_key(key: &str) -> Option<Self> {
        Digest::from_hex(key).map(|diff_id| Self { diff_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_keys_name_the_layer() {
        let layer = ImageLayer {
            diff_id: Digest::of(b"layer"),
        };
        let record = layer.to_record();
        assert_eq!(
            String::from_utf8(record.clone()).unwrap(),
            format!("diff_id sha256:{}\n", layer.diff_id.hex())
        );
        assert_eq!(ImageLayer::parse_record(&record).unwrap(), layer);
        let key = layer.key();
        assert!(ImageLayer::is_key(&key));
        assert!(!ImageLayer::is_key(&key[..32]));
        assert_eq!(ImageLayer::from_key(&key), Some(layer));
        assert_eq!(ImageLayer::from_key("nothex"), None);
    }

    #[test]
    fn bad_records_are_named() {
        let bad = |line, expected| Err(RecordError { line, expected });
        let expected = "diff_id sha256:<64 hex digits>";
        assert_eq!(ImageLayer::parse_record(b""), bad(1, expected));
        assert_eq!(
            ImageLayer::parse_record(b"diff_id sha256:abc\n"),
            bad(1, expected)
        );
        assert_eq!(
            ImageLayer::parse_record(b"dev 1\nino 2\ndir /x\n"),
            bad(1, expected)
        );
        let mut extra = ImageLayer {
            diff_id: Digest::of(b"x"),
        }
        .to_record();
        extra.extend_from_slice(b"more\n");
        assert_eq!(
            ImageLayer::parse_record(&extra),
            bad(2, "the end of the record")
        );
    }
}
