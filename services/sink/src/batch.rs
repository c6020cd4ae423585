//! One partition's batch: fill, flush to ClickHouse, acknowledge.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_config::Config;
use analytics_enrich::{Record, decode_bundle};
use analytics_store::{AliasRow, EventRow, InsertRow, ProfileRow, Store, StoreError};
use analytics_streams::Conn;
use analytics_streams::{
    ClaimPolicy, DeadLetter, Entry, GroupReader, MAX_BUNDLE_EVENTS, ReadBatch, StreamError, ack,
    backoff, claim_stale, dead_letter, keep_owned, maintain,
};
use tokio_util::sync::CancellationToken;

use crate::GROUP;

const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);

/// Rows waiting for the next flush, with the entries they came from.
#[derive(Default)]
struct Buffer {
    ids: Vec<String>,
    events: Rows<EventRow>,
    profiles: Rows<ProfileRow>,
    aliases: Rows<AliasRow>,
    /// Some rows may already be in ClickHouse: check before inserting.
    maybe_stored: bool,
    oldest: Option<Instant>,
    /// Entries that cannot be decoded, dead-lettered with the flush.
    letters: Vec<DeadLetter>,
}

impl Buffer {
    fn rows(&self) -> usize {
        self.events.len() + self.profiles.len() + self.aliases.len()
    }

    /// Drops the entries another consumer has taken over.
    fn retain(&mut self, owned: &HashSet<String>) {
        self.ids.retain(|id| owned.contains(id));
        self.events.retain(|id, _| owned.contains(id));
        self.profiles.retain(|id, _| owned.contains(id));
        self.aliases.retain(|id, _| owned.contains(id));
        self.letters.retain(|l| owned.contains(&l.entry.id));
    }
}

/// Rows of one table and the ids of the entries they came from (kept
/// apart, so the rows go to ClickHouse as one slice, without copies).
struct Rows<T> {
    rows: Vec<T>,
    origins: Vec<String>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows {
            rows: Vec::new(),
            origins: Vec::new(),
        }
    }
}

impl<T> Rows<T> {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn push(&mut self, origin: String, row: T) {
        self.origins.push(origin);
        self.rows.push(row);
    }

    fn retain(&mut self, mut keep: impl FnMut(&str, &T) -> bool) {
        let (rows, origins) = (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.origins),
        );
        for (origin, row) in origins.into_iter().zip(rows) {
            if keep(&origin, &row) {
                self.push(origin, row);
            }
        }
    }
}

pub struct Partition {
    key: String,
    dead: String,
    consumer: String,
    conn: Conn,
    store: Store,
    config: Arc<Config>,
    buffer: Buffer,
    /// Records per entry of the last read (the enricher bundles them):
    /// turns the rows still wanted before a flush into entries to read.
    records_per_entry: usize,
}

