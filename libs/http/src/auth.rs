//! Client authentication with an in-memory cache of client lookups.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use analytics_meta::{ClientRecord, Meta};
use hyper::HeaderMap;

use crate::ApiError;

const MAX_CACHED: usize = 100_000;

/// Looks clients up in the metadata DB, caching hits and misses for `ttl`
/// so the request path rarely touches the database.
pub struct Authenticator {
    meta: Meta,
    ttl: Duration,
    cache: RwLock<HashMap<String, CachedLookup>>,
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
        }
    }

    async fn lookup(&self, id: &str) -> Result<Option<Arc<ClientRecord>>, ApiError> {
        if let Ok(cache) = self.cache.read()
            && let Some((at, record)) = cache.get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(record.clone());
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
