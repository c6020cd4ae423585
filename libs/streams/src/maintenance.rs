//! Stream lengths, pending counts and trimming behind acknowledged entries.

use crate::Conn;
use redis::streams::StreamInfoGroupsReply;

use crate::StreamError;

/// Length of a stream and the state of each of its groups.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub length: u64,
    pub groups: Vec<GroupStats>,
}

#[derive(Debug, Clone, Default)]
pub struct GroupStats {
    pub name: String,
    /// Delivered and not yet acknowledged.
    pub pending: u64,
    /// Not yet delivered; `None` when Redis cannot tell (after XDEL or
    /// trimming past undelivered entries).
    pub lag: Option<u64>,
}

/// Periodic upkeep of a stream its consumers run: publishes its length,
/// each group's pending count and lag, and the length of the partition's
/// dead-letter stream `dead` as gauges, then trims what every group
/// acknowledged.
pub async fn maintain(conn: &mut Conn, key: &str, dead: &str) -> Result<(), StreamError> {
    let stats = stream_stats(conn, key).await?;
    metrics::gauge!("analytics_streams_length_entries", "stream" => key.to_owned())
        .set(stats.length as f64);
    for group in &stats.groups {
        metrics::gauge!("analytics_streams_pending_entries",
            "stream" => key.to_owned(), "group" => group.name.clone())
        .set(group.pending as f64);
        if let Some(lag) = group.lag {
            metrics::gauge!("analytics_streams_lag_entries",
                "stream" => key.to_owned(), "group" => group.name.clone())
            .set(lag as f64);
        }
    }
    let dead_letters: u64 = redis::cmd("XLEN").arg(dead).query_async(conn).await?;
    metrics::gauge!("analytics_streams_dead_letters_entries", "stream" => dead.to_owned())
        .set(dead_letters as f64);
    let removed = trim_acknowledged(conn, key).await?;
    metrics::counter!("analytics_streams_trimmed_total", "stream" => key.to_owned())
        .increment(removed);
    Ok(())
}

pub async fn stream_stats(conn: &mut Conn, key: &str) -> Result<StreamStats, StreamError> {
    let (length, info): (u64, Option<StreamInfoGroupsReply>) = redis::pipe()
        .cmd("XLEN")
        .arg(key)
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await
        .or_else(|e: redis::RedisError| {
            // XINFO on a missing key is an error; the stream just does not exist yet.
            if e.code() == Some("ERR") {
                Ok((0, None))
            } else {
                Err(e)
            }
        })?;
    Ok(StreamStats {
        length,
        groups: info
            .map(|i| {
                i.groups
                    .into_iter()
                    .map(|g| GroupStats {
                        name: g.name,
                        pending: g.pending as u64,
                        lag: g.lag.map(|l| l as u64),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Removes the entries that every group of `key` has acknowledged: those
/// older than both the oldest pending entry and the last delivered one.
/// Returns how many entries were removed. A stream without groups is left alone.
pub async fn trim_acknowledged(conn: &mut Conn, key: &str) -> Result<u64, StreamError> {
    let info: StreamInfoGroupsReply = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await
    {
        Ok(info) => info,
        Err(e) if e.code() == Some("ERR") => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut keep_from: Option<StreamId> = None;
    for group in &info.groups {
        let mut oldest = StreamId::parse(&group.last_delivered_id);
        if group.pending > 0 {
            let summary: (u64, Option<String>, Option<String>, redis::Value) =
                redis::cmd("XPENDING")
                    .arg(key)
                    .arg(&group.name)
                    .query_async(conn)
                    .await?;
            if let Some(first) = summary.1.as_deref().and_then(StreamId::parse) {
                oldest = Some(oldest.map_or(first, |o| o.min(first)));
            }
        }
        let Some(oldest) = oldest else { return Ok(0) };
        keep_from = Some(keep_from.map_or(oldest, |k| k.min(oldest)));
    }
    let Some(keep_from) = keep_from.filter(|k| *k > StreamId(0, 0)) else {
        return Ok(0);
    };
    let removed: u64 = redis::cmd("XTRIM")
        .arg(key)
        .arg("MINID")
        .arg("~")
        .arg(format!("{}-{}", keep_from.0, keep_from.1))
        .query_async(conn)
        .await?;
    Ok(removed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId(ms.parse().ok()?, seq.parse().ok()?))
    }
}
