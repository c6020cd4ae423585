//! What the connected ClickHouse offers beyond 18.16, read once from
//! `SELECT version()`.
//!
//! The schema files are written for current servers (`LowCardinality`
//! columns); on older ones those become plain `String`. Servers that take
//! `insert_deduplication_token` get a token per insert of one batch
//! (`Store::insert`), derived from the rows' identities, and keep a window
//! of recent insert tokens on the tables the sink writes, so a retried
//! insert whose first attempt did land is dropped by the server itself. The
//! sink's stored-id check remains the guarantee on every server, and for
//! combined inserts (`CombinedInserts`), which carry no token: a retry
//! repeats one batch, not the same combination.

use xxhash_rust::xxh3::Xxh3;

/// Blocks remembered per table for deduplication on servers that support it.
const DEDUPLICATION_WINDOW: u32 = 1000;

/// Optional server capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// `LowCardinality(String)` columns (generally available since 19.x).
    pub low_cardinality: bool,
    /// `insert_deduplication_token` and `non_replicated_deduplication_window` (22.2+).
    pub deduplication_token: bool,
}

impl Features {
    /// The capabilities of a server reporting `version` (`18.16.1`, `26.9.2.1`).
    pub fn of_version(version: &str) -> Features {
        let mut parts = version
            .trim()
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let at_least = |major: u32, minor: u32, v: (u32, u32)| v >= (major, minor);
        let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Features {
            low_cardinality: at_least(20, 1, v),
            deduplication_token: at_least(22, 2, v),
        }
    }

    /// A migration statement as this server takes it.
    pub fn adapt(&self, statement: &str) -> String {
        let mut out = if self.low_cardinality {
            statement.to_owned()
        } else {
            statement.replace("LowCardinality(String)", "String")
        };
        if self.deduplication_token && is_sink_table(&out) {
            out.push_str(&format!(
                "\nSETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
            ));
        }
        out
    }
}

/// Whether `statement` creates a table the sink inserts into.
fn is_sink_table(statement: &str) -> bool {
    ["events", "profiles", "profile_aliases"]
        .iter()
        .any(|t| statement.starts_with(&format!("CREATE TABLE IF NOT EXISTS {t} (")))
}

/// The part of a row that identifies it, for insert deduplication tokens.
pub trait RowKey {
    fn hash_key(&self, hasher: &mut Xxh3);
}

/// The token of one insert: the table and the identities of its rows, in
/// order. The same rows give the same token on a retry.
pub fn deduplication_token<T: RowKey>(table: &str, rows: &[T]) -> String {
    let mut hasher = Xxh3::new();
    hasher.update(table.as_bytes());
    for row in rows {
        hasher.update(&[0xff]);
        row.hash_key(&mut hasher);
    }
    format!("{:032x}", hasher.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Key(&'static str);

    impl RowKey for Key {
        fn hash_key(&self, hasher: &mut Xxh3) {
            hasher.update(self.0.as_bytes());
        }
    }

    #[test]
    fn versions_map_to_features() {
        assert_eq!(Features::of_version("18.16.1"), Features::default());
        let current = Features::of_version("26.9.2.1");
        assert!(current.low_cardinality && current.deduplication_token);
        let mid = Features::of_version("21.8.15.7");
        assert!(mid.low_cardinality && !mid.deduplication_token);
        assert_eq!(Features::of_version("garbage"), Features::default());
    }

    #[test]
    fn statements_are_adapted_to_the_server() {
        let sql = "CREATE TABLE IF NOT EXISTS events (\n  name LowCardinality(String)\n) ENGINE = MergeTree()\nORDER BY name";
        let old = Features::default().adapt(sql);
        assert!(
            old.contains("name String\n") && !old.contains("SETTINGS"),
            "{old}"
        );
        let new = Features::of_version("26.9").adapt(sql);
        assert!(new.contains("LowCardinality(String)"), "{new}");
        assert!(
            new.ends_with("SETTINGS non_replicated_deduplication_window = 1000"),
            "{new}"
        );
        let view = "CREATE MATERIALIZED VIEW IF NOT EXISTS x_mv TO x AS\nSELECT 1";
        assert_eq!(Features::of_version("26.9").adapt(view), view);
    }

    #[test]
    fn tokens_follow_the_rows_and_their_order() {
        let a = deduplication_token("events", &[Key("1"), Key("2")]);
        assert_eq!(a, deduplication_token("events", &[Key("1"), Key("2")]));
        assert_ne!(a, deduplication_token("events", &[Key("2"), Key("1")]));
        assert_ne!(a, deduplication_token("profiles", &[Key("1"), Key("2")]));
        assert_ne!(a, deduplication_token("events", &[Key("12")]));
    }
}
