//! Consumer-group reads, acknowledgements, claims and dead letters.

use std::time::Duration;

use crate::Conn;
use redis::streams::{StreamId, StreamPendingCountReply, StreamReadReply};
use redis::{RedisResult, Value};

use crate::StreamError;
use crate::payload::{self, PAYLOAD_FIELD};

/// Most documents (events, enriched records) in one stream entry: bounds
/// what a consumer holds per entry it reads.
pub const MAX_BUNDLE_EVENTS: usize = 50;
/// Most bytes in one stream entry, whichever bound comes first.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;

/// One stream entry's id and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub payload: Vec<u8>,
}

/// Entries returned by one read.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub entries: Vec<Entry>,
    /// The entries were delivered before (own pending entries or claimed
    /// ones): their output may already exist and must be checked.
    pub redelivered: bool,
    /// Ids of entries that were pending but no longer exist or have no
    /// payload; they can only be acknowledged.
    pub vanished: Vec<String>,
}

impl ReadBatch {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.vanished.is_empty()
    }
}

/// Creates `group` on `key` (and the stream) unless it exists.
pub async fn ensure_group(conn: &mut Conn, key: &str, group: &str) -> Result<(), StreamError> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => Ok(other?),
    }
}

/// Reads one partition for one consumer of a group: its own pending entries
/// first, then new ones with a blocking read. Owns its connection, since a
/// blocking read holds the connection it runs on.
pub struct GroupReader {
    conn: Conn,
    key: String,
    group: String,
    consumer: String,
    count: usize,
    block: Duration,
    /// Where the next read of own pending entries starts; `None` once they are exhausted.
    pending_cursor: Option<String>,
}

impl GroupReader {
    pub fn new(
        conn: Conn,
        key: String,
        group: String,
        consumer: String,
        count: usize,
        block: Duration,
    ) -> Self {
        GroupReader {
            conn,
            key,
            group,
            consumer,
            count,
            block,
            pending_cursor: Some("0".into()),
        }
    }

    /// Entries asked for per read from now on.
    pub fn set_count(&mut self, count: usize) {
        self.count = count.max(1);
    }

    /// Makes the next reads go over this consumer's pending entries again,
    /// for when a write of their output failed with an unknown outcome.
    pub fn rewind(&mut self) {
        self.pending_cursor = Some("0".into());
    }

    pub async fn read(&mut self) -> Result<ReadBatch, StreamError> {
        if let Some(cursor) = self.pending_cursor.clone() {
            let ids = self.xreadgroup(&cursor, None).await?;
            match ids.last() {
                Some(last) => {
                    self.pending_cursor = Some(last.id.clone());
                    return Ok(split(ids, true));
                }
                None => self.pending_cursor = None,
            }
        }
        let ids = self.xreadgroup(">", Some(self.block)).await?;
        Ok(split(ids, false))
    }

    async fn xreadgroup(
        &mut self,
        from: &str,
        block: Option<Duration>,
    ) -> Result<Vec<StreamId>, StreamError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(from);
        let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn).await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }
}

fn split(ids: Vec<StreamId>, redelivered: bool) -> ReadBatch {
    let mut batch = ReadBatch {
        redelivered,
        ..ReadBatch::default()
    };
    for mut entry in ids {
        // Moved out, not copied: payloads are most of what a read carries.
        match payload::take(&mut entry) {
            Some(payload) => batch.entries.push(Entry {
                id: entry.id,
                payload,
            }),
            None => batch.vanished.push(entry.id),
        }
    }
    batch
}

/// Acknowledges entries of `group` on `key`.
pub async fn ack(
    conn: &mut Conn,
    key: &str,
    group: &str,
    ids: &[String],
) -> Result<(), StreamError> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: i64 = redis::cmd("XACK")
        .arg(key)
        .arg(group)
        .arg(ids)
        .query_async(conn)
        .await?;
    Ok(())
}

/// An entry that is moved to the dead-letter stream, and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub entry: Entry,
    pub reason: String,
}

/// What becomes of the entries whose letters were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Letters {
    /// Moved: acknowledged on their stream in the same atomic step (both
    /// keys share a slot).
    Moved,
    /// Copied, their entries left pending: for bad documents of a bundle
    /// whose other events are still to be committed (the commit
    /// acknowledges the entry). A redelivery may copy them again.
    Copied,
}

/// Writes letters to `dead_key` with their reasons, then moves or copies
/// their entries as `letters_are` says.
pub async fn dead_letter(
    conn: &mut Conn,
    key: &str,
    dead_key: &str,
    group: &str,
    letters: &[DeadLetter],
    letters_are: Letters,
) -> Result<(), StreamError> {
    if letters.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    for letter in letters {
        pipe.cmd("XADD")
            .arg(dead_key)
            .arg("*")
            .arg("source")
            .arg(key)
            .arg("group")
            .arg(group)
            .arg("id")
            .arg(&letter.entry.id)
            .arg("reason")
            .arg(&letter.reason)
            .arg(PAYLOAD_FIELD)
            .arg(&letter.entry.payload)
            .ignore();
        if letters_are == Letters::Moved {
            pipe.cmd("XACK")
                .arg(key)
                .arg(group)
                .arg(&letter.entry.id)
                .ignore();
        }
    }
    let _: () = pipe.query_async(conn).await?;
    metrics::counter!("analytics_streams_dead_lettered_total", "stream" => key.to_owned())
        .increment(letters.len() as u64);
    Ok(())
}

