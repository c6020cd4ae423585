//! One enriched partition's handler: fill the buffer with what the
//! consumer loop reads, flush it when it is full or old enough.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use analytics_config::Config;
use analytics_store::Store;
use analytics_streams::{
    Conn, DeadLetter, EntrySize, Handler, Letters, ReadBatch, StreamError, ack, dead_letter,
    keep_owned,
};
use tokio_util::sync::CancellationToken;

use crate::GROUP;
use crate::buffer::Buffer;
use crate::flush::{FlushSettings, Ledger, flush};

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
        dead_letter(
            &mut self.conn,
            &self.key,
            &self.dead,
            GROUP,
            letters,
            Letters::Moved,
        )
        .await
    }

    async fn ack(&mut self, ids: &[String]) -> Result<(), StreamError> {
        ack(&mut self.conn, &self.key, GROUP, ids).await
    }
}

/// What the sink does with one enriched partition's batches: buffer their
/// rows, and flush the buffer when it is full or old enough.
pub(crate) struct Partition {
    pub ledger: StreamLedger,
    pub store: Store,
    pub config: Arc<Config>,
    pub partition: u16,
    pub buffer: Buffer,
    /// Records per entry (the enricher bundles them): turns the rows still
    /// wanted before a flush into entries to read.
    pub size: EntrySize,
}

impl Partition {
    pub fn new(ledger: StreamLedger, store: Store, config: Arc<Config>, partition: u16) -> Self {
        Partition {
            ledger,
            store,
            config,
            partition,
            buffer: Buffer::default(),
            size: EntrySize::default(),
        }
    }

    fn add(&mut self, batch: ReadBatch) {
        let entries = batch.entries.len();
        let rows = self.buffer.add(batch);
        self.size.observe(rows, entries);
        self.buffered_gauge().set(self.buffer.rows() as f64);
    }

    /// Rows this task holds: what its buffer has, and while a flush runs,
    /// the batch being flushed.
    fn buffered_gauge(&self) -> metrics::Gauge {
        metrics::gauge!("analytics_sink_buffered_rows", "partition" => self.partition.to_string())
    }

    async fn flush_if_due(&mut self, shutdown: &CancellationToken) {
        let max_age = Duration::from_millis(self.config.sink.max_age_ms);
        let due = self.buffer.oldest.is_some_and(|t| t.elapsed() >= max_age);
        if self.buffer.rows() >= self.config.sink.max_rows || due {
            self.flush(shutdown).await;
        }
    }

    /// Stores and acknowledges the buffer; while ClickHouse is down this
    /// retries until it succeeds or `shutdown` leaves the entries pending.
    async fn flush(&mut self, shutdown: &CancellationToken) {
        let settings = FlushSettings {
            claim_idle: Duration::from_millis(self.config.sink.claim_idle_ms),
            max_backoff: Duration::from_millis(self.config.sink.max_backoff_ms),
        };
        let buffer = std::mem::take(&mut self.buffer);
        flush(buffer, &self.store, &mut self.ledger, settings, shutdown).await;
        self.buffered_gauge().set(0.0);
    }
}

impl Handler for Partition {
    type Error = StreamError;

    /// Entries to read so that the buffer reaches about `sink.max_rows`.
    fn read_entries(&self) -> usize {
        let wanted = self.config.sink.max_rows.saturating_sub(self.buffer.rows());
        self.size.entries_for(wanted).min(5_000)
    }

    async fn handle(
        &mut self,
        batch: ReadBatch,
        shutdown: &CancellationToken,
    ) -> Result<(), StreamError> {
        self.add(batch);
        self.flush_if_due(shutdown).await;
        Ok(())
    }

    /// A failed read holds nothing new; a buffer that is due still goes.
    async fn failed(&mut self, _error: &StreamError, shutdown: &CancellationToken) {
        self.flush_if_due(shutdown).await;
    }

    /// Shutdown: the current batch is flushed and acknowledged before leaving.
    async fn finish(&mut self, shutdown: &CancellationToken) {
        self.flush(shutdown).await;
    }
}
