//! Request body → validated events, or an error naming the field at fault.
//!
//! A `/batch` body is all-or-nothing: one bad event refuses the batch, with
//! the index of the event in `field`, so a producer never has to work out
//! which half of a batch was stored.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::Properties;
use crate::properties::{CONSUMED_PROPERTIES, object_text};
use crate::raw::EventKind;
use crate::time::parse_timestamp;
use json::{Envelope, Json, Members, Payload, read};

mod json;

const MAX_NAME_LEN: usize = 200;
const MAX_ID_LEN: usize = 200;

/// Which route the body arrived on; it decides the body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `{"type", "payload"}` (`POST /track`).
    Envelope,
    /// A bare payload of one kind (`POST /identify`, `/increment`, `/decrement`).
    Direct(EventKind),
    /// A JSON array of envelopes (`POST /batch`).
    Batch,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_events: usize,
    pub max_depth: usize,
    /// Largest event of a batch, in bytes (the edge gives its body limit).
    pub max_item_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_events: 2_000,
            max_depth: 32,
            max_item_bytes: usize::MAX,
        }
    }
}

/// A client's event after validation, before the edge stamps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub kind: EventKind,
    pub name: String,
    pub event_id: Option<String>,
    pub device_id: Option<String>,
    pub profile_id: Option<String>,
    pub session_id: Option<String>,
    pub client_time_ms: Option<i64>,
    /// The client's clock when it sent the event (`sentAt` / `__sentAt`).
    pub client_sent_at_ms: Option<i64>,
    /// The page and referrer the SDK named (`__path`, `__referrer`), or "".
    pub path: String,
    pub referrer: String,
    /// The other properties, as stored.
    pub properties: Properties,
    pub traits: Map<String, Value>,
    pub property: Option<String>,
    pub value: Option<f64>,
    pub alias: Option<String>,
}

/// Why a body was refused; becomes a `400` with this message and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub message: String,
    pub field: Option<String>,
}

impl ValidationError {
    fn new(message: impl Into<String>, field: Option<&str>) -> Self {
        ValidationError {
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }
}

/// Deepest nesting of arrays and objects in a JSON text, found without
/// parsing it, so a hostile body cannot drive a recursive parser deep.
pub fn max_json_depth(bytes: &[u8]) -> usize {
    shape(bytes, usize::MAX).depth
}

/// What one pass over a JSON text finds without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Deepest nesting of arrays and objects.
    depth: usize,
    /// The first element of the outermost array or object that takes more
    /// than the item limit (with the blanks around it).
    oversized: Option<usize>,
}

/// Walks the structure of a JSON text once. String contents (most of a
/// body) are skipped with a vectorised search.
fn shape(bytes: &[u8], item_limit: usize) -> Shape {
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    let (mut index, mut start, mut oversized) = (0usize, 0usize, None);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Jump from quote or backslash to the next; an escape hides
                // the byte after it.
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                        None => {
                            return Shape {
                                depth: max,
                                oversized,
                            };
                        }
                        Some(at) if bytes[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                    }
                    if i >= bytes.len() {
                        return Shape {
                            depth: max,
                            oversized,
                        };
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if depth == 1 {
                    start = i + 1;
                }
            }
            byte @ (b']' | b'}' | b',') if depth == 1 => {
                if oversized.is_none() && i - start > item_limit {
                    oversized = Some(index);
                }
                if byte == b',' {
                    (index, start) = (index + 1, i + 1);
                } else {
                    depth = 0;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Shape {
        depth: max,
        oversized,
    }
}

/// How many `{` and `[` a text holds, strings included: a bound on how
/// deep it can nest.
fn brackets(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'{' || b == b'[').count()
}

/// Parses and validates a request body. `body` must be UTF-8 to be accepted.
pub fn validate(
    body: &[u8],
    route: Route,
    limits: &Limits,
) -> Result<Vec<Incoming>, ValidationError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ValidationError::new("request body is empty", None));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(ValidationError::new(
            "request body is not valid UTF-8",
            None,
        ));
    };
    // A body with no more brackets than the depth limit cannot nest past
    // it, and only a batch has items to measure: most single events skip
    // the walk.
    let shape = match route {
        Route::Batch => shape(body, limits.max_item_bytes),
        _ if brackets(body) <= limits.max_depth => Shape {
            depth: 0,
            oversized: None,
        },
        _ => shape(body, usize::MAX),
    };
    if shape.depth > limits.max_depth {
        return Err(ValidationError::new(
            format!("JSON is nested deeper than {} levels", limits.max_depth),
            None,
        ));
    }
    let refused = |e: serde_json::Error| diagnose(text, route, e);
    match route {
        Route::Envelope => Ok(vec![envelope(
            serde_json::from_str(text).map_err(refused)?,
            None,
        )?]),
        Route::Direct(kind) => Ok(vec![payload(
            kind,
            serde_json::from_str(text).map_err(refused)?,
            At {
                item: None,
                payload: false,
            },
        )?]),
        Route::Batch => {
            let items: Vec<Envelope> = serde_json::from_str(text).map_err(refused)?;
            if items.is_empty() {
                return Err(ValidationError::new("batch is empty", None));
            }
            if items.len() > limits.max_batch_events {
                return Err(ValidationError::new(
                    format!(
                        "batch holds {} events, more than the limit of {}",
                        items.len(),
                        limits.max_batch_events
                    ),
                    None,
                ));
            }
            let events = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| envelope(item, Some(i)))
                .collect::<Result<Vec<_>, _>>()?;
            // A batch cannot carry an event `/track` would refuse.
            match shape.oversized {
                Some(index) => Err(ValidationError::new(
                    format!(
                        "event {index} is larger than {} bytes, the limit of one event",
                        limits.max_item_bytes
                    ),
                    Some(&format!("[{index}]")),
                )),
                None => Ok(events),
            }
        }
    }
}

