//! The raw event: a validated client event plus what the edge knows about
//! its request. The edge writes it in a binary form of its own
//! ([`RawEvent::encode`]), several to a raw stream entry (see
//! [`crate::raw_documents`]); edges before it wrote lines of JSON, which
//! are still read.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Properties;
use crate::binary::{BinaryError, Reader, put_str};

/// First byte of an event's binary form (a JSON document starts with `{`).
const BINARY_V1: u8 = 1;

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Track,
    Identify,
    Increment,
    Decrement,
    Alias,
}

impl EventKind {
    const ALL: [EventKind; 5] = [
        EventKind::Track,
        EventKind::Identify,
        EventKind::Increment,
        EventKind::Decrement,
        EventKind::Alias,
    ];

    /// The kind's byte in the binary form; fixed, whatever the order above.
    fn byte(self) -> u8 {
        match self {
            EventKind::Track => 0,
            EventKind::Identify => 1,
            EventKind::Increment => 2,
            EventKind::Decrement => 3,
            EventKind::Alias => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Track => "track",
            EventKind::Identify => "identify",
            EventKind::Increment => "increment",
            EventKind::Decrement => "decrement",
            EventKind::Alias => "alias",
        }
    }
}

/// One accepted event as written to the raw stream. Its strings borrow
/// from what it was made of where they can: the request and its stamp at
/// the edge, the stream entry's bytes in the enricher (about a dozen
/// allocations per event fewer on each side).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawEvent<'a> {
    pub id: Cow<'a, str>,
    pub project_id: Cow<'a, str>,
    pub kind: EventKind,
    /// Event name for `track`; the kind's name otherwise.
    pub name: Cow<'a, str>,
    pub device_id: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub profile_id: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub session_id: Cow<'a, str>,
    /// The client's own event time, epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_time_ms: Option<i64>,
    /// The client's clock when it sent the event, for skew correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_sent_at_ms: Option<i64>,
    pub received_at_ms: i64,
    /// Whether `id` came from the client (so a retry carries it again).
    #[serde(default)]
    pub id_from_client: bool,
    /// For a cookieless device: its id under the previous day's salt, so a
    /// visit across midnight can keep its device.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub previous_device_id: Cow<'a, str>,
    #[serde(default)]
    pub ip: Cow<'a, str>,
    #[serde(default)]
    pub user_agent: Cow<'a, str>,
    /// The request's `Origin` header, used to recognise internal referrers.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub origin: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub sdk_name: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub sdk_version: Cow<'a, str>,
    /// The page and referrer the SDK named (`__path`, `__referrer`).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub path: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub referrer: Cow<'a, str>,
    /// The event's other properties.
    #[serde(default)]
    pub properties: Properties,
    /// Profile traits of an `identify` (firstName, lastName, email, avatar and any extra keys).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
    /// Property changed by `increment` / `decrement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The other id of an `alias`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

impl RawEvent<'_> {
    /// Moves `__path` and `__referrer` from the properties to their fields,
    /// where the edge puts them; events written before it did carry them
    /// in the properties.
    pub fn hoist_page(&mut self) {
        if !self.properties.mentions_consumed() {
            return;
        }
        let split = self.properties.split();
        if !split.path.is_empty() {
            self.path = split.path.into();
        }
        if !split.referrer.is_empty() {
            self.referrer = split.referrer.into();
        }
        self.properties = Properties::from_json_text(split.stored);
    }
}

