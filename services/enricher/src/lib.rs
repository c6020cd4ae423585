//! The enricher stage: consumer group `enricher` on the raw stream.
//!
//! Wire format in: bundles of [`RawEvent`](analytics_event::RawEvent)s per
//! raw entry, binary (or lines of JSON from older edges). Out: bundles of
//! [`Record`](analytics_store::Record)s (event rows, profile versions,
//! aliases) as binary frames on the enriched partition with the same
//! number (same cluster slot).
//!
//! Each raw partition is owned by one enricher process at a time (a lease
//! in Redis, see `analytics_streams::consume_owned`), which keeps the
//! partition's sessions, dedupe window and device → profile links in
//! memory ([`state`]) and restores them from their changelog when it takes
//! the partition over ([`restore`]).
//!
//! Per batch: parse user agents (bots dropped or tagged per project),
//! resolve identities (aliases, devices identified earlier, devices carried
//! over midnight), assign sessions in memory, apply profile operations
//! through a Lua script on shared Redis state (a profile's events may come
//! through several partitions), build the rows, drop duplicates (client
//! retries with the same event id within the dedupe window; identical
//! events without an id from the same client within a second), then commit.
//!
//! Guarantee: exactly once from raw to enriched. The commit is one Lua
//! script that checks the lease, appends the outputs, writes the state's
//! changelog and acknowledges the input, atomically; a member that lost
//! its lease commits nothing. After a failed commit the state is restored
//! from Redis before the next batch, so it always matches what was
//! acknowledged. Profile steps are idempotent per event and session ids
//! are derived from the device and the first event time, so a batch that
//! is processed again gives the same result. Undecodable entries and
//! entries that failed too many deliveries go to the dead-letter stream.

mod keys;
mod process;
mod restore;
mod scripts;
mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_config::Config;
use analytics_enrich::Enrichment;
use analytics_meta::Meta;
use analytics_streams::{
    Appended, Conn, EntrySize, Handler, Lease, Ownership, ReadBatch, StageHealth, StreamError,
    Subscription, connect, consume_owned,
};
use tokio_util::sync::CancellationToken;

use crate::keys::Keys;
use crate::process::{Owned, ProcessError, Shared};
use crate::scripts::Scripts;
use crate::state::PartitionState;

/// Consumer group name on the raw stream.
pub const GROUP: &str = "enricher";

const BLOCK: Duration = Duration::from_secs(1);

/// What the enricher needs from outside.
pub struct EnricherDeps {
    pub redis: analytics_streams::RedisTarget,
    pub meta: Meta,
    /// User-agent and GeoIP lookups (either may be absent).
    pub enrichment: Enrichment,
    /// This process's name in the consumer group.
    pub consumer: String,
    /// This process run's name among the partitions' owners: unique, so a
    /// restarted process never mistakes its predecessor's leases for its own.
    pub member: String,
    /// Where each partition task reports progress (`/readyz`, gauges).
    pub health: StageHealth,
}

/// Session and dedupe settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub session_timeout_ms: u64,
    pub session_grace_ms: u64,
    pub dedupe_window_ms: u64,
}

/// Runs one task per raw partition until `shutdown`, each working while
/// this process owns its partition; in-flight batches are finished
/// (committed) before it returns. A task that panics stops the others
/// (they finish their batches) and the stage returns the failure.
pub async fn run(
    config: Arc<Config>,
    deps: EnricherDeps,
    shutdown: CancellationToken,
) -> Result<(), StreamError> {
    let mut conn = connect(&deps.redis, Duration::from_secs(5)).await?;
    let prefix = config.redis.key_prefix.clone();
    let scripts = Scripts::load(&mut conn).await?;
    let settings = Settings {
        session_timeout_ms: config.enricher.session_timeout_ms,
        session_grace_ms: config.enricher.session_grace_ms,
        dedupe_window_ms: config.enricher.dedupe_window_ms,
    };
    let shared = Arc::new(Shared::new(deps.enrichment, deps.meta, settings, scripts));
    let subscriptions = (0..config.redis.partitions)
        .map(|p| {
            let keys = Keys::new(&prefix, p);
            let subscription = Subscription {
                key: keys.raw.clone(),
                dead: keys.dead.clone(),
                group: GROUP.into(),
                consumer: deps.consumer.clone(),
                claim_idle: Duration::from_millis(config.enricher.claim_idle_ms),
                max_deliveries: config.enricher.max_deliveries,
                block: BLOCK,
                takeover: false,
            };
            (p, subscription)
        })
        .collect();
    let ownership = Ownership {
        prefix: prefix.clone(),
        group: GROUP.into(),
        member: deps.member.clone(),
        lease_ttl: Duration::from_millis(config.enricher.lease_ttl_ms),
    };
    // Records per enriched entry, over every owner of this process.
    let written = Arc::new(Appended::default());
    let make = {
        let conn = conn.clone();
        move |p: u16, lease: Lease| {
            let (mut conn, config, shared) = (conn.clone(), config.clone(), shared.clone());
            let (written, prefix) = (written.clone(), prefix.clone());
            async move {
                let keys = Keys::new(&prefix, p);
                let state = restore::restore(&mut conn, &keys, &shared.settings).await?;
                let size = EntrySize::default();
                Ok(Partition {
                    keys,
                    conn,
                    read_entries: size.entries_for(config.enricher.read_count),
                    size,
                    written,
                    config,
                    shared,
                    lease,
                    state: Some(state),
                    swept: Instant::now(),
                })
            }
        }
    };
    consume_owned(
        &deps.redis,
        conn,
        ownership,
        subscriptions,
        make,
        &deps.health,
        &shutdown,
    )
    .await
}

