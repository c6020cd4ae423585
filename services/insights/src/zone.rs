//! Time zones the insights API accepts: the names of the IANA tz database
//! (zones and their links, as chrono-tz ships them), matched regardless of
//! case and handed to ClickHouse in the database's own spelling.
//!
//! A closed list, because ClickHouse opens whatever it is given as a file
//! under its zoneinfo directory (an absolute path too) and, on 18.16, keeps
//! a table of about 1 MB for every distinct spelling for the life of the
//! server. With this list ClickHouse sees at most one spelling per zone.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The longest name accepted, past the longest in the database.
const MAX_NAME: usize = 64;

/// The canonical spelling of the zone `name` names, if it names one.
pub fn canonical(name: &str) -> Option<&'static str> {
    static BY_LOWERCASE: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    if name.len() > MAX_NAME {
        return None;
    }
    BY_LOWERCASE
        .get_or_init(|| {
            chrono_tz::TZ_VARIANTS
                .iter()
                .map(|zone| (zone.name().to_ascii_lowercase(), zone.name()))
                .collect()
        })
        .get(&name.to_ascii_lowercase())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_spelled_as_the_database_spells_them() {
        assert_eq!(canonical("Europe/Paris"), Some("Europe/Paris"));
        assert_eq!(canonical("europe/PARIS"), Some("Europe/Paris"));
        assert_eq!(canonical("UTC"), Some("UTC"));
        assert_eq!(
            canonical("America/Argentina/Buenos_Aires"),
            Some("America/Argentina/Buenos_Aires")
        );
        assert_eq!(canonical("Asia/Calcutta"), Some("Asia/Calcutta"));
    }

    #[test]
    fn other_spellings_and_paths_are_not_zones() {
        for name in [
            "",
            "//////usr/////share/zoneinfo/////Europe//Paris",
            "Europe//Paris",
            "/Europe/Paris",
            "Europe/Paris/",
            "/etc/localtime",
            "../../../../etc/passwd",
            "Mars/Olympus",
            "posixrules",
            "Europe/Paris\0",
            " Europe/Paris",
        ] {
            assert_eq!(canonical(name), None, "{name:?}");
        }
        assert_eq!(canonical(&"A".repeat(10_000)), None);
    }

    #[test]
    fn the_list_is_bounded() {
        // Every spelling ClickHouse can be handed, and so every zone table it
        // may keep, comes from this list.
        assert!((400..1_000).contains(&chrono_tz::TZ_VARIANTS.len()));
    }
}
