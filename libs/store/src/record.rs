//! The unit of the enriched stream: one row for one table.

use serde::{Deserialize, Serialize};

use crate::{AliasRow, EventRow, ProfileRow};

/// One row for one table, as carried on the enriched stream.
// Records live one at a time between decode and insert; boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "r", rename_all = "snake_case")]
pub enum Record {
    Events(EventRow),
    Profiles(ProfileRow),
    ProfileAliases(AliasRow),
}

impl From<EventRow> for Record {
    fn from(row: EventRow) -> Record {
        Record::Events(row)
    }
}

impl From<ProfileRow> for Record {
    fn from(row: ProfileRow) -> Record {
        Record::Profiles(row)
    }
}

impl From<AliasRow> for Record {
    fn from(row: AliasRow) -> Record {
        Record::ProfileAliases(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_tagged_json() {
        let record = Record::Events(EventRow {
            id: "e1".into(),
            properties: "{}".into(),
            ..EventRow::default()
        });
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.starts_with(r#"{"t":"events","r":{"#), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
    }
}
