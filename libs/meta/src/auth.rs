//! Client authentication with an in-memory cache of client lookups.
//!
//! Hostile traffic can neither push valid clients out of the cache nor buy
//! database queries without limit: clients found and ids found missing are
//! cached apart, each bounded on its own; looking up an id that is in
//! neither costs the caller's address from a small budget (past it, 429);
//! and concurrent requests for one id share a single lookup.

mod budget;
mod misses;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::{ClientRecord, Meta, MetaError};
use budget::LookupBudget;
use misses::Misses;

/// Clients kept at once. Only ids that exist get in, so this bounds memory
/// against a growing client list, not against attackers.
const MAX_KNOWN: usize = 100_000;
/// Missing ids kept at once.
const MAX_MISSES: usize = 10_000;
/// How long past its TTL an entry may still serve the callers that arrive
/// while another caller refreshes it.
const REFRESH_GRACE: Duration = Duration::from_secs(5);

/// One lookup in flight, shared by every request for its id.
type Lookup = Arc<OnceCell<Option<Arc<ClientRecord>>>>;

tokio::task_local! {
    static CLIENT_ADDRESS: IpAddr;
}

/// Runs `lookup` (an [`Authenticator::authenticate`]) with `ip` as the
/// address that its lookups of unknown client ids are charged to. Lookups
/// outside such a scope share one budget. Wrap the lookup alone: the
/// future is moved into the scope, and a whole request's is large.
pub async fn charged_to<F: Future>(ip: IpAddr, lookup: F) -> F::Output {
    CLIENT_ADDRESS.scope(ip, lookup).await
}

/// Looks clients up in the metadata DB, caching hits and misses for `ttl`
/// so the request path rarely touches the database.
pub struct Authenticator {
    meta: Meta,
    ttl: Duration,
    known: RwLock<HashMap<String, (Instant, Arc<ClientRecord>)>>,
    misses: Mutex<Misses>,
    budget: LookupBudget,
    in_flight: Arc<Mutex<HashMap<String, Lookup>>>,
}

/// Takes a finished or abandoned lookup out of the in-flight map (also
/// when the request running it is cancelled), unless a newer one took its
/// place.
struct Landing {
    in_flight: Arc<Mutex<HashMap<String, Lookup>>>,
    id: String,
    lookup: Lookup,
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Ok(mut lookups) = self.in_flight.lock()
            && lookups
                .get(&self.id)
                .is_some_and(|l| Arc::ptr_eq(l, &self.lookup))
        {
            lookups.remove(&self.id);
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: Arc<ClientRecord>,
    /// Set when the caller was admitted by its `Origin` (browser case).
    pub origin: Option<String>,
}

/// What a request presents: a client id with its secret (servers), or
/// with the page's `Origin` (browsers). Empty values count as absent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub id: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub origin: Option<&'a str>,
}

/// Why a caller was refused. The messages name the OpenPanel headers the
/// credentials come in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing openpanel-client-id header")]
    MissingId,
    #[error("unknown client")]
    UnknownClient,
    #[error("invalid client secret")]
    BadSecret,
    #[error("missing openpanel-client-secret header")]
    MissingSecret,
    #[error("origin not allowed for this project")]
    OriginNotAllowed,
    /// The caller's address looked up too many unknown ids; worth a retry.
    #[error("too many unknown client ids from this address; retry shortly")]
    TooManyLookups,
    /// The lookup itself failed: see [`MetaError::Unavailable`] for when
    /// a retry helps.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// A credential as given: trimmed, and absent when empty.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

impl Authenticator {
    pub fn new(meta: Meta, ttl: Duration) -> Self {
        Authenticator {
            meta,
            ttl,
            known: RwLock::default(),
            misses: Mutex::new(Misses::new(MAX_MISSES)),
            budget: LookupBudget::new(),
            in_flight: Arc::default(),
        }
    }

    /// The lookup of `id` in flight, started when there is none.
    fn lookup_of(&self, id: &str) -> Lookup {
        let mut lookups = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        lookups.entry(id.to_owned()).or_default().clone()
    }

    fn in_flight(&self, id: &str) -> bool {
        self.in_flight
            .lock()
            .is_ok_and(|lookups| lookups.contains_key(id))
    }

    /// A cached client while its entry is fresh. Once it expires, the first
    /// caller looks the client up again, and callers arriving meanwhile
    /// keep the old answer (for at most `REFRESH_GRACE` past the TTL)
    /// instead of all waiting on the database: that stampede, every TTL,
    /// stalled every request in flight for tens of milliseconds.
    async fn lookup(&self, id: &str) -> Result<Option<Arc<ClientRecord>>, AuthError> {
        let cached = self.known.read().ok().and_then(|c| c.get(id).cloned());
        if let Some((at, record)) = &cached {
            let age = at.elapsed();
            if age < self.ttl || (age < self.ttl + REFRESH_GRACE && self.in_flight(id)) {
                return Ok(Some(record.clone()));
            }
        } else if self
            .misses
            .lock()
            .is_ok_and(|misses| misses.holds(id, self.ttl))
        {
            return Ok(None);
        }
        // Refreshing a known client is free; anything else is charged.
        let charged = cached.is_none();
        let lookup = self.lookup_of(id);
        let record = lookup
            .get_or_try_init(|| self.fetch(id, lookup.clone(), charged))
            .await?;
        Ok(record.clone())
    }

    /// Queries the database for `id` and caches the answer.
    async fn fetch(
        &self,
        id: &str,
        lookup: Lookup,
        charged: bool,
    ) -> Result<Option<Arc<ClientRecord>>, AuthError> {
        let _landing = Landing {
            in_flight: self.in_flight.clone(),
            id: id.to_owned(),
            lookup,
        };
        if charged && !self.budget.spend(CLIENT_ADDRESS.try_with(|ip| *ip).ok()) {
            return Err(AuthError::TooManyLookups);
        }
        let record = self.meta.client(id).await?.map(Arc::new);
        self.remember(id, record.clone());
        Ok(record)
    }

    fn remember(&self, id: &str, record: Option<Arc<ClientRecord>>) {
        let (Ok(mut known), Ok(mut misses)) = (self.known.write(), self.misses.lock()) else {
            return;
        };
        match record {
            Some(record) => {
                misses.remove(id);
                if known.len() >= MAX_KNOWN
                    && !known.contains_key(id)
                    && let Some(evicted) = known.keys().next().cloned()
                {
                    known.remove(&evicted);
                }
                known.insert(id.to_owned(), (Instant::now(), record));
            }
            None => {
                known.remove(id);
                misses.insert(id);
            }
        }
    }

    /// Authenticates a caller: client id plus secret, or client id plus an
    /// `Origin` the project allows.
    pub async fn authenticate(&self, credentials: Credentials<'_>) -> Result<Caller, AuthError> {
        let id = present(credentials.id).ok_or(AuthError::MissingId)?;
        if id.len() > 100 {
            return Err(AuthError::UnknownClient);
        }
        let client = self.lookup(id).await?.ok_or(AuthError::UnknownClient)?;
        if let Some(secret) = present(credentials.secret) {
            return if client.verify_secret(secret) {
                Ok(Caller {
                    client,
                    origin: None,
                })
            } else {
                Err(AuthError::BadSecret)
            };
        }
        match present(credentials.origin) {
            Some(origin) if client.project.allows_origin(origin) => Ok(Caller {
                client,
                origin: Some(origin.to_owned()),
            }),
            Some(_) => Err(AuthError::OriginNotAllowed),
            None => Err(AuthError::MissingSecret),
        }
    }
}

#[cfg(test)]
mod tests;