/// Why a body that is not of the protocol's shape failed to read: the
/// first value that is not an object where one must be, or the parser's
/// own complaint when the body is not JSON at all.
fn diagnose(text: &str, route: Route, error: serde_json::Error) -> ValidationError {
    let malformed =
        |e: &dyn std::fmt::Display| ValidationError::new(format!("malformed JSON: {e}"), None);
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return malformed(&e),
    };
    let top = At {
        item: None,
        payload: false,
    };
    let found = match (route, &value) {
        (Route::Envelope, _) => misshapen_envelope(&value, top),
        (Route::Direct(_), _) => misshapen_payload(&value, top),
        (Route::Batch, Value::Array(items)) => items.iter().enumerate().find_map(|(i, item)| {
            misshapen_envelope(
                item,
                At {
                    item: Some(i),
                    payload: false,
                },
            )
        }),
        (Route::Batch, _) => Some(ValidationError::new(
            "a batch must be a JSON array of {type, payload} objects",
            None,
        )),
    };
    found.unwrap_or_else(|| malformed(&error))
}

fn misshapen_envelope(value: &Value, at: At) -> Option<ValidationError> {
    let Value::Object(obj) = value else {
        return Some(ValidationError {
            message: "expected a JSON object with \"type\" and \"payload\"".into(),
            field: at.name(),
        });
    };
    let payload = obj.get("payload")?;
    misshapen_payload(
        payload,
        At {
            payload: true,
            ..at
        },
    )
}

fn misshapen_payload(value: &Value, at: At) -> Option<ValidationError> {
    let Value::Object(obj) = value else {
        return Some(ValidationError {
            message: "payload must be a JSON object".into(),
            field: at.name(),
        });
    };
    match obj.get("properties") {
        None | Some(Value::Null | Value::Object(_)) => None,
        Some(_) => Some(ValidationError::new(
            "\"properties\" must be an object",
            Some(&at.field("properties")),
        )),
    }
}

/// Where a value sits in the body (`[3].payload.`), spelled out only when
/// an error names it.
#[derive(Debug, Clone, Copy)]
struct At {
    item: Option<usize>,
    payload: bool,
}

impl At {
    /// The path of a key inside the value at `self`.
    fn field(self, key: &str) -> String {
        format!("{self}{key}")
    }

    /// The path of the value itself; `None` for the body as a whole.
    fn name(self) -> Option<String> {
        let path = self.to_string();
        (!path.is_empty()).then(|| path.trim_end_matches('.').to_owned())
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(i) = self.item {
            write!(f, "[{i}].")?;
        }
        if self.payload {
            f.write_str("payload.")?;
        }
        Ok(())
    }
}

