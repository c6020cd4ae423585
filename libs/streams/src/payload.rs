//! An entry's payload on the wire. Writers compress it (LZ4 block, its
//! size in front) into the `z` field: bundles of similar events and rows
//! shrink several times, and every byte saved is a byte Redis does not
//! copy into its append-only file, keep in memory or rewrite. Readers
//! accept both that and a plain `e` field (entries of earlier writers,
//! replayed dead letters, hand-written test entries) and hand consumers
//! the plain bytes either way.

use std::collections::HashMap;

use redis::Value;
use redis::streams::StreamId;

/// The field of an entry whose payload is plain bytes.
pub const PAYLOAD_FIELD: &str = "e";
/// The field of an entry whose payload is compressed.
pub const COMPRESSED_FIELD: &str = "z";

/// Largest payload a compressed field may announce: an entry is at most
/// [`crate::MAX_BUNDLE_BYTES`] before compression (a single event larger
/// than that goes alone, within the edge's body limit), so anything far
/// beyond is a corrupt size, not an allocation to make.
const MAX_PLAIN_BYTES: usize = 64 << 20;

/// The bytes to store in [`COMPRESSED_FIELD`].
pub fn compress(plain: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size(plain)
}

/// Why a compressed payload could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("compressed payload announces {0} bytes, more than an entry can hold")]
    TooLarge(usize),
    #[error("compressed payload is corrupt")]
    Corrupt(#[from] lz4_flex::block::DecompressError),
    #[error("compressed payload announces {announced} bytes and holds {held}")]
    Length { announced: usize, held: usize },
}

/// The plain bytes of a compressed payload.
pub fn decompress(bytes: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let announced = bytes
        .get(..4)
        .map(|size| u32::from_le_bytes(size.try_into().expect("4 bytes")) as usize)
        .unwrap_or(0);
    if announced > MAX_PLAIN_BYTES {
        return Err(PayloadError::TooLarge(announced));
    }
    let plain = lz4_flex::block::decompress_size_prepended(bytes)?;
    if plain.len() != announced {
        return Err(PayloadError::Length {
            announced,
            held: plain.len(),
        });
    }
    Ok(plain)
}

/// The plain payload of an entry's fields as `XRANGE` returns them (for
/// tools that read a stream outside a consumer group); `None` when it has
/// none or it cannot be read.
pub fn plain(fields: &HashMap<String, Value>) -> Option<Vec<u8>> {
    match (fields.get(COMPRESSED_FIELD), fields.get(PAYLOAD_FIELD)) {
        (Some(Value::BulkString(bytes)), _) => decompress(bytes).ok(),
        (None, Some(Value::BulkString(bytes))) => Some(bytes.clone()),
        _ => None,
    }
}

/// Takes the payload out of an entry (moved, not copied, when plain);
/// `None` when it has none. A compressed payload that cannot be read is
/// handed over as it is, with a warning: the consumer's decoding fails and
/// the entry goes to the dead letters byte for byte.
pub(crate) fn take(entry: &mut StreamId) -> Option<Vec<u8>> {
    if let Some(Value::BulkString(bytes)) = entry.map.remove(COMPRESSED_FIELD) {
        return Some(decompress(&bytes).unwrap_or_else(|error| {
            tracing::warn!(id = %entry.id, %error, "unreadable entry payload");
            bytes
        }));
    }
    match entry.map.remove(PAYLOAD_FIELD) {
        Some(Value::BulkString(bytes)) => Some(bytes),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(field: &str, bytes: &[u8]) -> StreamId {
        let mut entry = StreamId {
            id: "1-0".into(),
            ..StreamId::default()
        };
        entry
            .map
            .insert(field.into(), Value::BulkString(bytes.to_vec()));
        entry
    }

    #[test]
    fn compressed_and_plain_entries_read_as_the_same_bytes() {
        let bundle = br#"{"name":"screen_view","path":"/a"}"#.repeat(50);
        let packed = compress(&bundle);
        assert!(packed.len() * 4 < bundle.len(), "a bundle shrinks");
        for mut e in [
            entry(COMPRESSED_FIELD, &packed),
            entry(PAYLOAD_FIELD, &bundle),
        ] {
            assert_eq!(plain(&e.map).as_deref(), Some(&bundle[..]));
            assert_eq!(take(&mut e), Some(bundle.clone()));
        }
        assert_eq!(take(&mut StreamId::default()), None);
    }

    #[test]
    fn corrupt_payloads_are_refused_without_allocating_their_claim() {
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"junk");
        assert!(matches!(decompress(&huge), Err(PayloadError::TooLarge(_))));
        let mut cut = compress(&b"abcdefgh".repeat(100));
        cut.truncate(cut.len() / 2);
        assert!(matches!(
            decompress(&cut),
            Err(PayloadError::Corrupt(_) | PayloadError::Length { .. })
        ));
        let mut e = entry(COMPRESSED_FIELD, &cut);
        assert_eq!(take(&mut e), Some(cut), "handed over as it is");
    }
}
