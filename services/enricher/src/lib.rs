//! The enricher stage: consumer group `enricher` on the raw stream.
//!
//! Wire format in: bundles of JSON [`RawEvent`](analytics_event::RawEvent)s,
//! one document per line, per raw entry. Out: bundles of
//! [`Record`](analytics_store::Record)s (event rows, profile versions,
//! aliases) as binary frames on the enriched partition with the same
//! number (same cluster slot).
//!
//! Per batch: parse user agents (bots dropped or tagged per project),
//! resolve identities (aliases, devices identified earlier, devices carried
//! over midnight), assign sessions and apply profile operations through Lua
//! scripts on shared Redis state (so several enricher processes agree), build
//! the rows, then commit.
//!
//! Guarantee: exactly once from raw to enriched. The commit is one Lua
//! script that drops duplicates (client retries with the same event id
//! within the dedupe window; identical events without an id from the same
//! client within a second), appends the outputs and acknowledges the input,
//! atomically. Session and profile steps are idempotent per event, so a
//! batch that is processed again after a crash gives the same result.
//! Undecodable entries and entries that failed too many deliveries go to the
//! dead-letter stream.

mod keys;
mod process;
mod scripts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_config::Config;
use analytics_enrich::Enrichment;
use analytics_meta::Meta;
use analytics_streams::Conn;
use analytics_streams::{
    ClaimPolicy, GroupReader, MAX_BUNDLE_EVENTS, PartitionHealth, StageHealth, StreamError,
    backoff, claim_stale, connect, ensure_group, maintain, supervise,
};
use tokio_util::sync::CancellationToken;

use crate::keys::Keys;
use crate::process::{ProcessError, Shared};
use crate::scripts::Scripts;

/// Consumer group name on the raw stream.
pub const GROUP: &str = "enricher";

const BLOCK: Duration = Duration::from_secs(1);
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);

/// What the enricher needs from outside.
pub struct EnricherDeps {
    pub redis: analytics_streams::RedisTarget,
    pub meta: Meta,
    /// User-agent and GeoIP lookups (either may be absent).
    pub enrichment: Enrichment,
    /// This process's name in the consumer group.
    pub consumer: String,
    /// Where each partition task reports progress (`/readyz`, gauges).
    pub health: StageHealth,
}

/// Session and dedupe settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub session_timeout_ms: u64,
    pub session_grace_ms: u64,
    pub dedupe_window_ms: u64,
}

/// Runs one task per raw partition until `shutdown`; in-flight batches are
/// finished (committed) before it returns. A task that panics stops the
/// others (they finish their batches) and the stage returns the failure.
pub async fn run(
    config: Arc<Config>,
    deps: EnricherDeps,
    shutdown: CancellationToken,
) -> Result<(), StreamError> {
    let mut conn = connect(&deps.redis, Duration::from_secs(5)).await?;
    let prefix = &config.redis.key_prefix;
    for p in 0..config.redis.partitions {
        ensure_group(&mut conn, &Keys::new(prefix, p).raw, GROUP).await?;
    }
    let scripts = Scripts::load(&mut conn).await?;
    let settings = Settings {
        session_timeout_ms: config.enricher.session_timeout_ms,
        session_grace_ms: config.enricher.session_grace_ms,
        dedupe_window_ms: config.enricher.dedupe_window_ms,
    };
    let shared = Arc::new(Shared::new(deps.enrichment, deps.meta, settings, scripts));
    let stop = shutdown.child_token();
    let mut tasks = Vec::new();
    // Until a batch shows the real size of bundles, assume full ones: a
    // first read must not turn into a batch too big to commit.
    let read_entries = (config.enricher.read_count / MAX_BUNDLE_EVENTS).max(1);
    for p in 0..config.redis.partitions {
        let keys = Keys::new(prefix, p);
        let reader = GroupReader::new(
            connect(&deps.redis, BLOCK + Duration::from_secs(5)).await?,
            keys.raw.clone(),
            GROUP.into(),
            deps.consumer.clone(),
            read_entries,
            BLOCK,
        );
        let worker = Partition {
            keys,
            consumer: deps.consumer.clone(),
            conn: conn.clone(),
            read_entries,
            written: process::Written::default(),
            config: config.clone(),
            shared: shared.clone(),
            health: deps.health.start(p),
        };
        tasks.push((p, worker.run(reader, stop.clone())));
    }
    supervise(tasks, &stop).await?;
    Ok(())
}