fn envelope(envelope: Envelope, item: Option<usize>) -> Result<Incoming, ValidationError> {
    let at = At {
        item,
        payload: false,
    };
    let kind = match envelope.kind.map(read) {
        Some(Json::String(t)) => match t.as_ref() {
            "track" => EventKind::Track,
            "identify" => EventKind::Identify,
            "increment" => EventKind::Increment,
            "decrement" => EventKind::Decrement,
            "alias" => EventKind::Alias,
            "group" | "assign_group" | "replay" => {
                return Err(ValidationError::new(
                    format!("type \"{t}\" is not supported by this server"),
                    Some(&at.field("type")),
                ));
            }
            other => {
                return Err(ValidationError::new(
                    format!(
                        "unknown type \"{}\"; expected track, identify, increment, decrement or alias",
                        truncate(other, 40)
                    ),
                    Some(&at.field("type")),
                ));
            }
        },
        Some(_) => {
            return Err(ValidationError::new(
                "\"type\" must be a string",
                Some(&at.field("type")),
            ));
        }
        None => {
            return Err(ValidationError::new(
                "\"type\" is required",
                Some(&at.field("type")),
            ));
        }
    };
    let payload_value = envelope.payload.ok_or_else(|| {
        ValidationError::new("\"payload\" is required", Some(&at.field("payload")))
    })?;
    payload(
        kind,
        payload_value,
        At {
            item,
            payload: true,
        },
    )
}

/// Keys of the properties the edge reads itself: client times and ids the
/// SDKs may put there, and the page the event was on.
const READ_PROPERTIES: [&str; 6] = [
    "__timestamp",
    "__sentAt",
    "__id",
    "__deviceId",
    CONSUMED_PROPERTIES[0],
    CONSUMED_PROPERTIES[1],
];

fn payload(kind: EventKind, body: Payload, at: At) -> Result<Incoming, ValidationError> {
    let properties = body.properties.unwrap_or_default();
    let p = Fields {
        obj: &body.members,
        at,
        prefix: "",
    };
    let q = Fields {
        obj: &properties,
        at,
        prefix: "properties.",
    };
    let mut incoming = Incoming {
        kind,
        name: String::new(),
        event_id: p.id("id")?.or(q.id("__id")?),
        device_id: p.id("deviceId")?.or(q.id("__deviceId")?),
        profile_id: p.id("profileId")?,
        session_id: p.id("sessionId")?,
        // The SDKs may put times in properties instead of the payload.
        client_time_ms: match p.timestamp("timestamp")? {
            None => q.timestamp("__timestamp")?,
            time => time,
        },
        client_sent_at_ms: match p.timestamp("sentAt")? {
            None => q.timestamp("__sentAt")?,
            time => time,
        },
        path: q.page("__path"),
        referrer: q.page("__referrer"),
        properties: stored_properties(properties),
        traits: Map::new(),
        property: None,
        value: None,
        alias: None,
    };
    match kind {
        EventKind::Track => {
            let name = p.required_string("name")?;
            if name.len() > MAX_NAME_LEN {
                return Err(p.error("name", format!("must be at most {MAX_NAME_LEN} bytes")));
            }
            incoming.name = name.into_owned();
        }
        EventKind::Identify => {
            p.require_id(&incoming.profile_id, "profileId")?;
            const KNOWN: &[&str] = &["profileId", "deviceId", "sessionId", "id", "timestamp"];
            for (key, value) in &body.members.0 {
                if matches!(key.as_ref(), "firstName" | "lastName" | "email" | "avatar")
                    && !matches!(read(value), Json::String(_) | Json::Null)
                {
                    return Err(p.error(key, "must be a string"));
                }
            }
            for (key, value) in body.members.0 {
                if KNOWN.contains(&key.as_ref()) || matches!(read(value), Json::Null) {
                    continue;
                }
                // Checked whole here: a value the body's reading skipped
                // over (a lone surrogate, a number out of range) is refused.
                let value = serde_json::from_str(value.get()).map_err(|e| ValidationError {
                    message: format!("malformed JSON: {e}"),
                    field: Some(at.field(&key)),
                })?;
                incoming.traits.insert(key.into_owned(), value);
            }
        }
        EventKind::Increment | EventKind::Decrement => {
            p.require_id(&incoming.profile_id, "profileId")?;
            let property = p.required_string("property")?;
            if property.len() > MAX_NAME_LEN {
                return Err(p.error("property", format!("must be at most {MAX_NAME_LEN} bytes")));
            }
            incoming.property = Some(property.into_owned());
            incoming.value = Some(match p.obj.get("value").map(read) {
                None | Some(Json::Null) => 1.0,
                Some(Json::Number(n)) => n
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| p.error("value", "must be a finite number"))?,
                Some(_) => return Err(p.error("value", "must be a number")),
            });
        }
        EventKind::Alias => {
            p.require_id(&incoming.profile_id, "profileId")?;
            incoming.alias = Some(
                p.id("alias")?
                    .ok_or_else(|| p.error("alias", "\"alias\" is required"))?,
            );
        }
    }
    if incoming.name.is_empty() {
        incoming.name = kind.as_str().to_owned();
    }
    // A profile operation's properties are parsed into values later, so
    // they are checked whole now (a tracked event's are stored as text).
    if kind != EventKind::Track
        && let Err(e) = serde_json::from_str::<Value>(incoming.properties.text())
    {
        return Err(ValidationError {
            message: format!("malformed JSON: {e}"),
            field: Some(at.field("properties")),
        });
    }
    Ok(incoming)
}

