//! The consumer loop every consumer stage runs, once per partition: read
//! (own pending entries first, then new ones, and now and then entries that
//! other consumers left idle), hand the batch to the stage's [`Handler`],
//! back off and read again after a failure, and keep the stream trimmed.
//! A stage is then only what it does with a batch.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::{
    ClaimPolicy, Conn, GroupReader, MAX_BUNDLE_EVENTS, PartitionHealth, ReadBatch, RedisTarget,
    StageHealth, StreamError, backoff, claim_stale, connect, ensure_group, maintain, supervise,
};

/// How often a partition's stream and dead-letter stream are trimmed.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// How long a paused handler waits before it is asked again.
const PAUSE: Duration = Duration::from_millis(100);

/// What a consumer stage does with the batches of one partition.
pub trait Handler: Send {
    type Error: std::fmt::Display + From<StreamError> + Send;

    /// Entries to ask for in the next read or claim.
    fn read_entries(&self) -> usize;

    /// Whether to stop reading for a moment (the stage downstream is full).
    /// A pause is the stage working as meant, so it counts as progress.
    fn paused(&mut self) -> impl Future<Output = bool> + Send {
        async { false }
    }

    /// Handles one batch, which may be empty (a read that timed out).
    fn handle(
        &mut self,
        batch: ReadBatch,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called after a failed read or batch, before the loop backs off and
    /// reads the batch again from its start.
    fn failed(
        &mut self,
        error: &Self::Error,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = ()> + Send;

    /// Called once when the loop ends (shutdown): what the handler still
    /// holds is finished here.
    fn finish(&mut self, shutdown: &CancellationToken) -> impl Future<Output = ()> + Send {
        let _ = shutdown;
        async {}
    }
}

/// One partition of a group, as one consumer sees it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub key: String,
    /// The partition's dead-letter stream.
    pub dead: String,
    pub group: String,
    pub consumer: String,
    /// Idle time after which another consumer's pending entry is taken over.
    pub claim_idle: Duration,
    /// Deliveries after which an entry is dead-lettered instead.
    pub max_deliveries: u64,
    /// Longest wait of a read for new entries.
    pub block: Duration,
    /// Whether the loop starts by taking over every entry other consumers
    /// hold, however recently read: set when this consumer owns the
    /// partition ([`consume_owned`](crate::consume_owned)), whose lease
    /// says they are abandoned.
    pub takeover: bool,
}

impl Subscription {
    /// Looks for abandoned entries every half claim time (at most twice a second).
    fn claim_every(&self) -> Duration {
        (self.claim_idle / 2).max(Duration::from_millis(500))
    }
}

/// Runs `handler` over the partition of `subscription` until `shutdown`.
/// `reader` is the connection of blocking reads (a blocking read holds its
/// connection); `conn` serves claims and upkeep.
pub async fn consume<H: Handler>(
    subscription: Subscription,
    reader: Conn,
    mut conn: Conn,
    mut handler: H,
    health: &PartitionHealth,
    shutdown: CancellationToken,
) {
    let mut reader = GroupReader::new(
        reader,
        subscription.key.clone(),
        subscription.group.clone(),
        subscription.consumer.clone(),
        handler.read_entries(),
        subscription.block,
    );
    let claim_every = subscription.claim_every();
    let mut last_claim = Instant::now();
    let mut last_maintenance = Instant::now();
    let mut failures = 0u32;
    let mut takeover = subscription.takeover;
    while !shutdown.is_cancelled() {
        let read = if takeover || last_claim.elapsed() >= claim_every {
            last_claim = Instant::now();
            let policy = ClaimPolicy {
                min_idle: if takeover {
                    Duration::ZERO
                } else {
                    subscription.claim_idle
                },
                count: handler.read_entries(),
                max_deliveries: subscription.max_deliveries,
            };
            let s = &subscription;
            let claimed =
                claim_stale(&mut conn, &s.key, &s.dead, &s.group, &s.consumer, &policy).await;
            // Taken over until a claim finds nothing more.
            takeover &= !matches!(&claimed, Ok(batch) if batch.is_empty());
            claimed
        } else if handler.paused().await {
            health.progressed();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(PAUSE) => continue,
            }
        } else {
            reader.set_count(handler.read_entries());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                read = reader.read() => read,
            }
        };
        let outcome = match read {
            Ok(batch) => handler.handle(batch, &shutdown).await,
            Err(e) => Err(H::Error::from(e)),
        };
        match outcome {
            Ok(()) => {
                failures = 0;
                health.progressed();
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, stream = %subscription.key, group = %subscription.group,
                    "batch failed; reading it again");
                handler.failed(&e, &shutdown).await;
                // Whatever was read stays pending for this consumer.
                reader.rewind();
                if !backoff(failures, &shutdown).await {
                    break;
                }
            }
        }
        if last_maintenance.elapsed() >= MAINTENANCE_EVERY {
            last_maintenance = Instant::now();
            if let Err(e) = maintain(&mut conn, &subscription.key, &subscription.dead).await {
                tracing::debug!(error = %e, "stream upkeep failed");
            }
        }
    }
    handler.finish(&shutdown).await;
}