struct Partition {
    keys: Keys,
    consumer: String,
    conn: Conn,
    config: Arc<Config>,
    shared: Arc<Shared>,
    /// Entries per read: `enricher.read_count` events at the events per
    /// entry of the last batch (the edge bundles events into entries).
    read_entries: usize,
    /// Everything this task appended to the enriched partition: the records
    /// per entry turn its `XLEN` into records for the cap.
    written: process::Written,
    health: PartitionHealth,
}

impl Partition {
    async fn run(mut self, mut reader: GroupReader, shutdown: CancellationToken) {
        let claim_every = Duration::from_millis((self.config.enricher.claim_idle_ms / 2).max(500));
        let mut last_claim = Instant::now();
        let mut last_maintenance = Instant::now();
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let batch = if last_claim.elapsed() >= claim_every {
                last_claim = Instant::now();
                let policy = ClaimPolicy {
                    min_idle: Duration::from_millis(self.config.enricher.claim_idle_ms),
                    count: self.read_entries,
                    max_deliveries: self.config.enricher.max_deliveries,
                };
                claim_stale(
                    &mut self.conn,
                    &self.keys.raw,
                    &self.keys.dead,
                    GROUP,
                    &self.consumer,
                    &policy,
                )
                .await
            } else if self.downstream_full().await {
                // Reading pauses; the raw partition fills up to its cap and
                // the edge answers 503, so no stream outgrows the cap. The
                // pause is this stage working as meant: the sinks are behind.
                self.health.progressed();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            } else {
                reader.set_count(self.read_entries);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    batch = reader.read() => batch,
                }
            };
            let outcome = match batch {
                Ok(batch) if batch.is_empty() => Ok(()),
                Ok(batch) => self.process(batch).await,
                Err(e) => Err(ProcessError::from(e)),
            };
            match outcome {
                Ok(()) => {
                    failures = 0;
                    self.health.progressed();
                }
                Err(e) => {
                    failures += 1;
                    metrics::counter!("analytics_enricher_errors_total").increment(1);
                    tracing::warn!(error = %e, stream = %self.keys.raw, "enricher batch failed; retrying");
                    // Redis may have restarted and forgotten the scripts (a
                    // NOSCRIPT can also hide inside a pipeline failure):
                    // loading them again is cheap and idempotent.
                    if let Ok(scripts) = Scripts::load(&mut self.conn).await {
                        *self.shared.scripts.write().await = scripts;
                    }
                    // Whatever was read stays pending for us: read it again,
                    // in smaller batches in case size was the trouble.
                    self.read_entries = (self.read_entries / 2).max(1);
                    reader.rewind();
                    if !backoff(failures, &shutdown).await {
                        break;
                    }
                }
            }
            if last_maintenance.elapsed() >= MAINTENANCE_EVERY {
                last_maintenance = Instant::now();
                if let Err(e) = maintain(&mut self.conn, &self.keys.raw, &self.keys.dead).await {
                    tracing::debug!(error = %e, "stream upkeep failed");
                }
            }
        }
    }

    /// Whether the enriched partition holds `redis.max_stream_len` records
    /// (the sinks are behind): its entries times the records per entry
    /// written so far (1 before the first). Unknown counts as not full: a
    /// Redis failure shows up in the read that follows.
    async fn downstream_full(&mut self) -> bool {
        let len: Result<u64, _> = redis::cmd("XLEN")
            .arg(&self.keys.enriched)
            .query_async(&mut self.conn)
            .await;
        let per_entry = match self.written {
            process::Written { entries: 0, .. } => 1.0,
            w => w.records as f64 / w.entries as f64,
        };
        let full =
            matches!(len, Ok(n) if n as f64 * per_entry >= self.config.redis.max_stream_len as f64);
        if full {
            metrics::counter!("analytics_enricher_paused_total").increment(1);
        }
        full
    }

    async fn process(&mut self, batch: analytics_streams::ReadBatch) -> Result<(), ProcessError> {
        let redelivered = batch.redelivered;
        let started = Instant::now();
        let outcome = process::process(&self.shared, &self.keys, &mut self.conn, batch).await?;
        if outcome.events > 0 {
            let per_entry = outcome.events.div_ceil(outcome.entries.max(1)) as usize;
            self.read_entries = (self.config.enricher.read_count / per_entry).max(1);
        }
        self.written.records += outcome.written.records;
        self.written.entries += outcome.written.entries;
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
}
