//! An event's properties as the JSON object text the edge wrote, not as a
//! tree of values. Readers need the text itself (stored as it is, hashed
//! for duplicates); building a map of every value for that, and writing it
//! out again, was a good part of the enricher's work per event.
//!
//! The text is compact JSON with its keys in sorted order, each value as
//! the client wrote it without blanks, so equal properties sent alike are
//! equal text. The edge reads the SDK's `__path` and `__referrer` into
//! fields of their own; events written before it did carry them here, and
//! [`Properties::split`] takes them out.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Keys the SDKs use to override what the server would infer; they become
/// columns and are left out of the stored properties.
pub const CONSUMED_PROPERTIES: [&str; 2] = ["__path", "__referrer"];

/// A JSON object, as text.
#[derive(Debug, Clone)]
pub struct Properties(Box<str>);

impl Properties {
    /// The properties of `map`, written compactly in its (sorted) key order.
    pub fn from_map(map: &Map<String, Value>) -> Properties {
        // A map of JSON values always serializes, and always to valid JSON.
        Properties(
            serde_json::to_string(map)
                .unwrap_or_else(|_| "{}".to_owned())
                .into_boxed_str(),
        )
    }

    /// Properties of a JSON object's text, which the caller wrote (or
    /// read where our own code wrote it).
    pub fn from_json_text(text: String) -> Properties {
        debug_assert!(text.starts_with('{'));
        Properties(text.into_boxed_str())
    }

    /// Whether the text may hold a consumed key (it may also be nested, or
    /// inside a string: [`Properties::split`] decides).
    pub fn mentions_consumed(&self) -> bool {
        let text = self.text().as_bytes();
        memchr::memmem::find(text, b"\"__path\"").is_some()
            || memchr::memmem::find(text, b"\"__referrer\"").is_some()
    }

    /// The JSON object text.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The properties as a map of values, for the rarer readers that need
    /// every value (profile operations).
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.text()).unwrap_or_default()
    }

    /// The consumed keys' values and the text without them (the
    /// properties as stored), from one pass over the text that builds no
    /// values.
    pub fn split(&self) -> Split {
        let Ok(entries) = serde_json::from_str::<BTreeMap<String, &RawValue>>(self.text()) else {
            return Split::default();
        };
        // A consumed key whose value is not a string reads as "".
        let string = |key: &str| {
            entries
                .get(key)
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .unwrap_or_default()
        };
        let (path, referrer) = (string("__path"), string("__referrer"));
        if !CONSUMED_PROPERTIES.iter().any(|k| entries.contains_key(*k)) {
            return Split {
                path,
                referrer,
                stored: self.text().to_owned(),
            };
        }
        let stored = object_text(
            entries
                .iter()
                .filter(|(k, _)| !CONSUMED_PROPERTIES.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v.get())),
            self.text().len(),
        );
        Split {
            path,
            referrer,
            stored,
        }
    }
}

/// A JSON object's text from its members, in the order given: each key
/// as a JSON string, each value (JSON text) without blanks between tokens.
pub(crate) fn object_text<'a>(
    members: impl IntoIterator<Item = (&'a str, &'a str)>,
    capacity: usize,
) -> String {
    let mut text = String::with_capacity(capacity);
    text.push('{');
    for (key, value) in members {
        if text.len() > 1 {
            text.push(',');
        }
        push_key(&mut text, key);
        text.push(':');
        push_compact(&mut text, value);
    }
    text.push('}');
    text
}

/// Writes `raw` without the blanks between its tokens.
pub(crate) fn push_compact(out: &mut String, raw: &str) {
    let blank = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    if !raw.bytes().any(blank) {
        out.push_str(raw);
        return;
    }
    let (mut in_string, mut escaped) = (false, false);
    for c in raw.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii() && blank(c as u8) {
            continue;
        }
        out.push(c);
    }
}

/// Writes `key` as a JSON string.
pub(crate) fn push_key(out: &mut String, key: &str) {
    if key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        // A string always serializes.
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
    } else {
        out.push('"');
        out.push_str(key);
        out.push('"');
    }
}

/// What [`Properties::split`] gives.
#[derive(Debug, PartialEq)]
pub struct Split {
    /// `__path` and `__referrer` when they are strings, or "".
    pub path: String,
    pub referrer: String,
    /// The text without the consumed keys.
    pub stored: String,
}

impl Default for Split {
    fn default() -> Self {
        Split {
            path: String::new(),
            referrer: String::new(),
            stored: "{}".to_owned(),
        }
    }
}

impl Default for Properties {
    fn default() -> Self {
        Properties("{}".into())
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Properties {
    /// Any JSON object; its text is kept as it came (the edge wrote it
    /// compact and sorted).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !raw.get().starts_with('{') {
            return Err(serde::de::Error::custom("properties must be a JSON object"));
        }
        Ok(Properties(raw.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(value: Value) -> Properties {
        Properties::from_map(value.as_object().unwrap())
    }

    #[test]
    fn consumed_keys_are_read_and_left_out_of_the_stored_text() {
        let p = props(json!({
            "plan": "pro", "__path": "https://a.example/x", "n": [1, 2.5, {"b": null}],
            "__referrer": "https://b.example/", "é\"k": "v\n"
        }));
        let split = p.split();
        assert_eq!(split.path, "https://a.example/x");
        assert_eq!(split.referrer, "https://b.example/");
        let stored: Value = serde_json::from_str(&split.stored).unwrap();
        assert_eq!(
            stored,
            json!({"plan": "pro", "n": [1, 2.5, {"b": null}], "é\"k": "v\n"})
        );
        // The same text a map without those keys writes.
        let mut kept = p.to_map();
        kept.remove("__path");
        kept.remove("__referrer");
        assert_eq!(split.stored, serde_json::to_string(&kept).unwrap());
    }

    #[test]
    fn a_consumed_key_that_is_not_a_string_reads_empty_and_is_still_left_out() {
        let split = props(json!({"__path": 42, "a": 1})).split();
        assert_eq!(
            (split.path.as_str(), split.stored.as_str()),
            ("", r#"{"a":1}"#)
        );
        let none = props(json!({"a": {"__path": "nested"}}));
        assert_eq!(none.split().path, "");
        assert_eq!(none.split().stored, none.text());
    }

    #[test]
    fn blanks_between_tokens_go_and_blanks_in_strings_stay() {
        let mut out = String::new();
        push_compact(&mut out, "{ \"a b\" : [ 1 ,\n\t\"c\\\" d\" ] }");
        assert_eq!(out, r#"{"a b":[1,"c\" d"]}"#);
        let mut out = String::new();
        push_compact(&mut out, r#"{"x":"é"}"#);
        assert_eq!(out, r#"{"x":"é"}"#);
    }

    #[test]
    fn equal_maps_are_equal_text_and_the_text_round_trips() {
        let a = props(json!({"b": 1, "a": [true]}));
        let b = props(json!({"a": [true], "b": 1}));
        assert_eq!(a.text(), b.text());
        let doc = serde_json::to_string(&json!({"p": a.text().parse::<Value>().unwrap()})).unwrap();
        #[derive(Deserialize, Serialize)]
        struct Doc {
            p: Properties,
        }
        let back: Doc = serde_json::from_str(&doc).unwrap();
        assert_eq!(back.p, a);
        assert_eq!(serde_json::to_string(&back).unwrap(), doc);
        assert!(serde_json::from_str::<Doc>(r#"{"p":[1]}"#).is_err());
        assert_eq!(Properties::default().to_map(), Map::new());
    }
}
