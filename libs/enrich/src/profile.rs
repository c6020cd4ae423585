//! Profile state (kept in Redis by the enricher) → `profiles` rows.

use analytics_store::ProfileRow;
use serde_json::{Map, Value};

/// Everything known about one profile, as its hash in Redis holds it:
/// `fn`, `ln`, `em`, `av` (traits), `p:<name>` (a property, JSON),
/// `created` (ms) and `version` (a counter bumped by every change).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileState {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub avatar: String,
    pub properties: Map<String, Value>,
    pub created_ms: i64,
    pub version: u64,
}

impl ProfileState {
    /// Reads the field/value pairs of a profile hash.
    pub fn from_hash(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut state = ProfileState::default();
        for (field, value) in pairs {
            match field.as_str() {
                "fn" => state.first_name = value,
                "ln" => state.last_name = value,
                "em" => state.email = value,
                "av" => state.avatar = value,
                "created" => state.created_ms = value.parse().unwrap_or(0),
                "version" => state.version = value.parse().unwrap_or(0),
                _ => {
                    if let Some(name) = field.strip_prefix("p:") {
                        // Increments store bare numbers, identify stores JSON.
                        let parsed = serde_json::from_str(&value).unwrap_or(Value::String(value));
                        state.properties.insert(name.to_owned(), parsed);
                    }
                }
            }
        }
        state
    }
}

/// The `profiles` row of a state; the highest `version` wins in ClickHouse.
pub fn profile_row(project_id: &str, profile_id: &str, state: &ProfileState) -> ProfileRow {
    ProfileRow {
        id: profile_id.to_owned(),
        project_id: project_id.to_owned(),
        first_name: state.first_name.clone(),
        last_name: state.last_name.clone(),
        email: state.email.clone(),
        avatar: state.avatar.clone(),
        properties: Value::Object(state.properties.clone()).to_string(),
        created_at: (state.created_ms / 1000).max(0) as u32,
        version: state.version,
    }
}
