//! Rows in ClickHouse's RowBinary format, written and read by our own
//! code: the events row is encoded once, by the enricher, and the sink
//! forwards those bytes into its INSERT without decoding them (a row of
//! some 35 strings was otherwise decoded, copied into 35 allocations,
//! encoded again and freed, per event).
//!
//! RowBinary, as 18.16 and current servers read it: a `String` is its
//! length as an unsigned LEB128 number, then its bytes; `UInt32`,
//! `UInt64` and `Float64` are little-endian; a `DateTime` is a `UInt32`.
//! `LowCardinality(String)` columns take a plain `String`. Columns come in
//! the order of the row type's fields, which the INSERT names.

use bytes::Bytes;
use clickhouse::Row;

use crate::{AliasRow, EventRow, ProfileRow};

/// A row that writes itself as RowBinary.
pub trait EncodeRow: Send + Sync {
    /// The columns its values fill, in order.
    const COLUMNS: &'static [&'static str];

    fn encode(&self, out: &mut Vec<u8>);

    /// The row's bytes when it holds them already encoded.
    fn encoded(&self) -> Option<&[u8]> {
        None
    }
}

/// Bytes an INSERT gathers before it sends them as one (compressed) chunk.
const CHUNK_BYTES: usize = 256 * 1024;

/// One INSERT whose body is RowBinary rows of one type. The request
/// starts with the first row; the rows follow in chunks as they gather.
pub(crate) struct RowInsert {
    insert: clickhouse::insert_formatted::BufInsertFormatted,
    started: bool,
    scratch: Vec<u8>,
}

impl RowInsert {
    pub fn new<T: EncodeRow>(client: &clickhouse::Client, table: &str) -> RowInsert {
        let sql = format!(
            "INSERT INTO {table} ({}) FORMAT RowBinary",
            T::COLUMNS.join(",")
        );
        RowInsert {
            insert: client
                .insert_formatted_with(sql)
                .buffered_with_capacity(CHUNK_BYTES),
            started: false,
            scratch: Vec::new(),
        }
    }

    pub async fn write<T: EncodeRow>(&mut self, row: &T) -> Result<(), clickhouse::error::Error> {
        if !self.started {
            // Writing nothing opens the request (a buffered write alone
            // would wait for a full chunk or the end).
            self.insert.write(&[]).await?;
            self.started = true;
        }
        match row.encoded() {
            Some(bytes) => self.insert.write_buffered(bytes),
            None => {
                self.scratch.clear();
                row.encode(&mut self.scratch);
                self.insert.write_buffered(&self.scratch);
            }
        }
        if self.insert.buf_len() >= CHUNK_BYTES {
            self.insert.flush().await?;
        }
        Ok(())
    }

    /// Sends what is left and waits for the server's answer. An insert
    /// dropped without this is aborted: the server stores none of it.
    pub async fn end(mut self) -> Result<(), clickhouse::error::Error> {
        self.insert.end().await
    }
}

/// Why RowBinary bytes could not be read as a row.
pub use analytics_event::binary::BinaryError as RowBinaryError;
use analytics_event::binary::{Reader, put_str};

/// An `events` row's values, borrowed: what the enricher encodes from the
/// parts it holds, without copying them into an [`EventRow`] first.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EventFields<'a> {
    pub id: &'a str,
    pub project_id: &'a str,
    pub name: &'a str,
    pub device_id: &'a str,
    pub profile_id: &'a str,
    pub session_id: &'a str,
    pub created_at: u32,
    pub received_at: u32,
    pub path: &'a str,
    pub origin: &'a str,
    pub referrer: &'a str,
    pub referrer_name: &'a str,
    pub referrer_type: &'a str,
    pub utm_source: &'a str,
    pub utm_medium: &'a str,
    pub utm_campaign: &'a str,
    pub utm_term: &'a str,
    pub utm_content: &'a str,
    pub country: &'a str,
    pub region: &'a str,
    pub city: &'a str,
    pub latitude: f64,
    pub longitude: f64,
    pub os: &'a str,
    pub os_version: &'a str,
    pub browser: &'a str,
    pub browser_version: &'a str,
    pub device: &'a str,
    pub brand: &'a str,
    pub model: &'a str,
    /// JSON object text.
    pub properties: &'a str,
    pub sdk_name: &'a str,
    pub sdk_version: &'a str,
}

