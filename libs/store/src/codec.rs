//! How records travel on the enriched stream: binary frames, several per
//! entry. A frame is a marker byte, the record's table, the length of the
//! row (u32, little endian) and the row in bincode (varint integers).
//! Frames delimit themselves, so a bundle is their concatenation.
//!
//! Entries that start with `{` are JSON records separated by newlines: what
//! enrichers before the binary form wrote, and what dead letters hold (a
//! refused row is dead-lettered as JSON, readable in `dlq list`), so a
//! replayed letter decodes too. Sinks therefore upgrade before enrichers.

use analytics_event::bundle_documents;
use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Record;

/// First byte of every binary frame (never `{` or whitespace).
const MARK: u8 = 0xA7;
const HEADER: usize = 6;

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame cut short: {0} bytes left")]
    Truncated(usize),
    #[error("not a record frame (first byte {0:#04x})")]
    NotAFrame(u8),
    #[error("unknown table tag {0}")]
    UnknownTable(u8),
    #[error("row: {0}")]
    Row(#[from] bincode::Error),
    #[error("JSON record: {0}")]
    Json(#[from] serde_json::Error),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

fn put<T: Serialize>(tag: u8, row: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[MARK, tag, 0, 0, 0, 0]);
    // Writing plain structs of strings and numbers into a Vec cannot fail.
    let _ = options().serialize_into(&mut *out, row);
    let len = (out.len() - start - HEADER) as u32;
    out[start + 2..start + HEADER].copy_from_slice(&len.to_le_bytes());
}

/// Appends `record` to `out` as one frame.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Events(row) => put(0, row, out),
        Record::Profiles(row) => put(1, row, out),
        Record::ProfileAliases(row) => put(2, row, out),
    }
}

fn row<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    Ok(options().deserialize(body)?)
}

fn decode_frame(frame: &[u8]) -> Result<Record, CodecError> {
    let body = &frame[HEADER..];
    match frame[1] {
        0 => row(body).map(Record::Events),
        1 => row(body).map(Record::Profiles),
        2 => row(body).map(Record::ProfileAliases),
        tag => Err(CodecError::UnknownTable(tag)),
    }
}

/// The records of one enriched entry, each with its own bytes. A broken
/// frame header ends the walk: what follows it cannot be delimited, so it
/// is returned as one failed piece.
pub fn decode_bundle(payload: &[u8]) -> Vec<(&[u8], Result<Record, CodecError>)> {
    if payload.first().is_some_and(|&b| b == b'{') {
        return bundle_documents(payload)
            .map(|line| (line, serde_json::from_slice(line).map_err(CodecError::from)))
            .collect();
    }
    let mut records = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        if rest[0] != MARK {
            records.push((rest, Err(CodecError::NotAFrame(rest[0]))));
            break;
        }
        let len = rest
            .get(2..HEADER)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let Some(end) = len.map(|len| HEADER + len).filter(|&end| end <= rest.len()) else {
            records.push((rest, Err(CodecError::Truncated(rest.len()))));
            break;
        };
        let (frame, tail) = rest.split_at(end);
        records.push((frame, decode_frame(frame)));
        rest = tail;
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AliasRow, EventRow, ProfileRow};

    fn records() -> Vec<Record> {
        vec![
            Record::Events(EventRow {
                id: "e1".into(),
                name: "line\nbreak \u{1F600}".into(),
                latitude: -33.87,
                created_at: 1_767_607_200,
                properties: r#"{"a":[1,2]}"#.into(),
                ..EventRow::default()
            }),
            Record::Profiles(ProfileRow {
                id: "p1".into(),
                version: u64::MAX,
                ..ProfileRow::default()
            }),
            Record::ProfileAliases(AliasRow {
                alias: "a".into(),
                profile_id: "p1".into(),
                ..AliasRow::default()
            }),
        ]
    }

    fn bundle(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            encode_record(record, &mut out);
        }
        out
    }

    #[test]
    fn bundles_of_frames_round_trip() {
        let records = records();
        let payload = bundle(&records);
        let decoded: Vec<Record> = decode_bundle(&payload)
            .into_iter()
            .map(|(_, r)| r.unwrap())
            .collect();
        assert_eq!(decoded, records);
        // Each piece is a frame of its own: it decodes alone (a dead letter).
        let (second, _) = &decode_bundle(&payload)[1];
        assert_eq!(decode_bundle(second).len(), 1);
        assert_eq!(decode_bundle(second)[0].1.as_ref().unwrap(), &records[1]);
    }

    #[test]
    fn json_records_still_decode() {
        let records = records();
        let lines: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        let payload = lines.join("\n");
        let decoded: Vec<Record> = decode_bundle(payload.as_bytes())
            .into_iter()
            .map(|(_, r)| r.unwrap())
            .collect();
        assert_eq!(decoded, records);
    }

    #[test]
    fn broken_frames_fail_alone_or_end_the_walk() {
        let records = records();
        let mut payload = bundle(&records[..1]);
        let good = payload.len();
        // A frame with an unknown table: delimited, so only it fails.
        payload.extend_from_slice(&[MARK, 9, 1, 0, 0, 0, 0]);
        encode_record(&records[2], &mut payload);
        let decoded = decode_bundle(&payload);
        assert_eq!(decoded.len(), 3);
        assert!(decoded[0].1.is_ok() && decoded[2].1.is_ok());
        assert!(matches!(decoded[1].1, Err(CodecError::UnknownTable(9))));
        // A length past the end: the rest is one failed piece.
        let mut cut = payload[..good].to_vec();
        cut.extend_from_slice(&[MARK, 0, 200, 0, 0, 0, 1, 2]);
        let decoded = decode_bundle(&cut);
        assert_eq!(decoded.len(), 2);
        assert!(matches!(decoded[1].1, Err(CodecError::Truncated(8))));
        assert!(matches!(
            decode_bundle(b"[1,2]")[0].1,
            Err(CodecError::NotAFrame(b'['))
        ));
        // A frame whose row is cut inside: bincode refuses it.
        let mut short = bundle(&records[..1]);
        short.truncate(short.len() - 3);
        let len = (short.len() - HEADER) as u32;
        short[2..HEADER].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            decode_bundle(&short)[0].1,
            Err(CodecError::Row(_))
        ));
    }
}
