//! The Redis Streams log that connects the stages, used like Kafka topics.
//!
//! Each topic (`raw`, `enriched`) is split into partitions, one stream key
//! each; keys carry a hash tag (`{p3}`) so that partition N of every topic
//! lives in the same Redis Cluster slot and one Lua script can move an
//! entry from `raw` partition N to `enriched` partition N. An entry holds its
//! payload LZ4-compressed in its `z` field (or plain in `e`, see
//! [`payload`]): on `raw`, a bundle of events (see
//! `analytics_event::raw_documents`); on `enriched`, a bundle of records
//! (binary frames, see `analytics_store::decode_bundle`).
//!
//! Consumer stages run one loop per partition ([`consume`]) and supply a
//! [`Handler`] of batches. They read through consumer groups
//! ([`GroupReader`]): their own
//! pending entries first (left over from a crash: redeliveries), then new
//! ones. Entries are acknowledged only after their output is durable.
//! Entries of dead consumers are claimed ([`claim_stale`]); an entry
//! delivered too often goes to the partition's dead-letter stream with a
//! reason and stays replayable. Streams are trimmed only behind what every
//! group has acknowledged ([`trim_acknowledged`]).

mod conn;
mod consume;
mod error;
mod group;
mod health;
mod keys;
mod maintenance;
mod ownership;
pub mod payload;
mod supervise;

pub use conn::{
    Conn, RedisTarget, SlotCommands, connect, connect_on_first_use, query_by_slot, slot_groups,
};
pub use consume::{Appended, EntrySize, Handler, Subscription, consume, consume_partitions};
pub use error::StreamError;
pub use group::{
    ClaimPolicy, DeadEntry, DeadLetter, Entry, GroupReader, Letters, MAX_BUNDLE_BYTES,
    MAX_BUNDLE_EVENTS, ReadBatch, ack, claim_stale, dead_entries, dead_letter, drop_dead,
    ensure_group, replay_dead,
};
pub use health::{PartitionHealth, StageHealth};
pub use keys::{Topic, partition_for, stream_key};
pub use maintenance::{GroupStats, StreamStats, maintain, stream_stats, trim_acknowledged};
pub use ownership::{Lease, Ownership, assignee, consume_owned};
pub use payload::{COMPRESSED_FIELD, PAYLOAD_FIELD};
pub use supervise::{TaskFailure, supervise};

use std::time::Duration;

/// Waits after the `failures`-th failure in a row: 200 ms doubling up to
/// 6.4 s. False when `shutdown` came first.
pub async fn backoff(failures: u32, shutdown: &tokio_util::sync::CancellationToken) -> bool {
    let pause = Duration::from_millis(100 * 2u64.pow(failures.min(5)));
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(pause) => true,
    }
}

/// Whether Redis answers: what `/readyz` reports for a stage.
pub async fn ping(conn: &mut Conn) -> Result<(), StreamError> {
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(())
}

/// Entries per keep-alive script call, so one call stays short.
const KEEP_ALIVE_CHUNK: usize = 500;

/// What [`keep_owned`] runs, once per chunk of ids.
const KEEP_OWNED: &str = include_str!("keep_owned.lua");

/// Keeps this consumer's pending entries among `ids` from being claimed by
/// others (while it waits for ClickHouse, or inserts a large batch), and
/// returns the ids it still holds. Entries a faster consumer took over are
/// not taken back: the caller drops them from its batch, so two consumers
/// never write the same entries.
pub async fn keep_owned(
    conn: &mut Conn,
    key: &str,
    group: &str,
    consumer: &str,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, StreamError> {
    let mut owned = std::collections::HashSet::with_capacity(ids.len());
    for chunk in ids.chunks(KEEP_ALIVE_CHUNK) {
        // Plain EVAL: Redis caches the compiled script by its hash, and
        // this runs once per flush, not per event.
        let held: Vec<String> = redis::cmd("EVAL")
            .arg(KEEP_OWNED)
            .arg(1)
            .arg(key)
            .arg(group)
            .arg(consumer)
            .arg(chunk)
            .query_async(conn)
            .await?;
        owned.extend(held);
    }
    Ok(owned)
}