/// The properties as stored: compact JSON with its keys in sorted order
/// (a repeated key keeps its last value), without the keys the edge read.
fn stored_properties(properties: Members) -> Properties {
    let mut members = properties.0;
    // Stable, so of a repeated key the last stays last.
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let capacity = 2 + members
        .iter()
        .map(|(k, v)| k.len() + v.get().len() + 4)
        .sum::<usize>();
    let kept = members.iter().enumerate().filter(|(i, (key, _))| {
        let superseded = members.get(i + 1).is_some_and(|next| next.0 == *key);
        !superseded && !READ_PROPERTIES.contains(&key.as_ref())
    });
    let text = object_text(kept.map(|(_, (k, v))| (k.as_ref(), v.get())), capacity);
    Properties::from_json_text(text)
}

/// An object's members and the path it sits at, for error messages.
struct Fields<'o, 'a> {
    obj: &'o Members<'a>,
    at: At,
    /// Put before a key when an error names it.
    prefix: &'static str,
}

impl<'a> Fields<'_, 'a> {
    fn error(&self, key: &str, message: impl Into<String>) -> ValidationError {
        ValidationError {
            message: message.into(),
            field: Some(self.at.field(&format!("{}{key}", self.prefix))),
        }
    }

    fn required_string(&self, key: &str) -> Result<Cow<'a, str>, ValidationError> {
        match self.obj.get(key).map(read) {
            Some(Json::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(Json::String(_)) => Err(self.error(key, format!("\"{key}\" must not be empty"))),
            None | Some(Json::Null) => Err(self.error(key, format!("\"{key}\" is required"))),
            Some(_) => Err(self.error(key, format!("\"{key}\" must be a string"))),
        }
    }

    fn require_id(&self, id: &Option<String>, key: &str) -> Result<(), ValidationError> {
        match id {
            Some(_) => Ok(()),
            None => Err(self.error(key, format!("\"{key}\" is required"))),
        }
    }

    /// An identifier: a non-empty string or an integer, at most `MAX_ID_LEN` bytes.
    fn id(&self, key: &str) -> Result<Option<String>, ValidationError> {
        let invalid = |m: &str| self.error(key, m);
        match self.obj.get(key).map(read) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Json::String(s)) if s.len() > MAX_ID_LEN => {
                Err(invalid("must be at most 200 bytes"))
            }
            Some(Json::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(Json::Number(n)) => match (n.parse::<i64>(), n.parse::<u64>()) {
                (Ok(i), _) => Ok(Some(i.to_string())),
                (_, Ok(u)) => Ok(Some(u.to_string())),
                _ => Err(invalid("must be a string")),
            },
            Some(Json::Other) => Err(invalid("must be a string")),
        }
    }

    fn timestamp(&self, key: &str) -> Result<Option<i64>, ValidationError> {
        let Some(raw) = self.obj.get(key) else {
            return Ok(None);
        };
        // A scalar (or a small value that is refused anyway).
        let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Bool(false));
        match value {
            Value::Null => Ok(None),
            v => parse_timestamp(&v).map(Some).ok_or_else(|| {
                self.error(key, "must be an RFC 3339 date-time or epoch milliseconds")
            }),
        }
    }

    /// A page the SDK names (`__path`, `__referrer`): its text when it is
    /// a string, or "".
    fn page(&self, key: &str) -> String {
        match self.obj.get(key).map(read) {
            Some(Json::String(s)) => s.into_owned(),
            _ => String::new(),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
