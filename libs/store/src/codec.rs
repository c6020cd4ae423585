//! How records travel on the enriched stream: binary frames, several per
//! entry. A frame is a marker byte, the record's table, the length of the
//! row (u32, little endian) and the row: an `events` row in ClickHouse's
//! RowBinary (table tag 3), which the sink inserts as it is; profiles and
//! aliases in bincode (varint integers). Events in bincode (tag 0, what
//! enrichers before RowBinary frames wrote) are still read. Frames delimit
//! themselves, so a bundle is their concatenation.
//!
//! Entries that start with `{` are JSON records separated by newlines: what
//! enrichers before the binary form wrote, and what dead letters hold (a
//! refused row is dead-lettered as JSON, readable in `dlq list`), so a
//! replayed letter decodes too. Sinks therefore upgrade before enrichers.

use analytics_event::bundle_documents;
use bincode::Options;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::rowbinary::{EncodedEvent, RowBinaryError};
use crate::{AliasRow, EventRow, ProfileRow, Record};

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
    #[error("events row: {0}")]
    RowBinary(#[from] RowBinaryError),
    #[error("JSON record: {0}")]
    Json(#[from] serde_json::Error),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Appends a frame of table `tag` whose row `write` appends.
fn frame(tag: u8, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[MARK, tag, 0, 0, 0, 0]);
    write(out);
    let len = (out.len() - start - HEADER) as u32;
    out[start + 2..start + HEADER].copy_from_slice(&len.to_le_bytes());
}

fn put<T: Serialize>(tag: u8, row: &T, out: &mut Vec<u8>) {
    // Writing plain structs of strings and numbers into a Vec cannot fail.
    frame(tag, out, |out| {
        let _ = options().serialize_into(&mut *out, row);
    });
}

/// Table tags of frames.
const EVENTS_BINCODE: u8 = 0;
const PROFILES: u8 = 1;
const ALIASES: u8 = 2;
const EVENTS_ROWBINARY: u8 = 3;

/// Appends `record` to `out` as one frame (an encoded events row copied as
/// it is).
pub fn encode_frame(record: &Frame, out: &mut Vec<u8>) {
    match record {
        Frame::Event(event) => frame(EVENTS_ROWBINARY, out, |out| {
            out.extend_from_slice(event.bytes())
        }),
        Frame::Profile(row) => put(PROFILES, row, out),
        Frame::Alias(row) => put(ALIASES, row, out),
    }
}

/// A decoded frame as the sink takes it: an events row still encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event(EncodedEvent),
    Profile(ProfileRow),
    Alias(AliasRow),
}

impl From<Frame> for Record {
    fn from(frame: Frame) -> Record {
        match frame {
            Frame::Event(event) => Record::Events(event.decode()),
            Frame::Profile(row) => Record::Profiles(row),
            Frame::Alias(row) => Record::ProfileAliases(row),
        }
    }
}

impl From<Record> for Frame {
    fn from(record: Record) -> Frame {
        match record {
            Record::Events(row) => Frame::Event(EncodedEvent::from(&row)),
            Record::Profiles(row) => Frame::Profile(row),
            Record::ProfileAliases(row) => Frame::Alias(row),
        }
    }
}

fn row<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    Ok(options().deserialize(body)?)
}

fn decode_frame(payload: &Bytes, frame: &[u8]) -> Result<Frame, CodecError> {
    let body = &frame[HEADER..];
    match frame[1] {
        EVENTS_ROWBINARY => Ok(Frame::Event(EncodedEvent::new(payload.slice_ref(body))?)),
        EVENTS_BINCODE => row::<EventRow>(body).map(|r| Frame::Event(EncodedEvent::from(&r))),
        PROFILES => row(body).map(Frame::Profile),
        ALIASES => row(body).map(Frame::Alias),
        tag => Err(CodecError::UnknownTable(tag)),
    }
}

/// The records of one enriched entry, each with its own bytes.
pub fn decode_bundle(payload: &[u8]) -> Vec<(Bytes, Result<Record, CodecError>)> {
    decode_frames(&Bytes::copy_from_slice(payload))
        .into_iter()
        .map(|(bytes, frame)| (bytes, frame.map(Record::from)))
        .collect()
}

/// The frames of one enriched entry, each with its own bytes (slices of
/// `payload`), events left encoded. A broken frame header ends the walk:
/// what follows it cannot be delimited, so it is returned as one failed
/// piece.
pub fn decode_frames(payload: &Bytes) -> Vec<(Bytes, Result<Frame, CodecError>)> {
    if payload.first().is_some_and(|&b| b == b'{') {
        return bundle_documents(payload)
            .map(|line| {
                let record = serde_json::from_slice::<Record>(line).map_err(CodecError::from);
                (payload.slice_ref(line), record.map(Frame::from))
            })
            .collect();
    }
    let mut frames = Vec::new();
    let mut rest: &[u8] = payload;
    while !rest.is_empty() {
        if rest[0] != MARK {
            frames.push((payload.slice_ref(rest), Err(CodecError::NotAFrame(rest[0]))));
            break;
        }
        let len = rest
            .get(2..HEADER)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let Some(end) = len.map(|len| HEADER + len).filter(|&end| end <= rest.len()) else {
            let error = CodecError::Truncated(rest.len());
            frames.push((payload.slice_ref(rest), Err(error)));
            break;
        };
        let (frame, tail) = rest.split_at(end);
        frames.push((payload.slice_ref(frame), decode_frame(payload, frame)));
        rest = tail;
    }
    frames
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
            encode_frame(&record.clone().into(), &mut out);
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
    fn events_are_rowbinary_frames_and_bincode_ones_still_decode() {
        let records = records();
        let payload = bundle(&records[..1]);
        assert_eq!(payload[1], EVENTS_ROWBINARY);
        let Ok(Frame::Event(event)) = &decode_frames(&Bytes::from(payload.clone()))[0].1 else {
            panic!("not an events frame");
        };
        assert_eq!(&payload[HEADER..], event.bytes());
        let Record::Events(row) = &records[0] else {
            unreachable!()
        };
        let mut old = Vec::new();
        put(EVENTS_BINCODE, row, &mut old);
        assert_eq!(decode_bundle(&old)[0].1.as_ref().unwrap(), &records[0]);
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
        encode_frame(&records[2].clone().into(), &mut payload);
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
        // A frame whose row is cut inside is refused.
        let mut short = bundle(&records[..1]);
        short.truncate(short.len() - 3);
        let len = (short.len() - HEADER) as u32;
        short[2..HEADER].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            decode_bundle(&short)[0].1,
            Err(CodecError::RowBinary(_))
        ));
    }
}
