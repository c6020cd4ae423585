//! The enricher stage: consumer group `enricher` on the raw stream.
//!
//! Wire format in: a JSON [`RawEvent`] per raw entry. Out: JSON
//! [`Record`](analytics_enrich::Record)s on the enriched partition with the
//! same number (same cluster slot).
//!
//! Guarantee: exactly once from raw to enriched. The `XADD`s of a batch's
//! output and the `XACK` of its input run in one `MULTI`, so an entry is
//! either still pending (and will be processed again) or acknowledged with
//! its output written; never both, never neither. Entries that cannot be
//! decoded, or that failed too many deliveries, go to the dead-letter stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_config::Config;
use analytics_enrich::enrich;
use analytics_event::RawEvent;
use analytics_streams::{
    ClaimPolicy, DeadLetter, GroupReader, PAYLOAD_FIELD, ReadBatch, StreamError, Topic,
    claim_stale, connect, dead_letter, ensure_group, maintain, stream_key,
};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Consumer group name on the raw stream.
pub const GROUP: &str = "enricher";

const BLOCK: Duration = Duration::from_secs(1);
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);

/// What the enricher needs from outside.
pub struct EnricherDeps {
    pub redis: redis::Client,
    /// This process's name in the consumer group.
    pub consumer: String,
}

/// Runs one task per raw partition until `shutdown`; in-flight batches are
/// finished (written and acknowledged) before it returns.
pub async fn run(
    config: Arc<Config>,
    deps: EnricherDeps,
    shutdown: CancellationToken,
) -> Result<(), StreamError> {
    let mut conn = connect(&deps.redis, Duration::from_secs(5)).await?;
    let prefix = &config.redis.key_prefix;
    for p in 0..config.redis.partitions {
        ensure_group(&mut conn, &stream_key(prefix, Topic::Raw, p), GROUP).await?;
    }
    let tasks = TaskTracker::new();
    for p in 0..config.redis.partitions {
        let reader_conn = connect(&deps.redis, BLOCK + Duration::from_secs(5)).await?;
        let worker = Partition {
            raw: stream_key(prefix, Topic::Raw, p),
            enriched: stream_key(prefix, Topic::Enriched, p),
            dead: stream_key(prefix, Topic::Dead, p),
            consumer: deps.consumer.clone(),
            conn: conn.clone(),
            config: config.clone(),
        };
        let reader = GroupReader::new(
            reader_conn,
            worker.raw.clone(),
            GROUP.into(),
            deps.consumer.clone(),
            config.enricher.read_count,
            BLOCK,
        );
        tasks.spawn(worker.run(reader, shutdown.clone()));
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

struct Partition {
    raw: String,
    enriched: String,
    dead: String,
    consumer: String,
    conn: ConnectionManager,
    config: Arc<Config>,
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
                claim_stale(
                    &mut self.conn,
                    &self.raw,
                    &self.dead,
                    GROUP,
                    &self.consumer,
                    &ClaimPolicy {
                        min_idle: Duration::from_millis(self.config.enricher.claim_idle_ms),
                        count: self.config.enricher.read_count,
                        max_deliveries: self.config.enricher.max_deliveries,
                    },
                )
                .await
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    batch = reader.read() => batch,
                }
            };
            let outcome = match batch {
                Ok(batch) => self.process(batch).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    metrics::counter!("analytics_enricher_errors_total").increment(1);
                    tracing::warn!(error = %e, stream = %self.raw, "enricher batch failed; retrying");
                    // Whatever was read stays pending for us: read it again.
                    reader.rewind();
                    let pause = Duration::from_millis(100 * 2u64.pow(failures.min(5)));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
            if last_maintenance.elapsed() >= MAINTENANCE_EVERY {
                last_maintenance = Instant::now();
                if let Err(e) = maintain(&mut self.conn, &self.raw).await {
                    tracing::debug!(error = %e, "stream upkeep failed");
                }
            }
        }
    }

    async fn process(&mut self, batch: ReadBatch) -> Result<(), StreamError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut letters = Vec::new();
        let mut acked = batch.vanished.clone();
        let mut outputs = 0usize;
        for entry in batch.entries {
            match serde_json::from_slice::<RawEvent>(&entry.payload) {
                Ok(raw) => {
                    for record in enrich(&raw) {
                        let payload = serde_json::to_vec(&record).unwrap_or_default();
                        pipe.cmd("XADD")
                            .arg(&self.enriched)
                            .arg("*")
                            .arg(PAYLOAD_FIELD)
                            .arg(payload)
                            .ignore();
                        outputs += 1;
                    }
                    acked.push(entry.id);
                }
                Err(e) => letters.push(DeadLetter {
                    reason: format!("cannot decode raw event: {e}"),
                    entry,
                }),
            }
        }
        if !acked.is_empty() {
            pipe.cmd("XACK")
                .arg(&self.raw)
                .arg(GROUP)
                .arg(&acked)
                .ignore();
        }
        let _: () = pipe.query_async(&mut self.conn).await?;
        dead_letter(&mut self.conn, &self.raw, &self.dead, GROUP, &letters).await?;
        metrics::counter!("analytics_enricher_events_total").increment(acked.len() as u64);
        metrics::counter!("analytics_enricher_records_total").increment(outputs as u64);
        if batch.redelivered {
            metrics::counter!("analytics_enricher_redelivered_total").increment(acked.len() as u64);
        }
        Ok(())
    }
}