impl EventFields<'_> {
    /// Appends the row in RowBinary, its columns in [`EventRow`]'s order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let r = self;
        for s in [
            r.id,
            r.project_id,
            r.name,
            r.device_id,
            r.profile_id,
            r.session_id,
        ] {
            put_str(out, s);
        }
        out.extend_from_slice(&r.created_at.to_le_bytes());
        out.extend_from_slice(&r.received_at.to_le_bytes());
        for s in [
            r.path,
            r.origin,
            r.referrer,
            r.referrer_name,
            r.referrer_type,
            r.utm_source,
            r.utm_medium,
            r.utm_campaign,
            r.utm_term,
            r.utm_content,
            r.country,
            r.region,
            r.city,
        ] {
            put_str(out, s);
        }
        out.extend_from_slice(&r.latitude.to_le_bytes());
        out.extend_from_slice(&r.longitude.to_le_bytes());
        for s in [
            r.os,
            r.os_version,
            r.browser,
            r.browser_version,
            r.device,
            r.brand,
            r.model,
            r.properties,
            r.sdk_name,
            r.sdk_version,
        ] {
            put_str(out, s);
        }
    }
}

impl EncodeRow for EventRow {
    const COLUMNS: &'static [&'static str] = <EventRow as Row>::COLUMN_NAMES;

    fn encode(&self, out: &mut Vec<u8>) {
        self.fields().encode(out);
    }
}

impl EventRow {
    /// The row's values, borrowed.
    pub fn fields(&self) -> EventFields<'_> {
        EventFields {
            id: &self.id,
            project_id: &self.project_id,
            name: &self.name,
            device_id: &self.device_id,
            profile_id: &self.profile_id,
            session_id: &self.session_id,
            created_at: self.created_at,
            received_at: self.received_at,
            path: &self.path,
            origin: &self.origin,
            referrer: &self.referrer,
            referrer_name: &self.referrer_name,
            referrer_type: &self.referrer_type,
            utm_source: &self.utm_source,
            utm_medium: &self.utm_medium,
            utm_campaign: &self.utm_campaign,
            utm_term: &self.utm_term,
            utm_content: &self.utm_content,
            country: &self.country,
            region: &self.region,
            city: &self.city,
            latitude: self.latitude,
            longitude: self.longitude,
            os: &self.os,
            os_version: &self.os_version,
            browser: &self.browser,
            browser_version: &self.browser_version,
            device: &self.device,
            brand: &self.brand,
            model: &self.model,
            properties: &self.properties,
            sdk_name: &self.sdk_name,
            sdk_version: &self.sdk_version,
        }
    }

    /// The row RowBinary `bytes` hold (exactly one).
    pub fn decode(bytes: &[u8]) -> Result<EventRow, RowBinaryError> {
        let mut r = Reader::new(bytes);
        let row = EventRow {
            id: r.string()?,
            project_id: r.string()?,
            name: r.string()?,
            device_id: r.string()?,
            profile_id: r.string()?,
            session_id: r.string()?,
            created_at: r.u32()?,
            received_at: r.u32()?,
            path: r.string()?,
            origin: r.string()?,
            referrer: r.string()?,
            referrer_name: r.string()?,
            referrer_type: r.string()?,
            utm_source: r.string()?,
            utm_medium: r.string()?,
            utm_campaign: r.string()?,
            utm_term: r.string()?,
            utm_content: r.string()?,
            country: r.string()?,
            region: r.string()?,
            city: r.string()?,
            latitude: r.f64()?,
            longitude: r.f64()?,
            os: r.string()?,
            os_version: r.string()?,
            browser: r.string()?,
            browser_version: r.string()?,
            device: r.string()?,
            brand: r.string()?,
            model: r.string()?,
            properties: r.string()?,
            sdk_name: r.string()?,
            sdk_version: r.string()?,
        };
        r.end()?;
        Ok(row)
    }
}

