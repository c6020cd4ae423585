//! Client authentication with an in-memory cache of client lookups.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use analytics_meta::{ClientRecord, Meta};
use hyper::HeaderMap;

use crate::ApiError;

const MAX_CACHED: usize = 100_000;
/// How long past its TTL an entry may still serve the callers that arrive
/// while another caller refreshes it.
const REFRESH_GRACE: Duration = Duration::from_secs(5);

/// Looks clients up in the metadata DB, caching hits and misses for `ttl`
/// so the request path rarely touches the database.
pub struct Authenticator {
    meta: Meta,
    ttl: Duration,
    cache: RwLock<HashMap<String, CachedLookup>>,
    /// Ids being looked up again after their entry expired.
    refreshing: Arc<Mutex<HashSet<String>>>,
}

/// The right to refresh one id's entry; given back when dropped, also when
/// the refreshing request is cancelled mid-lookup.
struct Refresh {
    refreshing: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for Refresh {
    fn drop(&mut self) {
        if let Ok(mut ids) = self.refreshing.lock() {
            ids.remove(&self.id);
        }
    }
}

/// When a client id was looked up, and what was found (misses are cached too).
type CachedLookup = (Instant, Option<Arc<ClientRecord>>);

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: Arc<ClientRecord>,
    /// Set when the caller was admitted by its `Origin` (browser case).
    pub origin: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Authenticator {
    pub fn new(meta: Meta, ttl: Duration) -> Self {
        Authenticator {
            meta,
            ttl,
            cache: RwLock::new(HashMap::new()),
            refreshing: Arc::default(),
        }
    }

    /// The right to refresh `id`, unless another caller holds it.
    fn claim_refresh(&self, id: &str) -> Option<Refresh> {
        let mut ids = self.refreshing.lock().ok()?;
        ids.insert(id.to_owned()).then(|| Refresh {
            refreshing: self.refreshing.clone(),
            id: id.to_owned(),
        })
    }

    /// A cached lookup while it is fresh. Once it expires, the first caller
    /// looks the client up again, and callers arriving meanwhile keep the
    /// old answer (for at most `REFRESH_GRACE` past the TTL) instead of all
    /// querying the database at once: that stampede, every TTL, stalled
    /// every request in flight for tens of milliseconds.
    async fn lookup(&self, id: &str) -> Result<Option<Arc<ClientRecord>>, ApiError> {
        let cached = self.cache.read().ok().and_then(|c| c.get(id).cloned());
        let mut refresh = None;
        if let Some((at, record)) = cached {
            let age = at.elapsed();
            if age < self.ttl {
                return Ok(record);
            }
            refresh = self.claim_refresh(id);
            if refresh.is_none() && age < self.ttl + REFRESH_GRACE {
                return Ok(record);
            }
        }
        let record = self
            .meta
            .client(id)
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))?
            .map(Arc::new);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(id.to_owned(), (Instant::now(), record.clone()));
        }
        // Held until the new answer is cached: no second caller repeats the lookup.
        drop(refresh);
        Ok(record)
    }

    /// Authenticates a request: client id plus secret, or client id plus an
    /// `Origin` the project allows.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let id = header(headers, "openpanel-client-id")
            .ok_or(ApiError::Unauthorized("missing openpanel-client-id header"))?;
        if id.len() > 100 {
            return Err(ApiError::Unauthorized("unknown client"));
        }
        let client = self
            .lookup(id)
            .await?
            .ok_or(ApiError::Unauthorized("unknown client"))?;
        if let Some(secret) = header(headers, "openpanel-client-secret") {
            return if client.verify_secret(secret) {
                Ok(Caller {
                    client,
                    origin: None,
                })
            } else {
                Err(ApiError::Unauthorized("invalid client secret"))
            };
        }
        match header(headers, "origin") {
            Some(origin) if client.project.allows_origin(origin) => Ok(Caller {
                client,
                origin: Some(origin.to_owned()),
            }),
            Some(_) => Err(ApiError::Forbidden("origin not allowed for this project")),
            None => Err(ApiError::Unauthorized(
                "missing openpanel-client-secret header",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use analytics_meta::ClientKind;

    async fn revoked_after_caching(ttl: Duration) -> (Authenticator, HeaderMap) {
        let meta = Meta::connect("sqlite::memory:").await.unwrap();
        meta.migrate().await.unwrap();
        let project = meta.create_project("Shop", &[]).await.unwrap();
        let client = meta
            .create_client(&project.id, ClientKind::Write)
            .await
            .unwrap();
        let auth = Authenticator::new(meta.clone(), ttl);
        let mut headers = HeaderMap::new();
        headers.insert("openpanel-client-id", client.id.parse().unwrap());
        headers.insert("openpanel-client-secret", client.secret.parse().unwrap());
        assert!(auth.authenticate(&headers).await.is_ok());
        assert!(meta.revoke_client(&client.id).await.unwrap());
        (auth, headers)
    }

    fn id(headers: &HeaderMap) -> &str {
        headers["openpanel-client-id"].to_str().unwrap()
    }

    #[tokio::test]
    async fn an_expired_entry_is_looked_up_again_by_its_first_caller() {
        let (auth, headers) = revoked_after_caching(Duration::from_millis(20)).await;
        // Within the TTL the cached answer stands, revoked or not.
        assert!(auth.authenticate(&headers).await.is_ok());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(auth.authenticate(&headers).await.is_err());
        // The refresh was given back: nothing stays claimed.
        assert!(auth.refreshing.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn callers_during_a_refresh_keep_the_old_answer_for_a_bounded_time() {
        let (auth, headers) = revoked_after_caching(Duration::from_millis(20)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Another caller is refreshing this id: this one is served the old
        // answer instead of querying too.
        let refresh = auth.claim_refresh(id(&headers)).unwrap();
        assert!(auth.claim_refresh(id(&headers)).is_none());
        assert!(auth.authenticate(&headers).await.is_ok());
        drop(refresh);
        assert!(auth.authenticate(&headers).await.is_err());
    }

    #[tokio::test]
    async fn past_the_grace_every_caller_looks_up() {
        let (auth, headers) = revoked_after_caching(Duration::from_millis(20)).await;
        // Age the entry past TTL + grace while a refresh is stuck.
        if let Ok(mut cache) = auth.cache.write() {
            let entry = cache.get_mut(id(&headers)).unwrap();
            entry.0 = Instant::now() - Duration::from_millis(20) - REFRESH_GRACE;
        }
        let _stuck = auth.claim_refresh(id(&headers)).unwrap();
        assert!(auth.authenticate(&headers).await.is_err());
    }
}
