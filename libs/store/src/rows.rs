//! Row types of the ClickHouse tables, in RowBinary order (the order of
//! their fields is the order of the INSERT's columns: see `rowbinary`).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::{EncodedEvent, RowKey};

pub use clickhouse::Row;

fn event_key(hasher: &mut Xxh3, project_id: &str, id: &str) {
    hasher.update(project_id.as_bytes());
    hasher.update(&[0]);
    hasher.update(id.as_bytes());
}

impl RowKey for EventRow {
    fn hash_key(&self, hasher: &mut Xxh3) {
        event_key(hasher, &self.project_id, &self.id);
    }
}

impl RowKey for EncodedEvent {
    fn hash_key(&self, hasher: &mut Xxh3) {
        let key = self.key();
        event_key(hasher, key.project_id, key.id);
    }
}

impl RowKey for ProfileRow {
    fn hash_key(&self, hasher: &mut Xxh3) {
        hasher.update(self.project_id.as_bytes());
        hasher.update(&[0]);
        hasher.update(self.id.as_bytes());
        hasher.update(&self.version.to_le_bytes());
    }
}

impl RowKey for AliasRow {
    fn hash_key(&self, hasher: &mut Xxh3) {
        for part in [&self.project_id, &self.alias, &self.profile_id] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
    }
}

/// One row of `events`. Times are epoch seconds (ClickHouse `DateTime`).
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct EventRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub device_id: String,
    pub profile_id: String,
    pub session_id: String,
    pub created_at: u32,
    pub received_at: u32,
    pub path: String,
    pub origin: String,
    pub referrer: String,
    pub referrer_name: String,
    pub referrer_type: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub country: String,
    pub region: String,
    pub city: String,
    pub latitude: f64,
    pub longitude: f64,
    pub os: String,
    pub os_version: String,
    pub browser: String,
    pub browser_version: String,
    pub device: String,
    pub brand: String,
    pub model: String,
    /// JSON object text.
    pub properties: String,
    pub sdk_name: String,
    pub sdk_version: String,
}

/// One version of a profile; the highest `version` wins.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct ProfileRow {
    pub id: String,
    pub project_id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub avatar: String,
    /// JSON object text.
    pub properties: String,
    pub created_at: u32,
    /// Epoch milliseconds of the change.
    pub version: u64,
}

/// Another id of a person (from `alias`).
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize, Deserialize)]
pub struct AliasRow {
    pub project_id: String,
    pub alias: String,
    pub profile_id: String,
    pub created_at: u32,
}
