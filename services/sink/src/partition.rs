//! One enriched partition's task: read (own pending entries first, then
//! new ones, and now and then entries other sinks left idle), fill the
//! buffer, flush it when it is full or old enough.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_config::Config;
use analytics_store::Store;
use analytics_streams::{
    ClaimPolicy, Conn, DeadLetter, GroupReader, MAX_BUNDLE_EVENTS, PartitionHealth, ReadBatch,
    StreamError, ack, backoff, claim_stale, dead_letter, keep_owned, maintain,
};
use tokio_util::sync::CancellationToken;

use crate::GROUP;
use crate::buffer::Buffer;
use crate::flush::{FlushSettings, Flushed, Ledger, flush};

const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);

/// The partition's stream and dead-letter stream, for this consumer.
pub(crate) struct StreamLedger {
    pub conn: Conn,
    pub key: String,
    pub dead: String,
    pub consumer: String,
}

impl Ledger for StreamLedger {
    async fn keep_owned(&mut self, ids: &[String]) -> Result<HashSet<String>, StreamError> {
        keep_owned(&mut self.conn, &self.key, GROUP, &self.consumer, ids).await
    }

    async fn dead_letter(&mut self, letters: &[DeadLetter]) -> Result<(), StreamError> {
        dead_letter(&mut self.conn, &self.key, &self.dead, GROUP, letters).await
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), StreamError> {
        ack(&mut self.conn, &self.key, GROUP, ids).await
    }
}

pub(crate) struct Partition {
    pub ledger: StreamLedger,
    pub store: Store,
    pub config: Arc<Config>,
    pub health: PartitionHealth,
    pub buffer: Buffer,
    /// Records per entry of the last read (the enricher bundles them):
    /// turns the rows still wanted before a flush into entries to read.
    pub records_per_entry: usize,
}

impl Partition {
    pub fn new(
        ledger: StreamLedger,
        store: Store,
        config: Arc<Config>,
        health: PartitionHealth,
    ) -> Self {
        Partition {
            ledger,
            store,
            config,
            health,
            buffer: Buffer::default(),
            // Until a read shows the real size, assume full bundles.
            records_per_entry: MAX_BUNDLE_EVENTS,
        }
    }

    pub async fn run(mut self, mut reader: GroupReader, shutdown: CancellationToken) {
        let max_age = Duration::from_millis(self.config.sink.max_age_ms);
        let claim_every = Duration::from_millis((self.config.sink.claim_idle_ms / 2).max(500));
        let mut last_claim = Instant::now();
        let mut last_maintenance = Instant::now();
        let mut failures = 0u32;
        loop {
            let read = if last_claim.elapsed() >= claim_every {
                last_claim = Instant::now();
                self.claim().await
            } else {
                reader.set_count(self.read_entries());
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    read = reader.read() => read,
                }
            };
            match read {
                Ok(batch) => {
                    failures = 0;
                    self.add(batch);
                    self.health.progressed();
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, stream = %self.ledger.key, "sink read failed; retrying");
                    reader.rewind();
                    if !backoff(failures, &shutdown).await {
                        break;
                    }
                }
            }
            let due = self.buffer.oldest.is_some_and(|t| t.elapsed() >= max_age);
            if self.buffer.rows() >= self.config.sink.max_rows || due {
                self.flush(&shutdown).await;
            }
            if last_maintenance.elapsed() >= MAINTENANCE_EVERY {
                last_maintenance = Instant::now();
                let ledger = &mut self.ledger;
                if let Err(e) = maintain(&mut ledger.conn, &ledger.key, &ledger.dead).await {
                    tracing::debug!(error = %e, "stream upkeep failed");
                }
            }
        }
        // Shutdown: the current batch is flushed and acknowledged before leaving.
        self.flush(&shutdown).await;
    }

    /// Entries to read so that the buffer reaches about `sink.max_rows`.
    fn read_entries(&self) -> usize {
        let wanted = self.config.sink.max_rows.saturating_sub(self.buffer.rows());
        (wanted / self.records_per_entry.max(1)).clamp(1, 5_000)
    }

    fn add(&mut self, batch: ReadBatch) {
        let entries = batch.entries.len();
        let rows = self.buffer.add(batch);
        if rows > 0 {
            self.records_per_entry = rows.div_ceil(entries.max(1));
        }
        self.buffered_gauge().set(self.buffer.rows() as f64);
    }

    /// Rows this task holds: what its buffer has, and while a flush runs,
    /// the batch being flushed.
    fn buffered_gauge(&self) -> metrics::Gauge {
        metrics::gauge!("analytics_sink_buffered_rows", "partition" => self.health.partition().to_string())
    }

    async fn claim(&mut self) -> Result<ReadBatch, StreamError> {
        let count = self.read_entries();
        let ledger = &mut self.ledger;
        claim_stale(
            &mut ledger.conn,
            &ledger.key,
            &ledger.dead,
            GROUP,
            &ledger.consumer,
            &ClaimPolicy {
                min_idle: Duration::from_millis(self.config.sink.claim_idle_ms),
                count,
                max_deliveries: self.config.sink.max_deliveries,
            },
        )
        .await
    }

    async fn flush(&mut self, shutdown: &CancellationToken) {
        let settings = FlushSettings {
            claim_idle: Duration::from_millis(self.config.sink.claim_idle_ms),
            max_backoff: Duration::from_millis(self.config.sink.max_backoff_ms),
        };
        let buffer = std::mem::take(&mut self.buffer);
        match flush(buffer, &self.store, &mut self.ledger, settings, shutdown).await {
            Flushed::Nothing | Flushed::Stored { .. } => self.health.progressed(),
            Flushed::LeftPending { .. } => {}
        }
        self.buffered_gauge().set(0.0);
    }
}
