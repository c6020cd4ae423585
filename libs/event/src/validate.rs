//! Request body → validated events, or an error naming the field at fault.
//!
//! A `/batch` body is all-or-nothing: one bad event refuses the batch, with
//! the index of the event in `field`, so a producer never has to work out
//! which half of a batch was stored.

use serde_json::{Map, Value};

use crate::raw::EventKind;
use crate::time::parse_timestamp;

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
    pub properties: Map<String, Value>,
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

/// Parses and validates a request body. `body` is used as scratch space by the parser.
pub fn validate(
    body: &mut [u8],
    route: Route,
    limits: &Limits,
) -> Result<Vec<Incoming>, ValidationError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ValidationError::new("request body is empty", None));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ValidationError::new(
            "request body is not valid UTF-8",
            None,
        ));
    }
    let shape = shape(body, limits.max_item_bytes);
    if shape.depth > limits.max_depth {
        return Err(ValidationError::new(
            format!("JSON is nested deeper than {} levels", limits.max_depth),
            None,
        ));
    }
    let value: Value = simd_json::serde::from_slice(body)
        .map_err(|e| ValidationError::new(format!("malformed JSON: {e}"), None))?;
    match route {
        Route::Envelope => Ok(vec![envelope(value, None)?]),
        Route::Direct(kind) => Ok(vec![payload(
            kind,
            value,
            At {
                item: None,
                payload: false,
            },
        )?]),
        Route::Batch => {
            let Value::Array(items) = value else {
                return Err(ValidationError::new(
                    "a batch must be a JSON array of {type, payload} objects",
                    None,
                ));
            };
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

fn envelope(value: Value, item: Option<usize>) -> Result<Incoming, ValidationError> {
    let at = At {
        item,
        payload: false,
    };
    let Value::Object(mut obj) = value else {
        return Err(ValidationError {
            message: "expected a JSON object with \"type\" and \"payload\"".into(),
            field: at.name(),
        });
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) => match t.as_str() {
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
    let payload_value = obj.remove("payload").ok_or_else(|| {
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

fn payload(kind: EventKind, value: Value, at: At) -> Result<Incoming, ValidationError> {
    let Value::Object(mut obj) = value else {
        return Err(ValidationError {
            message: "payload must be a JSON object".into(),
            field: at.name(),
        });
    };
    let mut properties = match obj.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ValidationError::new(
                "\"properties\" must be an object",
                Some(&at.field("properties")),
            ));
        }
    };
    let p = Fields { obj: &obj, at };
    let mut incoming = Incoming {
        kind,
        name: String::new(),
        event_id: p.id("id")?.or(id_in(&properties, "__id", at)?),
        device_id: p.id("deviceId")?.or(id_in(&properties, "__deviceId", at)?),
        profile_id: p.id("profileId")?,
        session_id: p.id("sessionId")?,
        client_time_ms: p.timestamp("timestamp")?,
        client_sent_at_ms: p.timestamp("sentAt")?,
        properties: Map::new(),
        traits: Map::new(),
        property: None,
        value: None,
        alias: None,
    };
    // The SDKs may put times in properties instead of the payload.
    for (slot, key) in [
        (&mut incoming.client_time_ms, "__timestamp"),
        (&mut incoming.client_sent_at_ms, "__sentAt"),
    ] {
        if slot.is_none()
            && let Some(ts) = properties.get(key)
        {
            *slot = Some(parse_timestamp(ts).ok_or_else(|| {
                ValidationError::new(
                    "must be an RFC 3339 date-time or epoch milliseconds",
                    Some(&at.field(&format!("properties.{key}"))),
                )
            })?);
        }
    }
    properties.remove("__timestamp");
    properties.remove("__sentAt");
    properties.remove("__id");
    properties.remove("__deviceId");
    match kind {
        EventKind::Track => {
            let name = p.required_string("name")?;
            if name.len() > MAX_NAME_LEN {
                return Err(p.error("name", format!("must be at most {MAX_NAME_LEN} bytes")));
            }
            incoming.name = name.to_owned();
        }
        EventKind::Identify => {
            p.require_id(&incoming.profile_id, "profileId")?;
            const KNOWN: &[&str] = &["profileId", "deviceId", "sessionId", "id", "timestamp"];
            for (key, value) in &obj {
                if matches!(key.as_str(), "firstName" | "lastName" | "email" | "avatar")
                    && !value.is_string()
                    && !value.is_null()
                {
                    return Err(p.error(key, "must be a string"));
                }
            }
            incoming.traits = obj
                .into_iter()
                .filter(|(key, value)| !KNOWN.contains(&key.as_str()) && !value.is_null())
                .collect();
        }
        EventKind::Increment | EventKind::Decrement => {
            p.require_id(&incoming.profile_id, "profileId")?;
            let property = p.required_string("property")?;
            if property.len() > MAX_NAME_LEN {
                return Err(p.error("property", format!("must be at most {MAX_NAME_LEN} bytes")));
            }
            incoming.property = Some(property.to_owned());
            incoming.value = Some(match obj.get("value") {
                None | Some(Value::Null) => 1.0,
                Some(Value::Number(n)) => n
                    .as_f64()
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
    incoming.properties = properties;
    Ok(incoming)
}

/// A payload object and the path it sits at, for error messages.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: At,
}

impl Fields<'_> {
    fn error(&self, key: &str, message: impl Into<String>) -> ValidationError {
        ValidationError {
            message: message.into(),
            field: Some(self.at.field(key)),
        }
    }

    fn required_string(&self, key: &str) -> Result<&str, ValidationError> {
        match self.obj.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(Value::String(_)) => Err(self.error(key, format!("\"{key}\" must not be empty"))),
            None | Some(Value::Null) => Err(self.error(key, format!("\"{key}\" is required"))),
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
        id_value(self.obj.get(key)).map_err(|m| self.error(key, m))
    }

    fn timestamp(&self, key: &str) -> Result<Option<i64>, ValidationError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_timestamp(v).map(Some).ok_or_else(|| {
                self.error(key, "must be an RFC 3339 date-time or epoch milliseconds")
            }),
        }
    }
}

fn id_in(
    properties: &Map<String, Value>,
    key: &str,
    at: At,
) -> Result<Option<String>, ValidationError> {
    id_value(properties.get(key)).map_err(|m| ValidationError {
        message: m.into(),
        field: Some(at.field(&format!("properties.{key}"))),
    })
}

fn id_value(value: Option<&Value>) -> Result<Option<String>, &'static str> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_ID_LEN => Err("must be at most 200 bytes"),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err("must be a string"),
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