/// Runs a stage's handlers, one per partition, until `shutdown`: creates
/// each partition's group if needed, gives each loop a reading connection
/// of its own, and supervises them ([`supervise`]): a task that panics
/// stops the others (they finish their batches) and the failure is
/// returned. `conn` serves claims and upkeep for all of them.
pub async fn consume_partitions<H: Handler + 'static>(
    redis: &RedisTarget,
    mut conn: Conn,
    partitions: Vec<(u16, Subscription, H)>,
    health: &StageHealth,
    shutdown: &CancellationToken,
) -> Result<(), StreamError> {
    let stop = shutdown.child_token();
    let mut tasks = Vec::with_capacity(partitions.len());
    for (p, subscription, handler) in partitions {
        ensure_group(&mut conn, &subscription.key, &subscription.group).await?;
        // A blocking read holds its connection for the whole block.
        let reader = connect(redis, subscription.block + Duration::from_secs(5)).await?;
        let (conn, health, stop) = (conn.clone(), health.start(p), stop.clone());
        let task = async move { consume(subscription, reader, conn, handler, &health, stop).await };
        tasks.push((p, task));
    }
    supervise(tasks, &stop).await?;
    Ok(())
}

/// Items (events, records) a producer appended to one stream, and the
/// entries holding them: turns the stream's length in entries into items,
/// for caps counted in items. Shared by the tasks that append.
#[derive(Debug, Default)]
pub struct Appended {
    items: AtomicU64,
    entries: AtomicU64,
}

impl Appended {
    pub fn add(&self, items: u64, entries: u64) {
        self.items.fetch_add(items, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
    }

    /// Items on a stream of `len` entries at the ratio appended so far (one
    /// per entry before anything was).
    pub fn items_in(&self, len: u64) -> f64 {
        let entries = self.entries.load(Ordering::Relaxed);
        if entries == 0 {
            return len as f64;
        }
        len as f64 * self.items.load(Ordering::Relaxed) as f64 / entries as f64
    }
}

/// Items (events, records) per stream entry, as the last batch showed:
/// producers bundle several into one entry, and a stage that wants about N
/// items reads N / size entries.
#[derive(Debug, Clone, Copy)]
pub struct EntrySize {
    per_entry: usize,
}

impl Default for EntrySize {
    /// Until a batch shows the real size, full bundles: a first read must
    /// not turn into a batch too big to handle.
    fn default() -> Self {
        EntrySize {
            per_entry: MAX_BUNDLE_EVENTS,
        }
    }
}

impl EntrySize {
    /// Learns the size from a batch of `entries` that held `items`; a batch
    /// without items teaches nothing.
    pub fn observe(&mut self, items: usize, entries: usize) {
        if items > 0 {
            self.per_entry = items.div_ceil(entries.max(1));
        }
    }

    /// Entries that hold about `items` (at least one).
    pub fn entries_for(&self, items: usize) -> usize {
        (items / self.per_entry.max(1)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_size_starts_at_full_bundles_and_follows_the_last_batch() {
        let mut size = EntrySize::default();
        assert_eq!(size.entries_for(MAX_BUNDLE_EVENTS * 10), 10);
        assert_eq!(size.entries_for(1), 1, "never zero entries");
        size.observe(0, 7);
        assert_eq!(size.entries_for(MAX_BUNDLE_EVENTS * 10), 10, "empty batch");
        size.observe(10, 4);
        assert_eq!(size.entries_for(300), 100, "3 items per entry (rounded up)");
        size.observe(5, 0);
        assert_eq!(size.entries_for(10), 2);
    }

    #[test]
    fn appended_items_scale_the_length_in_entries() {
        let appended = Appended::default();
        assert_eq!(appended.items_in(7), 7.0, "one per entry before any append");
        appended.add(100, 4);
        appended.add(50, 1);
        assert_eq!(appended.items_in(2), 60.0);
    }

    #[test]
    fn claims_run_every_half_claim_time_but_at_most_twice_a_second() {
        let mut s = Subscription {
            key: "k".into(),
            dead: "d".into(),
            group: "g".into(),
            consumer: "c".into(),
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            block: Duration::from_secs(1),
            takeover: false,
        };
        assert_eq!(s.claim_every(), Duration::from_secs(15));
        s.claim_idle = Duration::from_millis(200);
        assert_eq!(s.claim_every(), Duration::from_millis(500));
    }
}