impl Partition {
    pub fn new(
        key: String,
        dead: String,
        consumer: String,
        conn: Conn,
        store: Store,
        config: Arc<Config>,
    ) -> Self {
        Partition {
            key,
            dead,
            consumer,
            conn,
            store,
            config,
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
            match read.and_then(|batch| self.add(batch)) {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, stream = %self.key, "sink read failed; retrying");
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
                if let Err(e) = maintain(&mut self.conn, &self.key, &self.dead).await {
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

    async fn claim(&mut self) -> Result<ReadBatch, StreamError> {
        let count = self.read_entries();
        claim_stale(
            &mut self.conn,
            &self.key,
            &self.dead,
            GROUP,
            &self.consumer,
            &ClaimPolicy {
                min_idle: Duration::from_millis(self.config.sink.claim_idle_ms),
                count,
                max_deliveries: self.config.sink.max_deliveries,
            },
        )
        .await
    }

    /// Decodes a read into the buffer; undecodable entries are dead-lettered
    /// with the next flush.
    fn add(&mut self, batch: ReadBatch) -> Result<(), StreamError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.buffer.oldest.get_or_insert_with(Instant::now);
        self.buffer.maybe_stored |= batch.redelivered;
        self.buffer.ids.extend(batch.vanished);
        // A redelivery may repeat entries already buffered; a fresh read never
        // does, and is not searched (the buffer holds up to sink.max_rows ids).
        let buffered: HashSet<String> = if batch.redelivered {
            self.buffer.ids.iter().cloned().collect()
        } else {
            HashSet::new()
        };
        let (entries, rows_before) = (batch.entries.len(), self.buffer.rows());
        for entry in batch.entries {
            if buffered.contains(&entry.id) {
                continue;
            }
            // A record that cannot be decoded is dead-lettered alone, not
            // with the rest of its bundle.
            for (bytes, record) in decode_bundle(&entry.payload) {
                let origin = entry.id.clone();
                match record {
                    Ok(Record::Events(row)) => self.buffer.events.push(origin, row),
                    Ok(Record::Profiles(row)) => self.buffer.profiles.push(origin, row),
                    Ok(Record::ProfileAliases(row)) => self.buffer.aliases.push(origin, row),
                    Err(e) => self.buffer.letters.push(DeadLetter {
                        reason: format!("cannot decode enriched record: {e}"),
                        entry: Entry {
                            id: origin,
                            payload: bytes.to_vec(),
                        },
                    }),
                }
            }
            self.buffer.ids.push(entry.id);
        }
        let rows = self.buffer.rows() - rows_before;
        if rows > 0 {
            self.records_per_entry = rows.div_ceil(entries.max(1));
        }
        Ok(())
    }

    /// Writes the buffer to ClickHouse, then acknowledges it. Retries while
    /// ClickHouse is unreachable; gives up only at shutdown, leaving the
    /// entries pending for the next run.
    async fn flush(&mut self, shutdown: &CancellationToken) {
        if self.buffer.ids.is_empty() {
            return;
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        let started = Instant::now();
        self.keep_owned(&mut buffer).await;
        let rows = buffer.rows();
        let mut maybe_stored = buffer.maybe_stored;
        let mut failures = 0u32;
        loop {
            // While the insert runs, the entries stay this consumer's. The
            // ids are lent to the heartbeat, not copied for every flush.
            let ids = Arc::new(std::mem::take(&mut buffer.ids));
            let heartbeat = self.heartbeat(ids.clone());
            let written = self
                .write(
                    Pending {
                        events: &mut buffer.events,
                        profiles: &mut buffer.profiles,
                        aliases: &mut buffer.aliases,
                    },
                    maybe_stored,
                    &mut buffer.letters,
                )
                .await;
            heartbeat.abort();
            // Once the aborted task is gone, the ids are ours alone again.
            let _ = heartbeat.await;
            buffer.ids = Arc::try_unwrap(ids).unwrap_or_else(|ids| (*ids).clone());
            match written {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    metrics::counter!("analytics_sink_insert_errors_total").increment(1);
                    tracing::warn!(error = %e, rows, "insert failed; will retry");
                    // The failed insert may have been applied: check before the next try.
                    maybe_stored = true;
                    self.keep_owned(&mut buffer).await;
                    if shutdown.is_cancelled() && failures >= 3 {
                        tracing::warn!(
                            rows,
                            "shutting down with an unflushed batch; it stays pending"
                        );
                        return;
                    }
                    let max = self.config.sink.max_backoff_ms;
                    let pause = Duration::from_millis((100 * 2u64.pow(failures.min(10))).min(max));
                    tokio::time::sleep(pause).await;
                }
            }
        }
        metrics::histogram!("analytics_sink_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("analytics_sink_batch_rows").record(rows as f64);
        let mut letters = std::mem::take(&mut buffer.letters);
        let mut failures = 0u32;
        loop {
            let result =
                match dead_letter(&mut self.conn, &self.key, &self.dead, GROUP, &letters).await {
                    Ok(()) => ack(&mut self.conn, &self.key, GROUP, &buffer.ids).await,
                    Err(e) => Err(e),
                };
            match result {
                Ok(()) => break,
                Err(e) => {
                    // Unacknowledged entries come back as redeliveries and are
                    // checked against ClickHouse then: nothing is counted twice.
                    failures += 1;
                    tracing::warn!(error = %e, "ack failed; will retry");
                    if failures >= 5 || !backoff(failures, shutdown).await {
                        return;
                    }
                }
            }
            letters.clear();
        }
        metrics::counter!("analytics_sink_rows_total").increment(rows as u64);
    }

    /// Keeps only the entries this consumer still holds (refreshing their
    /// idle time): one that sat here past `claim_idle_ms` may have been
    /// taken over, and then the other consumer writes it, not this one.
    /// When Redis cannot tell, the batch is kept whole; its entries come
    /// back as redeliveries and are checked against ClickHouse.
    async fn keep_owned(&mut self, buffer: &mut Buffer) {
        // Entries are claimable only once idle for claim_idle_ms, counted from
        // when this consumer read or claimed them: a younger batch is whole.
        let claim_idle = Duration::from_millis(self.config.sink.claim_idle_ms);
        if buffer
            .oldest
            .is_some_and(|read| read.elapsed() < claim_idle / 2)
        {
            return;
        }
        match keep_owned(
            &mut self.conn,
            &self.key,
            GROUP,
            &self.consumer,
            &buffer.ids,
        )
        .await
        {
            Ok(owned) => {
                let before = buffer.ids.len();
                buffer.retain(&owned);
                if buffer.ids.len() < before {
                    tracing::info!(
                        dropped = before - buffer.ids.len(),
                        "entries taken over by another consumer left to it"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot check pending entries"),
        }
    }

    /// Refreshes the idle time of `ids` every third of `claim_idle_ms`
    /// until aborted.
    fn heartbeat(&self, ids: Arc<Vec<String>>) -> tokio::task::JoinHandle<()> {
        let (mut conn, key, consumer) =
            (self.conn.clone(), self.key.clone(), self.consumer.clone());
        let every = Duration::from_millis((self.config.sink.claim_idle_ms / 3).max(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = keep_owned(&mut conn, &key, GROUP, &consumer, &ids).await {
                    tracing::debug!(error = %e, "cannot refresh pending entries");
                }
            }
        })
    }

    /// Inserts what is left of the batch; rows are removed from the vectors
    /// as soon as they are stored, so a retry never repeats them.
    async fn write(
        &mut self,
        pending: Pending<'_>,
        maybe_stored: bool,
        letters: &mut Vec<DeadLetter>,
    ) -> Result<(), StoreError> {
        let Pending {
            events,
            profiles,
            aliases,
        } = pending;
        if maybe_stored && !events.is_empty() {
            let existing = self.store.existing_event_ids(&events.rows).await?;
            let before = events.len();
            events.retain(|_, r| !existing.contains(&(r.project_id.clone(), r.id.clone())));
            metrics::counter!("analytics_sink_duplicates_skipped_total")
                .increment((before - events.len()) as u64);
        }
        insert_all(&self.store, "events", events, letters).await?;
        insert_all(&self.store, "profiles", profiles, letters).await?;
        insert_all(&self.store, "profile_aliases", aliases, letters).await?;
        Ok(())
    }
}

/// What is left to insert of a batch, per table. Profile versions and
/// aliases are idempotent (ReplacingMergeTree), events are checked.
struct Pending<'a> {
    events: &'a mut Rows<EventRow>,
    profiles: &'a mut Rows<ProfileRow>,
    aliases: &'a mut Rows<AliasRow>,
}

/// Inserts `rows` as one batch. When ClickHouse refuses the batch itself
/// (not an outage), rows are tried one by one and the refused ones become
/// dead letters, as JSON records (readable in `dlq list`, and decoded like
/// any record when replayed).
async fn insert_all<T: InsertRow + Into<Record>>(
    store: &Store,
    table: &str,
    rows: &mut Rows<T>,
    letters: &mut Vec<DeadLetter>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    match store.insert(table, &rows.rows).await {
        Ok(()) => {
            *rows = Rows::default();
            Ok(())
        }
        // Anything but a refusal of the data itself (an outage, a server
        // still loading its tables) is retried as a whole later.
        Err(e) if !e.is_row_refusal() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, table, "batch refused; inserting rows one by one");
            let taken = std::mem::take(rows);
            let mut remaining = taken.origins.into_iter().zip(taken.rows);
            while let Some((entry, row)) = remaining.next() {
                match store.insert(table, std::slice::from_ref(&row)).await {
                    Ok(()) => {}
                    Err(e) if e.is_row_refusal() => letters.push(DeadLetter {
                        reason: format!("refused by ClickHouse: {e}"),
                        entry: Entry {
                            id: entry,
                            payload: serde_json::to_vec(&row.into()).unwrap_or_default(),
                        },
                    }),
                    Err(e) => {
                        // Keep this row and every row not tried yet for the retry.
                        rows.push(entry, row);
                        for (entry, row) in remaining {
                            rows.push(entry, row);
                        }
                        return Err(e);
                    }
                }
            }
            Ok(())
        }
    }
}
