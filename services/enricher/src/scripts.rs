//! Lua scripts that keep the enricher's shared state consistent when
//! several enricher processes work on the same devices and profiles. Each
//! script touches keys of one hash tag only (one cluster slot); on a Redis
//! Cluster the keys of one call must share a slot, and the callers group
//! them per slot.
//!
//! The scripts live in `scripts/*.lua`; each has one type here that builds
//! its call, so the KEYS/ARGV layout a script reads is written once.

use analytics_store::{Record, encode_record};
use analytics_streams::Conn;

const SESSIONS: &str = include_str!("scripts/sessions.lua");
const PROFILE: &str = include_str!("scripts/profile.lua");
const COMMIT: &str = include_str!("scripts/commit.lua");

/// The SHA1 digests of the loaded scripts.
#[derive(Debug, Clone, Default)]
pub struct Scripts {
    pub sessions: String,
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
            sessions: load(SESSIONS).await?,
            profile: load(PROFILE).await?,
            commit: load(COMMIT).await?,
        })
    }
}

/// An event that may open a session: its device's session hash, its time
/// and the id a new session would get.
pub struct SessionEvent<'a> {
    pub key: &'a str,
    pub at_ms: i64,
    pub candidate: String,
}

/// One call of `sessions.lua`: the sessions of a batch of events, in order.
pub struct SessionsCall<'a> {
    pub timeout_ms: u64,
    pub grace_ms: u64,
    /// Lifetime of a session hash after its last event.
    pub ttl_ms: u64,
    pub events: Vec<SessionEvent<'a>>,
}

impl SessionsCall<'_> {
    pub fn command(&self, sha: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(self.events.len());
        for event in &self.events {
            cmd.arg(event.key);
        }
        cmd.arg(self.timeout_ms).arg(self.grace_ms).arg(self.ttl_ms);
        for event in &self.events {
            cmd.arg(event.at_ms).arg(&event.candidate);
        }
        cmd
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

/// An entry of a commit: its id, its dedupe keys and its records.
pub struct CommitEntry<'a> {
    pub entry_id: &'a str,
    /// `""` for an entry that is only acknowledged.
    pub dedupe_key: &'a str,
    /// The key of the same event in the previous second, or `""`.
    pub previous_key: &'a str,
    pub records: &'a [Record],
}

/// One call of `commit.lua`: a batch of one raw partition, committed.
pub struct CommitCall<'a> {
    pub raw: &'a str,
    pub enriched: &'a str,
    /// The current dedupe bucket first, then older ones inside the window.
    pub buckets: &'a [String],
    pub group: &'a str,
    pub bucket_ttl_ms: u64,
    pub max_bundle_records: usize,
    pub max_bundle_bytes: usize,
    pub entries: Vec<CommitEntry<'a>>,
}

impl CommitCall<'_> {
    pub fn command(&self, sha: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha)
            .arg(2 + self.buckets.len())
            .arg(self.raw)
            .arg(self.enriched)
            .arg(self.buckets)
            .arg(self.group)
            .arg(self.bucket_ttl_ms)
            .arg(self.max_bundle_records)
            .arg(self.max_bundle_bytes);
        let mut frame = Vec::new();
        for entry in &self.entries {
            cmd.arg(entry.entry_id)
                .arg(entry.dedupe_key)
                .arg(entry.previous_key)
                .arg(entry.records.len());
            for record in entry.records {
                frame.clear();
                encode_record(record, &mut frame);
                cmd.arg(&frame);
            }
        }
        cmd
    }
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
    fn sessions_keys_precede_the_limits_and_the_events() {
        let call = SessionsCall {
            timeout_ms: 10,
            grace_ms: 2,
            ttl_ms: 70,
            events: vec![
                SessionEvent {
                    key: "k1",
                    at_ms: 5,
                    candidate: "s1".into(),
                },
                SessionEvent {
                    key: "k2",
                    at_ms: 6,
                    candidate: "s2".into(),
                },
            ],
        };
        let expected = [
            "EVALSHA", "sha", "2", "k1", "k2", "10", "2", "70", "5", "s1", "6", "s2",
        ];
        assert_eq!(args(&call.command("sha")), expected);
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
    fn commit_entries_carry_their_record_count() {
        let buckets = ["b0".to_owned(), "b1".to_owned()];
        let records = [Record::Events(analytics_store::EventRow::default())];
        let mut frame = Vec::new();
        encode_record(&records[0], &mut frame);
        let call = CommitCall {
            raw: "raw",
            enriched: "enr",
            buckets: &buckets,
            group: "g",
            bucket_ttl_ms: 100,
            max_bundle_records: 50,
            max_bundle_bytes: 1000,
            entries: vec![
                CommitEntry {
                    entry_id: "1-0",
                    dedupe_key: "d",
                    previous_key: "",
                    records: &records,
                },
                CommitEntry {
                    entry_id: "2-0",
                    dedupe_key: "",
                    previous_key: "",
                    records: &[],
                },
            ],
        };
        let frame = String::from_utf8_lossy(&frame).into_owned();
        let expected = [
            "EVALSHA", "sha", "4", "raw", "enr", "b0", "b1", "g", "100", "50", "1000", "1-0", "d",
            "", "1", &frame, "2-0", "", "", "0",
        ];
        assert_eq!(args(&call.command("sha")), expected);
    }
}
