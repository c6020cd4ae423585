//! A batch's way out: insert into ClickHouse, dead-letter what ClickHouse
//! refused, then acknowledge. Each step is retried until it succeeds (or,
//! at shutdown, until a few attempts failed), and no step runs before the
//! one it depends on has succeeded: entries are never acknowledged before
//! their rows are stored and their refused rows are on the dead-letter
//! stream. A batch given up at shutdown stays pending and comes back as a
//! redelivery, which is checked against ClickHouse before inserting.
//!
//! The steps talk to a [`Warehouse`] (ClickHouse) and a [`Ledger`] (the
//! partition's stream), so the decisions are tested against fakes.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use analytics_store::{EncodedEvent, StoreError};
use analytics_streams::{DeadLetter, Entry, StreamError};
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Rows};
use crate::tables::Table;

/// Where rows are stored.
pub(crate) trait Warehouse: Sync {
    /// Which of these events are already stored, as (project, id).
    fn existing_event_ids(
        &self,
        rows: &[EncodedEvent],
    ) -> impl Future<Output = Result<HashSet<(String, String)>, StoreError>> + Send;

    /// Inserts `rows` into their table, at once: all stored, or none
    /// (an unknown outcome aside, which the caller checks before retrying).
    fn insert<T: Table>(&self, rows: &[T]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The partition's stream, as the flush sees it.
pub(crate) trait Ledger: Send {
    /// Refreshes the idle time of the entries among `ids` this consumer
    /// still holds, and returns them.
    fn keep_owned(
        &mut self,
        ids: &[String],
    ) -> impl Future<Output = Result<HashSet<String>, StreamError>> + Send;

    /// Writes letters to the dead-letter stream and acknowledges their
    /// entries, atomically.
    fn dead_letter(
        &mut self,
        letters: &[DeadLetter],
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    fn ack(&mut self, ids: &[String]) -> impl Future<Output = Result<(), StreamError>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FlushSettings {
    /// Entries idle this long may be claimed by another consumer.
    pub claim_idle: Duration,
    /// Longest pause between two attempts of a step.
    pub max_backoff: Duration,
}

/// Attempts of one step at shutdown before the batch is left pending.
const SHUTDOWN_ATTEMPTS: u32 = 3;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    Nothing,
    /// Rows stored (duplicates and refusals aside) and entries acknowledged.
    Stored {
        rows: usize,
    },
    /// Shutdown came while a step kept failing: the entries stay pending.
    LeftPending {
        rows: usize,
    },
}

/// Writes the buffer out and acknowledges it (see the module notes).
pub(crate) async fn flush<W: Warehouse, L: Ledger>(
    mut buffer: Buffer,
    warehouse: &W,
    ledger: &mut L,
    settings: FlushSettings,
    shutdown: &CancellationToken,
) -> Flushed {
    if buffer.ids.is_empty() {
        return Flushed::Nothing;
    }
    let started = Instant::now();
    keep_owned(ledger, &mut buffer, settings.claim_idle).await;
    let rows = buffer.rows();
    let mut retry = Retry::new(settings.max_backoff);
    loop {
        let Buffer {
            ids,
            events,
            profiles,
            aliases,
            maybe_stored,
            letters,
            ..
        } = &mut buffer;
        let pending = Pending {
            events,
            profiles,
            aliases,
            letters,
        };
        let written = with_heartbeat(
            write(warehouse, pending, *maybe_stored),
            ledger,
            ids,
            settings.claim_idle,
        )
        .await;
        let Err(e) = written else { break };
        metrics::counter!("analytics_sink_insert_errors_total").increment(1);
        tracing::warn!(error = %e, rows, "insert failed; will retry");
        // The failed insert may have been applied: check before the next try.
        buffer.maybe_stored = true;
        keep_owned(ledger, &mut buffer, settings.claim_idle).await;
        if !retry.wait(shutdown).await {
            tracing::warn!(
                rows,
                "shutting down with an unflushed batch; it stays pending"
            );
            return Flushed::LeftPending { rows };
        }
    }
    metrics::histogram!("analytics_sink_flush_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("analytics_sink_batch_rows").record(rows as f64);
    // The letters are kept until they are written: acknowledging their
    // entries without them would lose the rows for good.
    let mut retry = Retry::new(settings.max_backoff);
    while let Err(e) = ledger.dead_letter(&buffer.letters).await {
        tracing::warn!(error = %e, letters = buffer.letters.len(), "dead-letter write failed; will retry");
        if !retry.wait(shutdown).await {
            return Flushed::LeftPending { rows };
        }
    }
    // Unacknowledged entries come back as redeliveries and are checked
    // against ClickHouse then: nothing is counted twice.
    let mut retry = Retry::new(settings.max_backoff);
    while let Err(e) = ledger.ack(&buffer.ids).await {
        tracing::warn!(error = %e, "ack failed; will retry");
        if !retry.wait(shutdown).await {
            return Flushed::LeftPending { rows };
        }
    }
    metrics::counter!("analytics_sink_rows_total").increment(rows as u64);
    Flushed::Stored { rows }
}

/// Backoff between attempts of one step: doubling from 200 ms up to the
/// configured most, and a few quick attempts once shutdown has begun.
struct Retry {
    failures: u32,
    max: Duration,
}

impl Retry {
    fn new(max: Duration) -> Self {
        Retry { failures: 0, max }
    }

    /// Waits before the next attempt; false when the step is given up.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        self.failures += 1;
        if shutdown.is_cancelled() {
            if self.failures >= SHUTDOWN_ATTEMPTS {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            return true;
        }
        let pause = Duration::from_millis(100 * 2u64.pow(self.failures.min(10))).min(self.max);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        true
    }
}

/// Keeps only the entries this consumer still holds (refreshing their idle
/// time): one that sat here past `claim_idle` may have been taken over, and
/// then the other consumer writes it, not this one. When Redis cannot
/// tell, the batch is kept whole; its entries come back as redeliveries and
/// are checked against ClickHouse.
async fn keep_owned<L: Ledger>(ledger: &mut L, buffer: &mut Buffer, claim_idle: Duration) {
    // Entries are claimable only once idle for claim_idle, counted from
    // when this consumer read or claimed them: a younger batch is whole.
    if buffer
        .oldest
        .is_some_and(|read| read.elapsed() < claim_idle / 2)
    {
        return;
    }
    match ledger.keep_owned(&buffer.ids).await {
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

/// Runs `work` while refreshing the idle time of `ids` every third of
/// `claim_idle`, so no other consumer claims entries whose insert runs.
async fn with_heartbeat<L: Ledger, T>(
    work: impl Future<Output = T>,
    ledger: &mut L,
    ids: &[String],
    claim_idle: Duration,
) -> T {
    let every = (claim_idle / 3).max(Duration::from_millis(100));
    let beat = async {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = ledger.keep_owned(ids).await {
                tracing::debug!(error = %e, "cannot refresh pending entries");
            }
        }
    };
    tokio::select! {
        out = work => out,
        () = beat => unreachable!("the heartbeat loops until the work is done"),
    }
}

/// What is left to insert of a batch, per table. Profile versions and
/// aliases are idempotent (ReplacingMergeTree), events are checked.
struct Pending<'a> {
    events: &'a mut Rows<EncodedEvent>,
    profiles: &'a mut Rows<analytics_store::ProfileRow>,
    aliases: &'a mut Rows<analytics_store::AliasRow>,
    letters: &'a mut Vec<DeadLetter>,
}

/// Inserts what is left of the batch; rows are removed from the vectors
/// as soon as they are stored, so a retry never repeats them.
async fn write<W: Warehouse>(
    warehouse: &W,
    pending: Pending<'_>,
    maybe_stored: bool,
) -> Result<(), StoreError> {
    let Pending {
        events,
        profiles,
        aliases,
        letters,
    } = pending;
    if maybe_stored && !events.is_empty() {
        let existing = warehouse.existing_event_ids(&events.rows).await?;
        let before = events.len();
        events.retain(|_, r| {
            let key = r.key();
            !existing.contains(&(key.project_id.to_owned(), key.id.to_owned()))
        });
        metrics::counter!("analytics_sink_duplicates_skipped_total")
            .increment((before - events.len()) as u64);
    }
    insert_all(warehouse, events, letters).await?;
    insert_all(warehouse, profiles, letters).await?;
    insert_all(warehouse, aliases, letters).await?;
    Ok(())
}

/// Inserts `rows` as one batch. When ClickHouse refuses the batch itself
/// (not an outage), rows are tried one by one and the refused ones become
/// dead letters, as JSON records (readable in `dlq list`, and decoded like
/// any record when replayed).
async fn insert_all<W: Warehouse, T: Table>(
    warehouse: &W,
    rows: &mut Rows<T>,
    letters: &mut Vec<DeadLetter>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    match warehouse.insert(&rows.rows).await {
        Ok(()) => {
            *rows = Rows::default();
            Ok(())
        }
        // Anything but a refusal of the data itself (an outage, a server
        // still loading its tables) is retried as a whole later.
        Err(e) if !e.is_row_refusal() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, table = T::TABLE, "batch refused; inserting rows one by one");
            let taken = std::mem::take(rows);
            let mut remaining = taken.origins.into_iter().zip(taken.rows);
            while let Some((entry, row)) = remaining.next() {
                match warehouse.insert(std::slice::from_ref(&row)).await {
                    Ok(()) => {}
                    Err(e) if e.is_row_refusal() => letters.push(DeadLetter {
                        reason: format!("refused by ClickHouse: {e}"),
                        entry: Entry {
                            id: entry.to_string(),
                            payload: serde_json::to_vec(&row.record()).unwrap_or_default(),
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

#[cfg(test)]
mod tests;