/// When a pending entry counts as abandoned, and how often it may be tried.
#[derive(Debug, Clone, Copy)]
pub struct ClaimPolicy {
    /// Idle time after which another consumer's entry is taken over.
    pub min_idle: Duration,
    /// Most entries taken over at once.
    pub count: usize,
    /// Deliveries after which an entry is dead-lettered instead.
    pub max_deliveries: u64,
}

/// Takes over entries that other consumers left pending for `min_idle`
/// (they died or hang). Entries already delivered `max_deliveries` times are
/// dead-lettered instead of being handed out again.
///
/// `XPENDING` + `XCLAIM` rather than `XAUTOCLAIM`: a consumer must not claim
/// its own pending entries, which it may be holding in a batch that waits
/// for ClickHouse.
pub async fn claim_stale(
    conn: &mut Conn,
    key: &str,
    dead_key: &str,
    group: &str,
    consumer: &str,
    policy: &ClaimPolicy,
) -> Result<ReadBatch, StreamError> {
    let ClaimPolicy {
        min_idle,
        count,
        max_deliveries,
    } = *policy;
    let min_idle_ms = min_idle.as_millis() as u64;
    let pending: StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .arg("IDLE")
        .arg(min_idle_ms)
        .arg("-")
        .arg("+")
        .arg(count)
        .query_async(conn)
        .await?;
    let stale: Vec<_> = pending
        .ids
        .into_iter()
        .filter(|p| p.consumer != consumer)
        .collect();
    if stale.is_empty() {
        return Ok(ReadBatch {
            redelivered: true,
            ..ReadBatch::default()
        });
    }
    let ids: Vec<&str> = stale.iter().map(|p| p.id.as_str()).collect();
    let claimed: Vec<StreamId> = redis::cmd("XCLAIM")
        .arg(key)
        .arg(group)
        .arg(consumer)
        .arg(min_idle_ms)
        .arg(&ids)
        .query_async::<redis::streams::StreamClaimReply>(conn)
        .await?
        .ids;
    metrics::counter!("analytics_streams_claimed_total", "stream" => key.to_owned())
        .increment(claimed.len() as u64);
    let mut batch = split(claimed, true);
    let exhausted = |id: &str| {
        stale
            .iter()
            .any(|p| p.id == id && p.times_delivered as u64 >= max_deliveries)
    };
    let (dead, live): (Vec<Entry>, Vec<Entry>) =
        batch.entries.drain(..).partition(|e| exhausted(&e.id));
    batch.entries = live;
    let letters: Vec<DeadLetter> = dead
        .into_iter()
        .map(|entry| DeadLetter {
            entry,
            reason: format!("not processed after {max_deliveries} deliveries"),
        })
        .collect();
    dead_letter(conn, key, dead_key, group, &letters, Letters::Moved).await?;
    Ok(batch)
}

/// One entry of a dead-letter stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadEntry {
    /// Id in the dead-letter stream.
    pub id: String,
    /// Stream and group the entry failed in, and its id there.
    pub source: String,
    pub group: String,
    pub source_id: String,
    pub reason: String,
    /// The original payload (lossy UTF-8).
    pub payload: String,
}

fn field(map: &std::collections::HashMap<String, Value>, key: &str) -> String {
    match map.get(key) {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

/// The oldest `count` entries of a dead-letter stream.
pub async fn dead_entries(
    conn: &mut Conn,
    dead_key: &str,
    count: usize,
) -> Result<Vec<DeadEntry>, StreamError> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(dead_key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(reply
        .ids
        .into_iter()
        .map(|e| DeadEntry {
            source: field(&e.map, "source"),
            group: field(&e.map, "group"),
            source_id: field(&e.map, "id"),
            reason: field(&e.map, "reason"),
            payload: field(&e.map, PAYLOAD_FIELD),
            id: e.id,
        })
        .collect())
}

/// Puts a dead entry's payload back on the stream it failed in (as a new
/// entry, so every group sees it again) and removes it from the dead
/// letters, atomically. The payload is copied byte for byte.
pub async fn replay_dead(conn: &mut Conn, dead_key: &str, id: &str) -> Result<bool, StreamError> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(dead_key)
        .arg(id)
        .arg(id)
        .query_async(conn)
        .await?;
    let Some(entry) = reply.ids.into_iter().next() else {
        return Ok(false);
    };
    let source = field(&entry.map, "source");
    let payload = match entry.map.get(PAYLOAD_FIELD) {
        Some(Value::BulkString(b)) => b.clone(),
        _ => return Err(StreamError::MissingPayload { id: id.to_owned() }),
    };
    let _: () = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(&source)
        .arg("*")
        .arg(PAYLOAD_FIELD)
        .arg(payload)
        .ignore()
        .cmd("XDEL")
        .arg(dead_key)
        .arg(id)
        .ignore()
        .query_async(conn)
        .await?;
    Ok(true)
}

/// Deletes a dead entry for good.
pub async fn drop_dead(conn: &mut Conn, dead_key: &str, id: &str) -> Result<bool, StreamError> {
    let removed: u64 = redis::cmd("XDEL")
        .arg(dead_key)
        .arg(id)
        .query_async(conn)
        .await?;
    Ok(removed > 0)
}
