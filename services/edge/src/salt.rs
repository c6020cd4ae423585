//! The daily salts of cookieless device ids, cached per day.

use std::collections::BTreeMap;
use std::sync::RwLock;

use analytics_meta::{Meta, MetaError};

/// Days kept cached: today, yesterday and one spare around midnight.
const DAYS_CACHED: usize = 3;

pub struct SaltCache {
    meta: Meta,
    days: RwLock<BTreeMap<String, String>>,
}

impl SaltCache {
    pub fn new(meta: Meta) -> Self {
        SaltCache {
            meta,
            days: RwLock::new(BTreeMap::new()),
        }
    }

    /// The salt of `day` (`YYYY-MM-DD`, UTC).
    pub async fn get(&self, day: &str) -> Result<String, MetaError> {
        if let Some(salt) = self.days.read().ok().and_then(|d| d.get(day).cloned()) {
            return Ok(salt);
        }
        let salt = self.meta.daily_salt(day).await?;
        if let Ok(mut days) = self.days.write() {
            days.insert(day.to_owned(), salt.clone());
            while days.len() > DAYS_CACHED {
                days.pop_first();
            }
        }
        Ok(salt)
    }
}
