//! Lua scripts of the enricher: the profile operation (profiles are shared
//! by every partition, so several enricher processes may change one) and
//! the commit of a batch (output, changelog and acknowledgement, for the
//! holder of the partition's lease). Each script touches keys of one hash
//! tag only (one cluster slot); on a Redis Cluster the keys of one call must
//! share a slot, and the callers group them per slot.
//!
//! The scripts live in `scripts/*.lua`; each has one type here that builds
//! its call, so the KEYS/ARGV layout a script reads is written once.

use analytics_store::{Frame, encode_frame};
use analytics_streams::{Conn, Lease};

use crate::state::SessionLog;

const PROFILE: &str = include_str!("scripts/profile.lua");
const COMMIT: &str = include_str!("scripts/commit.lua");

/// The SHA1 digests of the loaded scripts.
#[derive(Debug, Clone, Default)]
pub struct Scripts {
    pub profile: String,
    pub commit: String,
}

impl Scripts {
    /// Loads every script (again, after a Redis restart forgot them).
    pub async fn load(conn: &mut Conn) -> Result<Scripts, redis::RedisError> {
        let load = |code: &'static str| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(code)
                    .query_async::<String>(&mut conn)
                    .await
            }
        };
        Ok(Scripts {
            profile: load(PROFILE).await?,
            commit: load(COMMIT).await?,
        })
    }
}

/// What a profile event changes.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileChange {
    /// Fields set to values (identify).
    Set(Vec<(String, String)>),
    /// A numeric field moved by an amount (increment, decrement).
    Add { field: String, amount: f64 },
}

/// One call of `profile.lua`: a change applied once per event id.
pub struct ProfileCall<'a> {
    pub hash: &'a str,
    /// The set of event ids already applied to the profile.
    pub applied: &'a str,
    pub event_id: &'a str,
    pub at_ms: i64,
    pub change: &'a ProfileChange,
}

impl ProfileCall<'_> {
    pub fn command(&self, sha: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(2).arg(self.hash).arg(self.applied);
        cmd.arg(self.event_id);
        match self.change {
            ProfileChange::Set(fields) => {
                cmd.arg("set").arg(self.at_ms);
                for (field, value) in fields {
                    cmd.arg(field).arg(value);
                }
            }
            ProfileChange::Add { field, amount } => {
                cmd.arg("add")
                    .arg(self.at_ms)
                    .arg(field)
                    .arg(amount.to_string());
            }
        }
        cmd
    }
}

/// One call of `commit.lua`: a batch of one raw partition, committed with
/// its state's changelog, for the holder of the partition's lease.
pub struct CommitCall<'a> {
    pub raw: &'a str,
    pub enriched: &'a str,
    pub lease: &'a Lease,
    /// The current id bucket's log, the partition's sessions log and the
    /// sessions hash of the earlier layout.
    pub bucket: &'a str,
    pub sessions: &'a str,
    pub legacy_sessions: &'a str,
    pub group: &'a str,
    pub bucket_ttl_ms: u64,
    pub sessions_ttl_ms: u64,
    /// Enriched entries, each a bundle of record frames, compressed
    /// (`analytics_streams::payload`).
    pub bundles: &'a [Vec<u8>],
    /// Keys of the stored events with a client id, as their bucket's log
    /// holds them.
    pub dedupe_keys: &'a [u8],
    pub sessions_log: &'a SessionLog,
    pub content: ContentLogs<'a>,
    /// Raw entries acknowledged.
    pub ids: &'a [&'a str],
}

/// The changelog of the keys of events without a client id.
pub struct ContentLogs<'a> {
    /// The key naming the newest receive-time bucket, and that bucket.
    pub head: &'a str,
    pub newest: u64,
    pub ttl_ms: u64,
    /// Bucket logs and the keys appended to each.
    pub appended: &'a [(String, Vec<u8>)],
    /// Bucket logs that left the window.
    pub deleted: &'a [String],
}

impl CommitCall<'_> {
    pub fn command(&self, sha: &str) -> redis::Cmd {
        let mode = match self.sessions_log {
            SessionLog::Append(_) => "append",
            SessionLog::Snapshot(_) => "snapshot",
        };
        let content = &self.content;
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha)
            .arg(7 + content.appended.len() + content.deleted.len())
            .arg(self.raw)
            .arg(self.enriched)
            .arg(&self.lease.key)
            .arg(self.bucket)
            .arg(self.sessions)
            .arg(self.legacy_sessions)
            .arg(content.head);
        for (key, _) in content.appended {
            cmd.arg(key);
        }
        cmd.arg(content.deleted)
            .arg(self.group)
            .arg(&self.lease.token)
            .arg(self.bucket_ttl_ms)
            .arg(self.sessions_ttl_ms)
            .arg(mode)
            .arg(self.dedupe_keys)
            .arg(self.sessions_log.bytes())
            .arg(content.ttl_ms)
            .arg(content.newest)
            .arg(content.appended.len())
            .arg(content.deleted.len())
            .arg(self.bundles.len());
        for bundle in self.bundles {
            cmd.arg(bundle);
        }
        for (_, keys) in content.appended {
            cmd.arg(keys);
        }
        cmd.arg(self.ids);
        cmd
    }
}

