//! The Redis Streams log that connects the stages, used like Kafka topics.
//!
//! Each topic (`raw`, `enriched`) is split into partitions, one stream key
//! each; keys carry a hash tag (`{p3}`) so that partition N of every topic
//! lives in the same Redis Cluster slot and one `MULTI` can move an entry
//! from `raw` partition N to `enriched` partition N. An entry holds one
//! payload in its `e` field (JSON).
//!
//! Consumers read through consumer groups ([`GroupReader`]): their own
//! pending entries first (left over from a crash: redeliveries), then new
//! ones. Entries are acknowledged only after their output is durable.
//! Entries of dead consumers are claimed ([`claim_stale`]); an entry
//! delivered too often goes to the partition's dead-letter stream with a
//! reason and stays replayable. Streams are trimmed only behind what every
//! group has acknowledged ([`trim_acknowledged`]).

mod conn;
mod error;
mod group;
mod keys;
mod maintenance;

pub use conn::{Conn, RedisTarget, SlotCommands, connect, query_by_slot, slot_groups};
pub use error::StreamError;
pub use group::{
    ClaimPolicy, DeadEntry, DeadLetter, Entry, GroupReader, PAYLOAD_FIELD, ReadBatch, ack,
    claim_stale, dead_entries, dead_letter, drop_dead, ensure_group, replay_dead,
};
pub use keys::{Topic, partition_for, stream_key};
pub use maintenance::{GroupStats, StreamStats, maintain, stream_stats, trim_acknowledged};

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

/// Resets the idle time of entries this consumer holds, so that other
/// consumers do not claim them while it waits (e.g. for ClickHouse).
pub async fn touch(
    conn: &mut Conn,
    key: &str,
    group: &str,
    consumer: &str,
    ids: &[String],
) -> Result<(), StreamError> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(key)
        .arg(group)
        .arg(consumer)
        .arg(0)
        .arg(ids)
        .arg("JUSTID")
        .query_async(conn)
        .await?;
    Ok(())
}
