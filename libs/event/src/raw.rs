//! The raw event: a validated client event plus what the edge knows about
//! its request. Serialized as one line of JSON in the `e` field of a raw
//! stream entry, which bundles several such lines.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Properties;

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

/// One accepted event as written to the raw stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawEvent {
    pub id: String,
    pub project_id: String,
    pub kind: EventKind,
    /// Event name for `track`; the kind's name otherwise.
    pub name: String,
    pub device_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
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
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_device_id: String,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub user_agent: String,
    /// The request's `Origin` header, used to recognise internal referrers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sdk_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sdk_version: String,
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
