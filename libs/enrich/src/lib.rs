//! Enrichment: the pure per-event transform from a [`RawEvent`] to the rows
//! stored in ClickHouse, plus the cookieless device id the edge assigns.
//!
//! The output travels on the enriched stream as one [`Record`] per entry
//! (JSON, tagged with its table), so the sink needs no knowledge of how a
//! row was made.

mod device;
mod page;
mod referrer;

use analytics_event::{EventKind, RawEvent};
use analytics_store::{EventRow, ProfileRow, Table};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use device::cookieless_device_id;
pub use page::{Page, parse_page};
pub use referrer::{ReferrerClass, classify_referrer};

/// One row for one table, as carried on the enriched stream.
// Records live one at a time between decode and insert; boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "r", rename_all = "snake_case")]
pub enum Record {
    Events(EventRow),
    Profiles(ProfileRow),
}

impl Record {
    pub fn table(&self) -> Table {
        match self {
            Record::Events(_) => Table::Events,
            Record::Profiles(_) => Table::Profiles,
        }
    }
}

/// Properties the SDKs use to override what the server would infer; they
/// become columns and are removed from `properties`.
const CONSUMED_PROPERTIES: &[&str] = &["__path", "__referrer"];

/// Turns one raw event into its rows: always an `events` row (profile
/// operations are kept as events named after their type, for audit and
/// replay), plus a `profiles` row for `identify`.
pub fn enrich(raw: &RawEvent) -> Vec<Record> {
    let received_s = (raw.received_at_ms / 1000).max(0) as u32;
    // Events dated in the future are clamped to the receive time.
    let created_ms = raw
        .client_time_ms
        .filter(|t| *t <= raw.received_at_ms)
        .unwrap_or(raw.received_at_ms);
    let page = parse_page(
        raw.properties
            .get("__path")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let referrer = raw
        .properties
        .get("__referrer")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let own_origin = if page.origin.is_empty() {
        raw.origin.as_str()
    } else {
        page.origin.as_str()
    };
    let class = classify_referrer(&referrer, own_origin, &page);

    let mut properties: Map<String, Value> = raw
        .properties
        .iter()
        .filter(|(k, _)| !CONSUMED_PROPERTIES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match raw.kind {
        EventKind::Track => {}
        EventKind::Identify => {
            properties.insert("traits".into(), Value::Object(raw.traits.clone()));
        }
        EventKind::Increment | EventKind::Decrement => {
            properties.insert("property".into(), raw.property.clone().into());
            properties.insert("value".into(), raw.value.into());
        }
        EventKind::Alias => {
            properties.insert("alias".into(), raw.alias.clone().into());
        }
    }

    let event = EventRow {
        id: raw.id.clone(),
        project_id: raw.project_id.clone(),
        name: raw.name.clone(),
        device_id: raw.device_id.clone(),
        profile_id: raw.profile_id.clone(),
        session_id: raw.session_id.clone(),
        created_at: (created_ms / 1000).max(0) as u32,
        received_at: received_s,
        path: page.path.clone(),
        origin: page.origin.clone(),
        referrer,
        referrer_name: class.name,
        referrer_type: class.kind.to_owned(),
        utm_source: page.utm("utm_source"),
        utm_medium: page.utm("utm_medium"),
        utm_campaign: page.utm("utm_campaign"),
        utm_term: page.utm("utm_term"),
        utm_content: page.utm("utm_content"),
        properties: Value::Object(properties).to_string(),
        sdk_name: raw.sdk_name.clone(),
        sdk_version: raw.sdk_version.clone(),
        ..EventRow::default()
    };
    let mut records = vec![Record::Events(event)];
    if raw.kind == EventKind::Identify {
        records.push(Record::Profiles(profile_of(raw, created_ms)));
    }
    records
}

fn profile_of(raw: &RawEvent, created_ms: i64) -> ProfileRow {
    let trait_str = |key: &str| {
        raw.traits
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut properties = raw.properties.clone();
    for (key, value) in &raw.traits {
        if !matches!(key.as_str(), "firstName" | "lastName" | "email" | "avatar") {
            properties.insert(key.clone(), value.clone());
        }
    }
    ProfileRow {
        id: raw.profile_id.clone(),
        project_id: raw.project_id.clone(),
        first_name: trait_str("firstName"),
        last_name: trait_str("lastName"),
        email: trait_str("email"),
        avatar: trait_str("avatar"),
        properties: Value::Object(properties).to_string(),
        created_at: (created_ms / 1000).max(0) as u32,
        version: raw.received_at_ms.max(0) as u64,
    }
}

#[cfg(test)]
mod tests;