impl EncodeRow for ProfileRow {
    const COLUMNS: &'static [&'static str] = <ProfileRow as Row>::COLUMN_NAMES;

    fn encode(&self, out: &mut Vec<u8>) {
        let r = self;
        for s in [
            &r.id,
            &r.project_id,
            &r.first_name,
            &r.last_name,
            &r.email,
            &r.avatar,
            &r.properties,
        ] {
            put_str(out, s);
        }
        out.extend_from_slice(&r.created_at.to_le_bytes());
        out.extend_from_slice(&r.version.to_le_bytes());
    }
}

impl EncodeRow for AliasRow {
    const COLUMNS: &'static [&'static str] = <AliasRow as Row>::COLUMN_NAMES;

    fn encode(&self, out: &mut Vec<u8>) {
        for s in [&self.project_id, &self.alias, &self.profile_id] {
            put_str(out, s);
        }
        out.extend_from_slice(&self.created_at.to_le_bytes());
    }
}

/// The kinds of value of the `events` row, in order: what
/// [`EncodedEvent::new`] checks without building the row.
#[derive(Clone, Copy)]
enum Column {
    Str,
    U32,
    F64,
}

const EVENT_LAYOUT: [Column; 33] = {
    use Column::{F64, Str, U32};
    [
        Str, Str, Str, Str, Str, Str, U32, U32, Str, Str, Str, Str, Str, Str, Str, Str, Str, Str,
        Str, Str, Str, F64, F64, Str, Str, Str, Str, Str, Str, Str, Str, Str, Str,
    ]
};

/// An `events` row as the RowBinary bytes the enricher wrote (a slice of
/// the stream entry they came in, not a copy): inserted as they are, read
/// only for the few fields a redelivery check or a deduplication token
/// needs, and decoded whole only for a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent(Bytes);

/// The fields of an encoded event that identify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey<'a> {
    pub id: &'a str,
    pub project_id: &'a str,
    pub name: &'a str,
    pub created_at: u32,
}

impl EncodedEvent {
    /// Bytes that hold one whole events row; checked, so a row that would
    /// fail the INSERT of everyone else's rows is refused here, alone.
    pub fn new(bytes: Bytes) -> Result<EncodedEvent, RowBinaryError> {
        let mut r = Reader::new(&bytes);
        for column in EVENT_LAYOUT {
            match column {
                Column::Str => r.str().map(|_| ())?,
                Column::U32 => r.u32().map(|_| ())?,
                Column::F64 => r.f64().map(|_| ())?,
            }
        }
        r.end()?;
        Ok(EncodedEvent(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The row's id, project, name and time.
    pub fn key(&self) -> EventKey<'_> {
        let mut r = Reader::new(&self.0);
        let mut read = || -> Result<EventKey<'_>, RowBinaryError> {
            let (id, project_id, name) = (r.str()?, r.str()?, r.str()?);
            for _ in 0..3 {
                r.str()?;
            }
            Ok(EventKey {
                id,
                project_id,
                name,
                created_at: r.u32()?,
            })
        };
        let key = read();
        debug_assert!(key.is_ok(), "an encoded event is checked when made");
        key.unwrap_or(EventKey {
            id: "",
            project_id: "",
            name: "",
            created_at: 0,
        })
    }

    /// The row itself.
    pub fn decode(&self) -> EventRow {
        let row = EventRow::decode(&self.0);
        debug_assert!(row.is_ok(), "an encoded event is checked when made");
        row.unwrap_or_default()
    }
}

impl From<&EventRow> for EncodedEvent {
    fn from(row: &EventRow) -> EncodedEvent {
        EncodedEvent::from(&row.fields())
    }
}

impl From<&EventFields<'_>> for EncodedEvent {
    fn from(fields: &EventFields<'_>) -> EncodedEvent {
        let mut bytes = Vec::with_capacity(384 + fields.properties.len());
        fields.encode(&mut bytes);
        EncodedEvent(Bytes::from(bytes))
    }
}