/// How often expired sessions are swept from memory.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What the enricher does with one raw partition's batches.
struct Partition {
    keys: Keys,
    conn: Conn,
    config: Arc<Config>,
    shared: Arc<Shared>,
    /// Events per raw entry (the edge bundles events into entries).
    size: EntrySize,
    /// Entries per read: `enricher.read_count` events at the last batch's
    /// size, halved after each failure in case size was the trouble.
    read_entries: usize,
    /// Everything appended to enriched partitions: the records per entry
    /// turn a partition's `XLEN` into records for the cap.
    written: Arc<Appended>,
    lease: Lease,
    /// The partition's state; `None` after a failed batch, until restored.
    state: Option<PartitionState>,
    swept: Instant,
}

impl Handler for Partition {
    type Error = ProcessError;

    fn read_entries(&self) -> usize {
        self.read_entries
    }

    /// Reading pauses while the enriched partition holds
    /// `redis.max_stream_len` records (the sinks are behind); the raw
    /// partition then fills up to its cap and the edge answers 503, so no
    /// stream outgrows the cap. The records on it are its entries times the
    /// records per entry written so far (1 before the first). Unknown
    /// counts as not full: a Redis failure shows up in the read that follows.
    async fn paused(&mut self) -> bool {
        let len: Result<u64, _> = redis::cmd("XLEN")
            .arg(&self.keys.enriched)
            .query_async(&mut self.conn)
            .await;
        let cap = self.config.redis.max_stream_len as f64;
        let full = matches!(len, Ok(n) if self.written.items_in(n) >= cap);
        if full {
            metrics::counter!("analytics_enricher_paused_total").increment(1);
        }
        full
    }

    async fn handle(
        &mut self,
        batch: ReadBatch,
        _shutdown: &CancellationToken,
    ) -> Result<(), ProcessError> {
        if batch.is_empty() {
            return Ok(());
        }
        let redelivered = batch.redelivered;
        let started = Instant::now();
        let mut state = match self.state.take() {
            Some(state) => state,
            None => restore::restore(&mut self.conn, &self.keys, &self.shared.settings).await?,
        };
        if self.swept.elapsed() >= SWEEP_EVERY {
            self.swept = Instant::now();
            state.sessions.sweep(analytics_event::now_ms());
        }
        let owned = Owned {
            keys: &self.keys,
            state: &mut state,
            lease: &self.lease,
        };
        let outcome = process::process(&self.shared, owned, &mut self.conn, batch).await?;
        metrics::gauge!("analytics_enricher_state_sessions", "partition" => self.keys.partition.to_string())
            .set(state.sessions.len() as f64);
        metrics::gauge!("analytics_enricher_state_dedupe_keys", "partition" => self.keys.partition.to_string())
            .set((state.dedupe.len() + state.content.len()) as f64);
        metrics::gauge!("analytics_enricher_state_sessions_log_bytes", "partition" => self.keys.partition.to_string())
            .set(state.sessions.log_bytes() as f64);
        self.state = Some(state);
        if outcome.events > 0 {
            self.size
                .observe(outcome.events as usize, outcome.entries as usize);
            self.read_entries = self.size.entries_for(self.config.enricher.read_count);
        }
        self.written
            .add(outcome.written.records, outcome.written.entries);
        metrics::histogram!("analytics_enricher_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("analytics_enricher_events_total").increment(outcome.stored);
        metrics::counter!("analytics_enricher_duplicates_total").increment(outcome.duplicates);
        metrics::counter!("analytics_enricher_bots_dropped_total").increment(outcome.dropped_bots);
        if redelivered {
            metrics::counter!("analytics_enricher_redelivered_batches_total").increment(1);
        }
        Ok(())
    }

    async fn failed(&mut self, error: &ProcessError, _shutdown: &CancellationToken) {
        metrics::counter!("analytics_enricher_errors_total").increment(1);
        if error.lease_lost() {
            metrics::counter!("analytics_enricher_fenced_commits_total").increment(1);
        }
        // Redis may have restarted and forgotten the scripts (a NOSCRIPT
        // can also hide inside a pipeline failure): loading them again is
        // cheap and idempotent.
        if let Ok(scripts) = Scripts::load(&mut self.conn).await {
            *self.shared.scripts.write().await = scripts;
        }
        self.read_entries = (self.read_entries / 2).max(1);
    }
}