impl<'a> RawEvent<'a> {
    /// Appends the event's binary form: a version byte, then the fields in
    /// the order of the struct (strings as [`put_str`] writes them, numbers
    /// little-endian, an absent option as 0 and a present one as 1 and its
    /// value); properties and traits as JSON text, traits "" when none.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(BINARY_V1);
        put_str(out, &self.id);
        put_str(out, &self.project_id);
        out.push(self.kind.byte());
        for s in [
            &self.name,
            &self.device_id,
            &self.profile_id,
            &self.session_id,
        ] {
            put_str(out, s);
        }
        for time in [self.client_time_ms, self.client_sent_at_ms] {
            put_option(out, time.map(i64::to_le_bytes));
        }
        out.extend_from_slice(&self.received_at_ms.to_le_bytes());
        out.push(u8::from(self.id_from_client));
        for s in [
            &self.previous_device_id,
            &self.ip,
            &self.user_agent,
            &self.origin,
            &self.sdk_name,
            &self.sdk_version,
            &self.path,
            &self.referrer,
        ] {
            put_str(out, s);
        }
        put_str(out, self.properties.text());
        if self.traits.is_empty() {
            put_str(out, "");
        } else {
            // A map of JSON values always serializes.
            put_str(
                out,
                &serde_json::to_string(&self.traits).unwrap_or_default(),
            );
        }
        put_option_str(out, self.property.as_deref());
        put_option(out, self.value.map(f64::to_le_bytes));
        put_option_str(out, self.alias.as_deref());
    }

    /// An event from its binary form, its strings borrowed from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<RawEvent<'a>, BinaryError> {
        let mut r = Reader::new(bytes);
        match r.byte()? {
            BINARY_V1 => {}
            value => {
                return Err(BinaryError::Unknown {
                    what: "event version",
                    value,
                });
            }
        }
        let (id, project_id) = (r.str()?.into(), r.str()?.into());
        let value = r.byte()?;
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.byte() == value)
            .ok_or(BinaryError::Unknown {
                what: "event kind",
                value,
            })?;
        let event = RawEvent {
            id,
            project_id,
            kind,
            name: r.str()?.into(),
            device_id: r.str()?.into(),
            profile_id: r.str()?.into(),
            session_id: r.str()?.into(),
            client_time_ms: option(&mut r, Reader::i64)?,
            client_sent_at_ms: option(&mut r, Reader::i64)?,
            received_at_ms: r.i64()?,
            id_from_client: r.byte()? != 0,
            previous_device_id: r.str()?.into(),
            ip: r.str()?.into(),
            user_agent: r.str()?.into(),
            origin: r.str()?.into(),
            sdk_name: r.str()?.into(),
            sdk_version: r.str()?.into(),
            path: r.str()?.into(),
            referrer: r.str()?.into(),
            properties: match r.string()? {
                text if text.starts_with('{') && text.ends_with('}') => {
                    Properties::from_json_text(text)
                }
                text => {
                    return Err(BinaryError::Unknown {
                        what: "properties text starting with",
                        value: text.bytes().next().unwrap_or(0),
                    });
                }
            },
            traits: match r.str()? {
                "" => Map::new(),
                text => serde_json::from_str(text).map_err(|_| BinaryError::Unknown {
                    what: "traits text starting with",
                    value: text.as_bytes()[0],
                })?,
            },
            property: option(&mut r, Reader::string)?,
            value: option(&mut r, Reader::f64)?,
            alias: option(&mut r, Reader::string)?,
        };
        r.end()?;
        Ok(event)
    }
}

fn put_option<const N: usize>(out: &mut Vec<u8>, value: Option<[u8; N]>) {
    match value {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&bytes);
        }
    }
}

fn put_option_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn option<'a, T>(
    r: &mut Reader<'a>,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, BinaryError>,
) -> Result<Option<T>, BinaryError> {
    match r.byte()? {
        0 => Ok(None),
        1 => read(r).map(Some),
        value => Err(BinaryError::Unknown {
            what: "option tag",
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full(kind: EventKind) -> RawEvent<'static> {
        RawEvent {
            id: "id".into(),
            project_id: "project".into(),
            kind,
            name: "name".into(),
            device_id: "device".into(),
            profile_id: "profile".into(),
            session_id: "session".into(),
            client_time_ms: Some(-5),
            client_sent_at_ms: Some(7),
            received_at_ms: 1_767_607_200_500,
            id_from_client: true,
            previous_device_id: "previous".into(),
            ip: "1.2.3.4".into(),
            user_agent: "agent é".into(),
            origin: "https://o.example".into(),
            sdk_name: "web".into(),
            sdk_version: "1.0".into(),
            path: "/p".into(),
            referrer: "https://r.example/".into(),
            properties: Properties::from_json_text(r#"{"a":[1,"\n"]}"#.into()),
            traits: json!({"firstName": "Ann", "n": {"x": 1}})
                .as_object()
                .cloned()
                .unwrap(),
            property: Some("credits".into()),
            value: Some(-2.5),
            alias: Some("other".into()),
        }
    }

    fn encoded(event: &RawEvent) -> Vec<u8> {
        let mut out = Vec::new();
        event.encode(&mut out);
        out
    }

    #[test]
    fn every_field_survives_the_binary_form() {
        for kind in EventKind::ALL {
            let event = full(kind);
            assert_eq!(RawEvent::decode(&encoded(&event)).unwrap(), event);
        }
        let sparse = RawEvent {
            client_time_ms: None,
            client_sent_at_ms: None,
            id_from_client: false,
            traits: Map::new(),
            property: None,
            value: None,
            alias: None,
            properties: Properties::default(),
            ..full(EventKind::Track)
        };
        assert_eq!(RawEvent::decode(&encoded(&sparse)).unwrap(), sparse);
        // Strings are read in place, not copied out of the entry.
        let bytes = encoded(&full(EventKind::Track));
        let decoded = RawEvent::decode(&bytes).unwrap();
        for field in [&decoded.id, &decoded.user_agent, &decoded.path] {
            assert!(matches!(field, Cow::Borrowed(_)), "{field} was copied");
        }
    }

    #[test]
    fn damaged_bytes_are_refused() {
        let bytes = encoded(&full(EventKind::Identify));
        for cut in [0, 1, 10, bytes.len() - 1] {
            assert!(RawEvent::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            RawEvent::decode(&longer).unwrap_err(),
            BinaryError::Trailing(1)
        );
        let mut version = bytes.clone();
        version[0] = 9;
        assert!(matches!(
            RawEvent::decode(&version),
            Err(BinaryError::Unknown {
                what: "event version",
                value: 9
            })
        ));
        // A JSON document is not the binary form.
        assert!(RawEvent::decode(br#"{"id":"x"}"#).is_err());
    }
}
