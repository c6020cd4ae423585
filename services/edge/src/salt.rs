//! The daily salt of cookieless device ids, cached for the current day.

use std::sync::RwLock;

use analytics_meta::{Meta, MetaError};

pub struct SaltCache {
    meta: Meta,
    current: RwLock<Option<(String, String)>>,
}

impl SaltCache {
    pub fn new(meta: Meta) -> Self {
        SaltCache {
            meta,
            current: RwLock::new(None),
        }
    }

    /// The salt of `day` (`YYYY-MM-DD`, UTC).
    pub async fn get(&self, day: &str) -> Result<String, MetaError> {
        if let Ok(current) = self.current.read()
            && let Some((d, salt)) = current.as_ref()
            && d == day
        {
            return Ok(salt.clone());
        }
        let salt = self.meta.daily_salt(day).await?;
        if let Ok(mut current) = self.current.write() {
            *current = Some((day.to_owned(), salt.clone()));
        }
        Ok(salt)
    }
}
