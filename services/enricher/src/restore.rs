//! A new owner's first step: the partition's state read back from its
//! changelog in Redis (see [`crate::state`]), as the last commit left it.

use analytics_event::now_ms;
use analytics_streams::Conn;

use crate::Settings;
use crate::keys::Keys;
use crate::process::ProcessError;
use crate::state::{DEDUPE_BUCKETS, PartitionState, Session, decode_dedupe_keys};

/// Fields per `HSCAN` step.
const SCAN_COUNT: usize = 10_000;

/// The dedupe bucket of a wall-clock time.
pub fn bucket_of(settings: &Settings, now_ms: i64) -> (u64, u64) {
    let bucket_ms = (settings.dedupe_window_ms / 6).max(1);
    (now_ms.max(0) as u64 / bucket_ms, bucket_ms)
}

/// Reads the sessions log, the id buckets' logs of the window and the
/// content buckets' logs behind the head (and what the earlier layout's
/// hashes still hold, after an upgrade).
pub async fn restore(
    conn: &mut Conn,
    keys: &Keys,
    settings: &Settings,
) -> Result<PartitionState, ProcessError> {
    let mut state = PartitionState::new(settings);
    let now = now_ms();
    scan_hash(conn, &keys.legacy_sessions(), |field, value| {
        let key = u128::from_be_bytes(field.try_into().ok()?);
        state.sessions.restore(key, Session::decode(value)?, now);
        Some(())
    })
    .await?;
    let log = get_bytes(conn, &keys.sessions_log()).await?;
    let torn = state.sessions.replay(&log, now);
    let (current, _) = bucket_of(settings, now);
    for bucket in current.saturating_sub(DEDUPE_BUCKETS - 1)..=current {
        let log = get_bytes(conn, &keys.dedupe_log(bucket)).await?;
        let mut keys_of_bucket: Vec<u128> = decode_dedupe_keys(&log).collect();
        scan_hash(conn, &keys.legacy_dedupe_bucket(bucket), |field, _| {
            keys_of_bucket.extend(decode_dedupe_keys(field));
            Some(())
        })
        .await?;
        state.dedupe.insert(bucket, keys_of_bucket);
    }
    let head: Option<u64> = redis::cmd("GET")
        .arg(keys.content_head())
        .query_async(conn)
        .await?;
    if let Some(head) = head {
        for bucket in state.content.window(head) {
            let log = get_bytes(conn, &keys.content_log(bucket)).await?;
            state.content.insert(bucket, decode_dedupe_keys(&log));
        }
    }
    if torn > 0 {
        tracing::warn!(partition = %keys.raw, torn, "sessions log ends in a partial record");
    }
    tracing::info!(
        partition = %keys.raw,
        sessions = state.sessions.len(),
        sessions_log_bytes = state.sessions.log_bytes(),
        dedupe_keys = state.dedupe.len(),
        content_keys = state.content.len(),
        "partition state restored"
    );
    Ok(state)
}

/// A string key's value; empty when the key does not exist.
async fn get_bytes(conn: &mut Conn, key: &str) -> Result<Vec<u8>, ProcessError> {
    let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await?;
    Ok(value.unwrap_or_default())
}

/// Calls `each` with every field and value of a hash; fields it cannot
/// read (`None`) are skipped with a warning.
async fn scan_hash(
    conn: &mut Conn,
    key: &str,
    mut each: impl FnMut(&[u8], &[u8]) -> Option<()>,
) -> Result<(), ProcessError> {
    let mut cursor = "0".to_owned();
    let mut unreadable = 0u64;
    loop {
        let (next, flat): (String, Vec<Vec<u8>>) = redis::cmd("HSCAN")
            .arg(key)
            .arg(&cursor)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(conn)
            .await?;
        for pair in flat.chunks_exact(2) {
            if each(&pair[0], &pair[1]).is_none() {
                unreadable += 1;
            }
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    if unreadable > 0 {
        tracing::warn!(key, unreadable, "skipped unreadable state fields");
    }
    Ok(())
}
