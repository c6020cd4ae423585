//! Where a visit was and where it came from (page, campaign, referrer
//! class), kept for the (page, referrer, origin) triples seen lately. A
//! site has few landing URLs and referrers, and reading them was about a
//! third of enriching an event.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use crate::page::parse_page;
use crate::referrer::classify_referrer;

/// Most triples kept; past it the cache starts over.
const CAPACITY: usize = 10_000;
/// Longer inputs are read each time rather than kept.
const MAX_KEPT_BYTES: usize = 1_024;

/// What an event's page and referrer say, as stored.
#[derive(Debug, Default, PartialEq)]
pub struct Visit {
    /// The triple it was read from: page, referrer, request origin.
    read_from: [String; 3],
    pub path: String,
    /// The page's origin, "" for a page sent as a bare path.
    pub origin: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub referrer_name: String,
    pub referrer_type: &'static str,
}

impl Visit {
    /// Reads `page` (the SDK's `__path`) and `referrer` for a request from
    /// `origin` (its `Origin` header, for a page sent as a bare path).
    pub fn read(page: &str, referrer: &str, origin: &str) -> Visit {
        let parsed = parse_page(page);
        let own_origin = if parsed.origin.is_empty() {
            origin
        } else {
            parsed.origin.as_str()
        };
        let class = classify_referrer(referrer, own_origin, &parsed);
        let utm = |key: &str| parsed.utm(key).to_owned();
        Visit {
            read_from: [page.to_owned(), referrer.to_owned(), origin.to_owned()],
            utm_source: utm("utm_source"),
            utm_medium: utm("utm_medium"),
            utm_campaign: utm("utm_campaign"),
            utm_term: utm("utm_term"),
            utm_content: utm("utm_content"),
            referrer_name: class.name,
            referrer_type: class.kind,
            path: parsed.path,
            origin: parsed.origin,
        }
    }

    fn is_of(&self, page: &str, referrer: &str, origin: &str) -> bool {
        self.read_from == [page, referrer, origin]
    }
}

/// Visits by a hash of their triple; a hit is compared whole, so two
/// triples that share a hash are never confused.
#[derive(Default)]
pub struct Visits {
    kept: Mutex<HashMap<u64, Arc<Visit>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Visits {
    pub fn get(&self, page: &str, referrer: &str, origin: &str) -> Arc<Visit> {
        if page.len() + referrer.len() + origin.len() > MAX_KEPT_BYTES {
            return Arc::new(Visit::read(page, referrer, origin));
        }
        let mut h = self.hasher.build_hasher();
        for part in [page, referrer, origin] {
            h.write_usize(part.len());
            h.write(part.as_bytes());
        }
        let key = h.finish();
        let kept = |kept: &HashMap<u64, Arc<Visit>>| {
            kept.get(&key)
                .filter(|v| v.is_of(page, referrer, origin))
                .cloned()
        };
        if let Some(hit) = self.kept.lock().ok().and_then(|k| kept(&k)) {
            return hit;
        }
        let visit = Arc::new(Visit::read(page, referrer, origin));
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() >= CAPACITY {
                kept.clear();
            }
            kept.insert(key, visit.clone());
        }
        visit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_visit_is_the_one_read_for_its_triple() {
        let visits = Visits::default();
        let page = "https://shop.example/p?utm_source=news&gclid=x";
        let first = visits.get(page, "https://www.google.com/", "");
        assert_eq!(*first, Visit::read(page, "https://www.google.com/", ""));
        assert_eq!(
            (first.referrer_name.as_str(), first.referrer_type),
            ("Google", "ad")
        );
        assert!(Arc::ptr_eq(
            &first,
            &visits.get(page, "https://www.google.com/", "")
        ));
        // Any part of the triple changed is another visit.
        let direct = visits.get(page, "", "");
        assert_eq!(direct.referrer_type, "ad");
        assert_eq!(direct.referrer_name, "");
        let bare = visits.get("/p", "https://shop.example/x", "https://shop.example");
        assert_eq!(bare.referrer_type, "internal");
        let elsewhere = visits.get("/p", "https://shop.example/x", "https://other.example");
        assert_eq!(elsewhere.referrer_type, "other");
        let long = "x".repeat(MAX_KEPT_BYTES);
        assert_eq!(visits.get(&long, "", "").path, long);
    }
}
