//! Enrichment: the pure per-event transform from a [`RawEvent`] to the rows
//! stored in ClickHouse.
//!
//! The output travels on the enriched stream as
//! [`Record`](analytics_store::Record)s (binary frames tagged with their
//! table, several per entry: see `analytics_store::decode_bundle`), so the
//! sink needs no knowledge of how a row was made.

mod error;
mod geo;
mod page;
mod profile;
mod referrer;
mod ua;
mod visit;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use analytics_event::{EventKind, RawEvent};
use analytics_store::{EncodedEvent, EventFields};
use serde_json::{Map, Value};

pub use error::EnrichError;
pub use geo::{GeoIp, Location, is_public};
pub use page::{Page, parse_page};
pub use profile::{ProfileState, profile_row};
pub use referrer::{ReferrerClass, classify_referrer};
pub use ua::{UaParser, UserAgent};
pub use visit::{Visit, Visits};

/// Identity decided by the enricher stage from shared state (sessions,
/// identified devices, aliases) before the row is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub device_id: String,
    pub profile_id: String,
    pub session_id: String,
}

/// The lookups of enrichment. Each is optional: a missing data file
/// disables that enrichment, never the pipeline.
#[derive(Default)]
pub struct Enrichment {
    pub ua: Option<UaParser>,
    pub geo: Option<GeoIp>,
    /// Pages and referrers read lately.
    pub visits: Visits,
}

/// When the event happened, by the server's clock: the client's time moved
/// by the skew between the client's send time and our receive time, and
/// never later than the receive time.
pub fn event_time_ms(raw: &RawEvent) -> i64 {
    let skew = raw
        .client_sent_at_ms
        .map(|sent| raw.received_at_ms - sent)
        .unwrap_or(0);
    raw.client_time_ms
        .map(|t| t.saturating_add(skew))
        .filter(|t| *t <= raw.received_at_ms)
        .unwrap_or(raw.received_at_ms)
        .max(0)
}

impl Enrichment {
    /// The parsed user agent (shared from the cache), or an empty one
    /// without rules.
    pub fn user_agent(&self, raw: &RawEvent) -> Arc<UserAgent> {
        match &self.ua {
            Some(parser) => parser.parse(&raw.user_agent),
            None => Arc::new(UserAgent {
                device: "",
                ..UserAgent::default()
            }),
        }
    }

    /// The `events` row of a raw event, encoded from the parts it is made
    /// of (nothing is copied into a row of owned strings first).
    pub fn event_row(&self, raw: &RawEvent, ua: &UserAgent, identity: &Identity) -> EncodedEvent {
        let created_ms = event_time_ms(raw);
        let visit = self.visits.get(&raw.path, &raw.referrer, &raw.origin);
        let location = match (&self.geo, raw.ip.parse::<IpAddr>()) {
            (Some(geo), Ok(ip)) => geo.lookup(ip).unwrap_or_default(),
            _ => Location::default(),
        };
        let properties = match raw.kind {
            EventKind::Track => Cow::Borrowed(raw.properties.text()),
            _ => Cow::Owned(Value::Object(stored_properties(raw)).to_string()),
        };
        EncodedEvent::from(&EventFields {
            id: &raw.id,
            project_id: &raw.project_id,
            name: &raw.name,
            device_id: &identity.device_id,
            profile_id: &identity.profile_id,
            session_id: &identity.session_id,
            created_at: (created_ms / 1000) as u32,
            received_at: (raw.received_at_ms / 1000).max(0) as u32,
            path: &visit.path,
            origin: &visit.origin,
            referrer: &raw.referrer,
            referrer_name: &visit.referrer_name,
            referrer_type: visit.referrer_type,
            utm_source: &visit.utm_source,
            utm_medium: &visit.utm_medium,
            utm_campaign: &visit.utm_campaign,
            utm_term: &visit.utm_term,
            utm_content: &visit.utm_content,
            country: location.country,
            region: location.region,
            city: location.city,
            latitude: location.latitude,
            longitude: location.longitude,
            os: &ua.os,
            os_version: &ua.os_version,
            browser: &ua.browser,
            browser_version: &ua.browser_version,
            device: ua.device,
            brand: &ua.brand,
            model: &ua.model,
            properties: &properties,
            sdk_name: &raw.sdk_name,
            sdk_version: &raw.sdk_version,
        })
    }
}

/// The properties of a profile operation as stored: its own, and what the
/// operation did, for audit and replay. (A tracked event's are its own
/// text.)
fn stored_properties(raw: &RawEvent) -> Map<String, Value> {
    let mut properties = raw.properties.to_map();
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
    properties
}

#[cfg(test)]
mod tests;
