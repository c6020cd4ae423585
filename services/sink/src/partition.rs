//! One enriched partition's handler: fill the buffer with what the
//! consumer loop reads, flush it when it is full or old enough.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use analytics_config::Config;
use analytics_streams::{
    Conn, DeadLetter, EntrySize, Handler, Letters, ReadBatch, StreamError, ack, dead_letter,
    keep_owned,
};
use tokio_util::sync::CancellationToken;

use crate::GROUP;
use crate::buffer::Buffer;
use crate::flush::{FlushSettings, Ledger, Warehouse, flush};
use crate::tables::Tables;

/// The most entries one read asks for, whatever room the batch has left
/// (entries of a few rows each would otherwise make replies of tens of
/// thousands of entries).
const MAX_READ_ENTRIES: usize = 5_000;

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
pub(crate) struct Partition<W = Tables, L = StreamLedger> {
    pub ledger: L,
    pub store: W,
    pub config: Arc<Config>,
    pub partition: u16,
    pub buffer: Buffer,
    /// Records per entry (the enricher bundles them): turns the rows still
    /// wanted before a flush into entries to read.
    pub size: EntrySize,
}

impl<W: Warehouse + Send, L: Ledger> Partition<W, L> {
    pub fn new(ledger: L, store: W, config: Arc<Config>, partition: u16) -> Self {
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

impl<W: Warehouse + Send, L: Ledger> Handler for Partition<W, L> {
    type Error = StreamError;

    /// Entries to read so that the buffer reaches about `sink.max_rows`.
    fn read_entries(&self) -> usize {
        let wanted = self.config.sink.max_rows.saturating_sub(self.buffer.rows());
        self.size.entries_for(wanted).min(MAX_READ_ENTRIES)
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

#[cfg(test)]
mod tests {
    use analytics_store::{Frame, encode_frame};
    use analytics_streams::Entry;

    use super::*;
    use crate::fakes::*;

    const MAX_BUNDLE: usize = analytics_streams::MAX_BUNDLE_EVENTS;

    /// A partition handler over fakes, with the shipped settings.
    fn partition() -> Partition<FakeWarehouse, FakeLedger> {
        let config = Config::load(None, Vec::new()).expect("defaults");
        Partition::new(
            FakeLedger::default(),
            FakeWarehouse::default(),
            Arc::new(config),
            0,
        )
    }

    /// A fresh read of `entries` entries of `per_entry` events each,
    /// numbered from `first`.
    fn read(first: usize, entries: usize, per_entry: usize) -> ReadBatch {
        let entries = (0..entries)
            .map(|e| {
                let mut payload = Vec::new();
                for r in 0..per_entry {
                    let id = format!("e{}", first + e * per_entry + r);
                    encode_frame(&Frame::Event((&event(&id)).into()), &mut payload);
                }
                Entry {
                    id: format!("{}-0", first + e),
                    payload,
                }
            })
            .collect();
        ReadBatch {
            entries,
            redelivered: false,
            vanished: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_buffer_flushes_once_it_holds_max_rows() {
        let mut p = partition();
        let shutdown = CancellationToken::new();
        let max_rows = p.config.sink.max_rows;
        // Until a read shows their size, full bundles are assumed.
        assert_eq!(p.read_entries(), max_rows / MAX_BUNDLE);
        p.handle(read(0, 10, MAX_BUNDLE), &shutdown).await.unwrap();
        assert!(p.store.event_ids().is_empty(), "500 rows wait for more");
        assert_eq!(p.read_entries(), (max_rows - 10 * MAX_BUNDLE) / MAX_BUNDLE);
        let rest = (max_rows - 10 * MAX_BUNDLE) / MAX_BUNDLE;
        p.handle(read(10, rest, MAX_BUNDLE), &shutdown)
            .await
            .unwrap();
        assert_eq!(p.store.event_ids().len(), max_rows);
        assert_eq!(p.ledger.acked.len(), 10 + rest, "every entry acknowledged");
        assert_eq!(p.buffer.rows(), 0);
    }

    #[tokio::test]
    async fn what_is_buffered_at_shutdown_is_stored_and_acknowledged() {
        let mut p = partition();
        let shutdown = CancellationToken::new();
        p.handle(read(0, 3, 2), &shutdown).await.unwrap();
        assert!(p.store.event_ids().is_empty());
        // Two records per entry: the next read asks for entries to match,
        // at most MAX_READ_ENTRIES of them.
        let room = p.config.sink.max_rows - 6;
        assert_eq!(p.size.entries_for(room), room / 2);
        assert_eq!(p.read_entries(), (room / 2).min(MAX_READ_ENTRIES));
        shutdown.cancel();
        p.finish(&shutdown).await;
        assert_eq!(p.store.event_ids(), ["e0", "e1", "e2", "e3", "e4", "e5"]);
        assert_eq!(p.ledger.acked, ["0-0", "1-0", "2-0"]);
    }
}
