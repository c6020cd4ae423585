//! Several documents in one stream entry: how the raw stream carries
//! events (binary, each after its length), and how edges before that
//! carried them and sinks' JSON records were carried (lines of JSON).

use std::borrow::Cow;

use crate::RawEvent;
use crate::binary::{Reader, put_len};

/// First byte of a bundle of binary events; a bundle of JSON lines starts
/// with `{` or a blank.
const BINARY_BUNDLE: u8 = 0xB1;

/// Appends an event's binary form to a bundle of them (the first one
/// starts the bundle).
pub fn push_raw_event(bundle: &mut Vec<u8>, event: &[u8]) {
    if bundle.is_empty() {
        bundle.push(BINARY_BUNDLE);
    }
    put_len(bundle, event.len());
    bundle.extend_from_slice(event);
}

/// One document of a raw stream entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawDocument<'a> {
    Json(&'a [u8]),
    Binary(&'a [u8]),
    /// What follows a length that runs past the entry's end.
    Cut(&'a [u8]),
}

impl<'a> RawDocument<'a> {
    /// The event, its strings borrowed from the entry where it is binary.
    pub fn decode(&self) -> Result<RawEvent<'a>, String> {
        match self {
            RawDocument::Json(bytes) => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            RawDocument::Binary(bytes) => RawEvent::decode(bytes).map_err(|e| e.to_string()),
            RawDocument::Cut(_) => Err("the entry is cut short".into()),
        }
    }

    /// The document as an entry of its own (to park it, and replay it).
    pub fn alone(&self) -> Cow<'a, [u8]> {
        match self {
            RawDocument::Json(bytes) => Cow::Borrowed(bytes),
            // Still marked binary, so a replay reads it as what it is.
            RawDocument::Cut(bytes) => Cow::Owned([&[BINARY_BUNDLE], *bytes].concat()),
            RawDocument::Binary(bytes) => {
                let mut alone = Vec::with_capacity(bytes.len() + 6);
                push_raw_event(&mut alone, bytes);
                Cow::Owned(alone)
            }
        }
    }
}

/// The documents of a raw stream entry, binary or JSON lines.
pub fn raw_documents(payload: &[u8]) -> Box<dyn Iterator<Item = RawDocument<'_>> + Send + '_> {
    match payload.split_first() {
        Some((&BINARY_BUNDLE, frames)) => {
            let mut r = Reader::new(frames);
            Box::new(std::iter::from_fn(move || {
                let rest = r.rest();
                if rest.is_empty() {
                    return None;
                }
                match r.bytes() {
                    Ok(bytes) => Some(RawDocument::Binary(bytes)),
                    Err(_) => {
                        r = Reader::new(&[]);
                        Some(RawDocument::Cut(rest))
                    }
                }
            }))
        }
        _ => Box::new(bundle_documents(payload).map(RawDocument::Json)),
    }
}

/// The documents of a bundled payload: JSON documents separated by `\n`
/// (compact JSON never holds a raw newline: inside strings it is escaped),
/// so one `XADD` and one acknowledgement serve many events.
pub fn bundle_documents(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_split_into_their_documents() {
        // A newline inside a value is escaped by the encoder, so it cannot
        // split a document.
        let docs = [
            serde_json::json!({"name": "a\nb", "n": 1}),
            serde_json::json!({"name": "c"}),
        ];
        let bundle = docs
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let back: Vec<serde_json::Value> = bundle_documents(bundle.as_bytes())
            .map(|d| serde_json::from_slice(d).unwrap())
            .collect();
        assert_eq!(back, docs);
        // One document without a separator is a bundle of one; stray blank
        // lines are not documents.
        assert_eq!(bundle_documents(br#"{"a":1}"#).count(), 1);
        assert_eq!(bundle_documents(b"{}\n\n \n{}\n").count(), 2);
    }

    #[test]
    fn binary_bundles_hold_events_after_their_lengths() {
        let mut bundle = Vec::new();
        let events: Vec<Vec<u8>> = [b"one".as_slice(), &[b'\n'; 200], b""]
            .iter()
            .map(|e| e.to_vec())
            .collect();
        for event in &events {
            push_raw_event(&mut bundle, event);
        }
        let read: Vec<RawDocument> = raw_documents(&bundle).collect();
        assert_eq!(
            read,
            events
                .iter()
                .map(|e| RawDocument::Binary(e))
                .collect::<Vec<_>>()
        );
        // Each parks as a bundle of one, which reads back as itself.
        let alone = read[1].alone();
        assert_eq!(
            raw_documents(&alone).collect::<Vec<_>>(),
            vec![RawDocument::Binary(&events[1])]
        );
        // A cut entry gives what it holds, then what is cut, once.
        let cut = &bundle[..bundle.len() - 150];
        let read: Vec<RawDocument> = raw_documents(cut).collect();
        assert_eq!(read[0], RawDocument::Binary(b"one"));
        assert!(matches!(read[1], RawDocument::Cut(_)));
        assert_eq!(read.len(), 2);
        assert!(read[1].decode().is_err());
        let parked = read[1].alone();
        assert!(matches!(
            raw_documents(&parked).collect::<Vec<_>>()[..],
            [RawDocument::Cut(_)]
        ));
        // Lines of JSON are read as before.
        assert_eq!(
            raw_documents(b"{}\n{}").collect::<Vec<_>>(),
            vec![RawDocument::Json(b"{}"), RawDocument::Json(b"{}")]
        );
    }
}