/// Packs records into enriched entries of at most `max_records` records
/// and, unless one record is larger, `max_bytes` bytes.
pub fn bundle_records<'r>(
    records: impl IntoIterator<Item = &'r Frame>,
    max_records: usize,
    max_bytes: usize,
) -> (Vec<Vec<u8>>, u64) {
    // Room for a bundle of frames like one of `len` bytes. Reserving the
    // byte limit instead (256 KiB, tens of times a typical bundle) had the
    // allocator fault in and zero fresh pages for every bundle (5% of the
    // pipeline's CPU in a profile).
    let room = |len: usize| len.saturating_mul(max_records).min(max_bytes);
    let mut bundles: Vec<Vec<u8>> = Vec::new();
    let (mut in_bundle, mut total) = (0, 0);
    for record in records {
        // Written straight into the open bundle, and moved to a new one
        // only when it does not fit there: once a bundle, not once a record.
        let mut open = bundles.pop().unwrap_or_default();
        let start = open.len();
        encode_frame(record, &mut open);
        let len = open.len() - start;
        if start == 0 {
            open.reserve(room(len).saturating_sub(len));
        } else if in_bundle >= max_records || open.len() > max_bytes {
            let mut next = Vec::with_capacity(room(len));
            next.extend_from_slice(&open[start..]);
            open.truncate(start);
            bundles.push(open);
            open = next;
            in_bundle = 0;
        }
        bundles.push(open);
        in_bundle += 1;
        total += 1;
    }
    (bundles, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                other => panic!("unexpected argument {other:?}"),
            })
            .collect()
    }

    #[test]
    fn profile_changes_follow_the_event_id_op_and_time() {
        let add = ProfileChange::Add {
            field: "p:credits".into(),
            amount: -2.5,
        };
        let call = ProfileCall {
            hash: "h",
            applied: "a",
            event_id: "e",
            at_ms: 7,
            change: &add,
        };
        let expected = [
            "EVALSHA",
            "sha",
            "2",
            "h",
            "a",
            "e",
            "add",
            "7",
            "p:credits",
            "-2.5",
        ];
        assert_eq!(args(&call.command("sha")), expected);
        let set = ProfileChange::Set(vec![("fn".into(), "Ada".into())]);
        let call = ProfileCall {
            change: &set,
            ..call
        };
        let expected = [
            "EVALSHA", "sha", "2", "h", "a", "e", "set", "7", "fn", "Ada",
        ];
        assert_eq!(args(&call.command("sha")), expected);
    }

    #[test]
    fn commit_arguments_follow_the_scripts_layout() {
        let lease = Lease {
            key: "lease".into(),
            token: "me".into(),
        };
        let bundles = [b"frames".to_vec()];
        let log = SessionLog::Snapshot(b"sessions".to_vec());
        let appended = [("c7".to_owned(), b"ck".to_vec())];
        let deleted = ["c4".to_owned()];
        let call = CommitCall {
            raw: "raw",
            enriched: "enr",
            lease: &lease,
            bucket: "b0",
            sessions: "s",
            legacy_sessions: "old",
            group: "g",
            bucket_ttl_ms: 100,
            sessions_ttl_ms: 200,
            bundles: &bundles,
            dedupe_keys: b"keys",
            sessions_log: &log,
            content: ContentLogs {
                head: "head",
                newest: 7,
                ttl_ms: 300,
                appended: &appended,
                deleted: &deleted,
            },
            ids: &["1-0", "2-0"],
        };
        let expected = [
            "EVALSHA", "sha", "9", "raw", "enr", "lease", "b0", "s", "old", "head", "c7", "c4",
            "g", "me", "100", "200", "snapshot", "keys", "sessions", "300", "7", "1", "1", "1",
            "frames", "ck", "1-0", "2-0",
        ];
        assert_eq!(args(&call.command("sha")), expected);
        let appended_log = SessionLog::Append(Vec::new());
        let call = CommitCall {
            sessions_log: &appended_log,
            bundles: &[],
            content: ContentLogs {
                appended: &[],
                deleted: &[],
                ..call.content
            },
            ..call
        };
        let args = args(&call.command("sha"));
        assert_eq!(args[2], "7");
        assert_eq!((&args[14][..], &args[16][..]), ("append", ""));
        assert_eq!(&args[19..22], ["0", "0", "0"]);
        assert_eq!(&args[22..], ["1-0", "2-0"]);
    }

    #[test]
    fn records_are_bundled_by_count_and_size() {
        let records: Vec<Frame> = (0..5)
            .map(|_| Frame::Event((&analytics_store::EventRow::default()).into()))
            .collect();
        let mut frame = Vec::new();
        encode_frame(&records[0], &mut frame);
        let (bundles, total) = bundle_records(&records, 2, 1 << 20);
        assert_eq!(total, 5);
        assert_eq!(
            bundles.iter().map(Vec::len).collect::<Vec<_>>(),
            [2 * frame.len(), 2 * frame.len(), frame.len()]
        );
        let (bundles, _) = bundle_records(&records, 100, frame.len() * 3 - 1);
        assert_eq!(bundles.len(), 3, "two frames per bundle by size");
        let (bundles, _) = bundle_records(&records, 100, 1);
        assert_eq!(bundles.len(), 5, "a frame larger than the limit goes alone");
        assert!(bundle_records(&[], 2, 10).0.is_empty());
    }
}