impl EncodeRow for EncodedEvent {
    const COLUMNS: &'static [&'static str] = <EventRow as Row>::COLUMN_NAMES;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }

    fn encoded(&self) -> Option<&[u8]> {
        Some(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row whose every field holds a value of its own (a field the
    /// encoder skipped or misplaced shows in the round trip).
    fn sample() -> EventRow {
        filled()
    }

    #[test]
    fn events_round_trip_and_keep_their_key() {
        let row = sample();
        let encoded = EncodedEvent::from(&row);
        assert_eq!(EventRow::decode(encoded.bytes()).unwrap(), row);
        assert_eq!(EncodedEvent::new(encoded.0.clone()).unwrap(), encoded);
        assert_eq!(encoded.decode(), row);
        assert_eq!(
            encoded.key(),
            EventKey {
                id: &row.id,
                project_id: &row.project_id,
                name: &row.name,
                created_at: row.created_at,
            }
        );
        assert_eq!(EventRow::COLUMNS.len(), EVENT_LAYOUT.len());
    }

    /// What the crate's own serializer would send for `row`: its fields
    /// by the INSERT's column names, strings, `UInt32` times, the `UInt64`
    /// version and `Float64` coordinates.
    fn expected<T: EncodeRow + serde::Serialize>(row: &T) -> Vec<u8> {
        let fields = serde_json::to_value(row).unwrap();
        let mut out = Vec::new();
        for column in T::COLUMNS {
            match &fields[*column] {
                serde_json::Value::String(s) => put_str(&mut out, s),
                n if column.ends_with("_at") => {
                    let n = u32::try_from(n.as_u64().unwrap()).unwrap();
                    out.extend_from_slice(&n.to_le_bytes());
                }
                n if *column == "version" => {
                    out.extend_from_slice(&n.as_u64().unwrap().to_le_bytes())
                }
                n => out.extend_from_slice(&n.as_f64().unwrap().to_le_bytes()),
            }
        }
        out
    }

    fn filled<T: serde::Serialize + serde::de::DeserializeOwned + Default>() -> T {
        let mut fields = serde_json::to_value(T::default()).unwrap();
        for (i, (name, value)) in fields.as_object_mut().unwrap().iter_mut().enumerate() {
            *value = match value {
                serde_json::Value::String(_) => format!("{name}-ä-{}", "x".repeat(i * 5)).into(),
                _ if name.ends_with("_at") || name == "version" => (1_767_607_200 + i).into(),
                _ => (i as f64 + 0.25).into(),
            };
        }
        serde_json::from_value(fields).unwrap()
    }

    #[test]
    fn every_row_type_writes_its_columns_in_the_inserts_order() {
        fn check<T: EncodeRow + serde::Serialize + serde::de::DeserializeOwned + Default>() {
            let row: T = filled();
            let mut out = Vec::new();
            row.encode(&mut out);
            assert_eq!(out, expected(&row), "{}", std::any::type_name::<T>());
        }
        check::<EventRow>();
        check::<ProfileRow>();
        check::<AliasRow>();
    }

    #[test]
    fn lengths_are_leb128_and_numbers_little_endian() {
        let mut out = Vec::new();
        put_str(&mut out, &"x".repeat(300));
        assert_eq!(&out[..2], &[0xac, 0x02]);
        assert_eq!(out.len(), 302);
        let alias = AliasRow {
            project_id: "p".into(),
            alias: "a".into(),
            profile_id: "u".into(),
            created_at: 0x0102_0304,
        };
        let mut out = Vec::new();
        alias.encode(&mut out);
        assert_eq!(out, [1, b'p', 1, b'a', 1, b'u', 4, 3, 2, 1]);
    }

    #[test]
    fn broken_rows_are_refused() {
        let bytes = EncodedEvent::from(&sample()).bytes().to_vec();
        let new = |b: &[u8]| EncodedEvent::new(Bytes::copy_from_slice(b));
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(new(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(new(&long), Err(RowBinaryError::Trailing(1))));
        let mut bad = bytes.clone();
        bad[1] = 0xff; // the id's first byte
        assert!(matches!(new(&bad), Err(RowBinaryError::NotUtf8)));
        // A length in six bytes: the server could read it otherwise.
        let mut padded = vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        padded.extend_from_slice(&bytes[1..]);
        assert!(matches!(new(&padded), Err(RowBinaryError::LongLength)));
    }
}
