//! A body read in one pass without building values: the objects the
//! protocol defines (envelope, payload, properties) as their members in
//! order, every other value as its raw text, borrowed from the body.
//!
//! Anything of another shape where an object must be (a payload that is a
//! string, properties that are an array) fails the parse; the caller then
//! finds which value it was, for the error message (see `diagnose`).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A key or string, borrowed from the body unless it holds escapes.
pub(super) struct Text<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A JSON value seen through its first byte.
pub(super) enum Json<'a> {
    Null,
    String(Cow<'a, str>),
    /// The number's text.
    Number(&'a str),
    /// An object, an array or a boolean.
    Other,
}

/// What kind of value `raw` is; a string is unescaped.
pub(super) fn read(raw: &RawValue) -> Json<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Json::Null,
        // The body parsed, so this is a whole, valid JSON string.
        Some(b'"') => serde_json::from_str::<Text>(text)
            .map(|t| Json::String(t.0))
            .unwrap_or(Json::Other),
        Some(b'-' | b'0'..=b'9') => Json::Number(text),
        _ => Json::Other,
    }
}

/// An object's members in the order of the body.
#[derive(Default)]
pub(super) struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The value of `key`; of a repeated key, the last, as a parsed map keeps.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    members.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// A payload: its members, with `properties` read as an object of its own
/// (not among `members`; `None` when absent or null).
#[derive(Default)]
pub(super) struct Payload<'a> {
    pub members: Members<'a>,
    pub properties: Option<Members<'a>>,
}

impl<'de> Deserialize<'de> for Payload<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PayloadVisitor;
        impl<'de> Visitor<'de> for PayloadVisitor {
            type Value = Payload<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a payload object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload<'de>, A::Error> {
                let mut payload = Payload::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if key.0 == "properties" {
                        payload.properties = map.next_value::<Option<Members<'de>>>()?;
                    } else {
                        let value = map.next_value::<&'de RawValue>()?;
                        payload.members.0.push((key.0, value));
                    }
                }
                Ok(payload)
            }
        }
        deserializer.deserialize_map(PayloadVisitor)
    }
}

/// A `{"type", "payload"}` envelope; other keys are skipped.
pub(super) struct Envelope<'a> {
    pub kind: Option<&'a RawValue>,
    pub payload: Option<Payload<'a>>,
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an envelope object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
                let mut envelope = Envelope {
                    kind: None,
                    payload: None,
                };
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "type" => envelope.kind = Some(map.next_value()?),
                        "payload" => envelope.payload = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(envelope)
            }
        }
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::properties::push_key;

    #[test]
    fn keys_are_borrowed_unless_escaped_and_written_back_as_json() {
        let members: Members =
            serde_json::from_str(r#"{"plain":1,"tab\tbed":2,"plain":3}"#).unwrap();
        assert!(matches!(members.0[0].0, Cow::Borrowed("plain")));
        assert!(matches!(&members.0[1].0, Cow::Owned(k) if k == "tab\tbed"));
        assert_eq!(members.get("plain").unwrap().get(), "3");
        let mut out = String::new();
        for (key, _) in &members.0[..2] {
            push_key(&mut out, key);
        }
        assert_eq!(out, r#""plain""tab\tbed""#);
    }
}
