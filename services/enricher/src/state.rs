//! The state an enricher keeps for the raw partition it owns: open
//! sessions, the dedupe window, and which devices were identified as which
//! profile. Only the partition's owner reads or changes it (a device's
//! events all land on one partition), so it lives in memory and costs no
//! round trip per event.
//!
//! Durability is a changelog in Redis, appended by the same atomic commit
//! as the batch's output and acknowledgement, as bytes Redis only copies:
//! the sessions log (`<prefix>:sessions-log:{pN}`, a 56-byte record per
//! changed session, the last record of a device wins) is compacted by
//! writing a snapshot of the open sessions in place of the log once it
//! holds twice their size plus [`SNAPSHOT_SLACK`]; each dedupe bucket
//! (`<prefix>:dedupe-log:{pN}:<bucket>`) is the 12-byte keys committed in
//! it, and expires with the window. A new owner restores from them exactly
//! the state that matches what was acknowledged (expired sessions are
//! dropped as they are read, so the log needs no tombstones). The device →
//! profile links stay in shared keys (they live for 30 days) and are cached
//! here, read through on a miss: the owner is their only writer, so the
//! cache is never stale while the lease holds.
//!
//! Bounds: sessions hold the devices active within the session lifetime
//! (timeout + grace + one minute), about 90 bytes each; the dedupe window
//! holds every event of the last `dedupe_window_ms`, about 30 bytes each;
//! the profile cache at most [`PROFILE_CACHE`] devices, about 120 bytes each.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::Xxh3;

use crate::Settings;

/// Devices whose profile link is cached, per partition, before the cache
/// starts over.
pub const PROFILE_CACHE: usize = 100_000;
/// How long a cached profile link is trusted before Redis is asked again
/// (the shared key expires after 30 days of no identify).
const PROFILE_CACHE_MS: i64 = 24 * 3600 * 1000;
/// Dedupe buckets kept: the window is six buckets, plus the current one.
pub const DEDUPE_BUCKETS: u64 = 7;
/// Receive-time buckets of the content keys (events without a client id).
pub const CONTENT_BUCKET_MS: i64 = 2_000;
/// Content buckets kept: 4 to 6 s of receive time behind the newest event
/// processed. A content key names the second an event was received, and
/// only a copy received in the same or the next second matches it, so it is
/// needed only until the partition's events have moved past that second;
/// the rest is room for edges whose clocks differ. The window is counted in
/// receive time, not in the owner's time: behind a backlog it holds the
/// events the edges took in during those seconds, whatever the owner's pace.
pub const CONTENT_BUCKETS: u64 = 3;
/// Bytes of one dedupe key in its bucket's log.
pub const DEDUPE_KEY_BYTES: usize = 12;
/// Bytes of one record of the sessions log: the device key, the session.
pub const SESSION_RECORD: usize = 16 + SESSION_BYTES;
/// How far the sessions log may outgrow twice its live records before the
/// next commit writes a snapshot instead of appending.
pub const SNAPSHOT_SLACK: usize = 1 << 20;

/// A device of a project, as a 128-bit key.
pub fn device_key(project: &str, device: &str) -> u128 {
    let mut h = Xxh3::new();
    h.update(project.as_bytes());
    h.update(&[0]);
    h.update(device.as_bytes());
    h.digest128()
}

/// A device's open session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub id: u128,
    /// Event times (ms) of its first and last event.
    pub start: i64,
    pub last: i64,
    /// Wall-clock time (ms) of its last change: it expires a session
    /// lifetime later.
    pub touched: i64,
}

const SESSION_BYTES: usize = 40;

impl Session {
    pub fn encode(&self) -> [u8; SESSION_BYTES] {
        let mut out = [0; SESSION_BYTES];
        out[..16].copy_from_slice(&self.id.to_be_bytes());
        out[16..24].copy_from_slice(&self.start.to_be_bytes());
        out[24..32].copy_from_slice(&self.last.to_be_bytes());
        out[32..].copy_from_slice(&self.touched.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Session> {
        let bytes: &[u8; SESSION_BYTES] = bytes.try_into().ok()?;
        let int = |from: usize| i64::from_be_bytes(bytes[from..from + 8].try_into().unwrap());
        Some(Session {
            id: u128::from_be_bytes(bytes[..16].try_into().unwrap()),
            start: int(16),
            last: int(24),
            touched: int(32),
        })
    }
}

/// The open sessions of a partition's devices, what changed since the
/// last commit, and how large their log in Redis is.
#[derive(Debug)]
pub struct Sessions {
    open: HashMap<u128, Session>,
    timeout: i64,
    grace: i64,
    lifetime: i64,
    changed: HashSet<u128>,
    /// Bytes of the log in Redis as of the last commit.
    log_bytes: usize,
    /// The next commit writes a snapshot, whatever the log's size (the
    /// state was restored from another layout).
    snapshot_due: bool,
}

/// What a commit writes to the sessions log.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionLog {
    /// Records to append.
    Append(Vec<u8>),
    /// Every open session: the log is replaced by them.
    Snapshot(Vec<u8>),
}

impl SessionLog {
    pub fn bytes(&self) -> &[u8] {
        match self {
            SessionLog::Append(bytes) | SessionLog::Snapshot(bytes) => bytes,
        }
    }
}

impl Sessions {
    pub fn new(settings: &Settings) -> Sessions {
        Sessions {
            open: HashMap::new(),
            timeout: settings.session_timeout_ms as i64,
            grace: settings.session_grace_ms as i64,
            lifetime: session_lifetime_ms(settings) as i64,
            changed: HashSet::new(),
            log_bytes: 0,
            snapshot_due: false,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Takes a session of the earlier layout (a hash field per device),
    /// dropped when it has expired; the next commit writes a snapshot.
    pub fn restore(&mut self, key: u128, session: Session, now: i64) {
        if now - session.touched <= self.lifetime {
            self.open.insert(key, session);
        }
        self.snapshot_due = true;
    }

    /// Replays the sessions log: each record replaces the device's session
    /// before it; sessions that have expired by `now` are dropped. Returns
    /// the number of unreadable bytes at the end (a torn record, which an
    /// atomic commit never leaves).
    pub fn replay(&mut self, log: &[u8], now: i64) -> usize {
        let records = log.chunks_exact(SESSION_RECORD);
        let torn = records.remainder().len();
        for record in records {
            let (key, session) = record.split_at(16);
            if let (Ok(key), Some(session)) = (key.try_into(), Session::decode(session)) {
                self.open.insert(u128::from_be_bytes(key), session);
            }
        }
        let lifetime = self.lifetime;
        self.open.retain(|_, s| now - s.touched <= lifetime);
        self.log_bytes = log.len();
        torn
    }

    /// Whether `key` has a session that has not expired.
    pub fn is_open(&self, key: u128, now: i64) -> bool {
        self.open
            .get(&key)
            .is_some_and(|s| now - s.touched <= self.lifetime)
    }

    /// The session of an event at `at` (ms) of device `key`: it joins the
    /// open session when within `timeout` after its last event and not more
    /// than `grace` before its start (late arrivals); otherwise it starts a
    /// new one named `candidate`. An event far older than the open session
    /// gets a session of its own without disturbing it.
    pub fn assign(&mut self, key: u128, at: i64, candidate: u128, now: i64) -> u128 {
        if let Some(s) = self.open.get_mut(&key)
            && now - s.touched <= self.lifetime
        {
            if at <= s.last + self.timeout && at >= s.start - self.grace {
                s.last = s.last.max(at);
                s.start = s.start.min(at);
                s.touched = now;
                self.changed.insert(key);
                return s.id;
            }
            if at < s.start - self.grace {
                return candidate;
            }
        }
        self.open.insert(
            key,
            Session {
                id: candidate,
                start: at,
                last: at,
                touched: now,
            },
        );
        self.changed.insert(key);
        candidate
    }

    /// Forgets expired sessions (their records leave the log with the
    /// next snapshot; a restore drops them as it reads them).
    pub fn sweep(&mut self, now: i64) {
        let lifetime = self.lifetime;
        self.open.retain(|_, s| now - s.touched <= lifetime);
    }

    /// What the next commit writes: the changed sessions' records, or a
    /// snapshot of every open session once the log has grown past twice
    /// their size plus [`SNAPSHOT_SLACK`]. Cleared by [`Sessions::committed`].
    pub fn changes(&self) -> SessionLog {
        let live = self.open.len() * SESSION_RECORD;
        let appended = self.log_bytes + self.changed.len() * SESSION_RECORD;
        if self.snapshot_due || appended > 2 * live + SNAPSHOT_SLACK {
            SessionLog::Snapshot(encode_records(self.open.iter()))
        } else {
            let changed = self
                .changed
                .iter()
                .filter_map(|key| self.open.get_key_value(key));
            SessionLog::Append(encode_records(changed))
        }
    }

    /// Bytes of the sessions log in Redis.
    pub fn log_bytes(&self) -> usize {
        self.log_bytes
    }

    pub fn committed(&mut self, log: &SessionLog) {
        match log {
            SessionLog::Append(bytes) => self.log_bytes += bytes.len(),
            SessionLog::Snapshot(bytes) => self.log_bytes = bytes.len(),
        }
        self.snapshot_due = false;
        self.changed.clear();
    }
}

fn encode_records<'a>(sessions: impl Iterator<Item = (&'a u128, &'a Session)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(sessions.size_hint().0 * SESSION_RECORD);
    for (key, session) in sessions {
        out.extend_from_slice(&key.to_be_bytes());
        out.extend_from_slice(&session.encode());
    }
    out
}

/// The log of a dedupe bucket's keys: 96 bits each, concatenated.
pub fn encode_dedupe_keys(keys: &[u128]) -> Vec<u8> {
    let mut out = Vec::with_capacity(keys.len() * DEDUPE_KEY_BYTES);
    for key in keys {
        out.extend_from_slice(&key.to_be_bytes()[16 - DEDUPE_KEY_BYTES..]);
    }
    out
}

/// The keys of a dedupe bucket's log (a torn key at the end is skipped).
pub fn decode_dedupe_keys(log: &[u8]) -> impl Iterator<Item = u128> + '_ {
    log.chunks_exact(DEDUPE_KEY_BYTES).map(|field| {
        let mut bytes = [0u8; 16];
        bytes[16 - DEDUPE_KEY_BYTES..].copy_from_slice(field);
        u128::from_be_bytes(bytes)
    })
}

/// How long a session stays open after its last change.
pub fn session_lifetime_ms(settings: &Settings) -> u64 {
    settings.session_timeout_ms + settings.session_grace_ms + 60_000
}

/// Hashes dedupe keys by their low 64 bits: they are already uniform
/// hash output (xxh3), so hashing them again would only cost time.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

pub type KeySet = HashSet<u128, BuildHasherDefault<KeyHasher>>;

/// Dedupe keys by bucket, for the last `kept` buckets: the id window
/// (buckets of `dedupe_window_ms / 6` of commit time) or the recent
/// content keys (buckets of [`CONTENT_BUCKET_MS`] of receive time).
#[derive(Debug)]
pub struct Dedupe {
    buckets: VecDeque<(u64, KeySet)>,
    kept: u64,
}

impl Dedupe {
    pub fn new(kept: u64) -> Dedupe {
        Dedupe {
            buckets: VecDeque::new(),
            kept,
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(|(_, keys)| keys.len()).sum()
    }

    pub fn seen(&self, key: u128) -> bool {
        self.buckets.iter().any(|(_, keys)| keys.contains(&key))
    }

    /// The buckets after `bucket` has joined (the newest `kept` of them).
    pub fn window(&self, bucket: u64) -> std::ops::RangeInclusive<u64> {
        let newest = self.buckets.iter().map(|(b, _)| *b).fold(bucket, u64::max);
        newest.saturating_sub(self.kept - 1)..=newest
    }

    /// The buckets held that leave the window when `bucket` joins.
    pub fn leaving(&self, bucket: u64) -> impl Iterator<Item = u64> + '_ {
        let window = self.window(bucket);
        self.buckets
            .iter()
            .map(|(b, _)| *b)
            .filter(move |b| !window.contains(b))
    }

    /// Adds committed keys to bucket `bucket` (unless it is older than the
    /// window) and forgets the buckets that left the window.
    pub fn insert(&mut self, bucket: u64, keys: impl IntoIterator<Item = u128>) {
        let window = self.window(bucket);
        self.buckets.retain(|(b, _)| window.contains(b));
        if window.contains(&bucket) {
            let position = match self.buckets.iter().position(|(b, _)| *b == bucket) {
                Some(position) => position,
                None => {
                    self.buckets.push_back((bucket, KeySet::default()));
                    self.buckets.len() - 1
                }
            };
            self.buckets[position].1.extend(keys);
        }
    }
}

/// Which profile each recently seen device was identified as (`None`:
/// known not to be identified), when it was cached, and when this owner
/// last wrote the link to Redis.
#[derive(Debug, Default)]
pub struct DeviceProfiles {
    links: HashMap<u128, Link>,
}

#[derive(Debug)]
struct Link {
    profile: Option<String>,
    cached_at: i64,
    written_at: Option<i64>,
}

impl DeviceProfiles {
    /// The cached link of a device, when fresh.
    pub fn get(&self, key: u128, now: i64) -> Option<&Option<String>> {
        self.links
            .get(&key)
            .filter(|link| now - link.cached_at < PROFILE_CACHE_MS)
            .map(|link| &link.profile)
    }

    /// Whether this owner wrote the link `key → profile` less than
    /// `max_age` ago (so writing it again would only push its expiry back).
    pub fn written_within(&self, key: u128, profile: &str, now: i64, max_age: i64) -> bool {
        self.links.get(&key).is_some_and(|link| {
            link.profile.as_deref() == Some(profile)
                && link.written_at.is_some_and(|at| now - at < max_age)
        })
    }

    /// Caches a link read from Redis (`written` false) or written to it.
    pub fn put(&mut self, key: u128, profile: Option<String>, now: i64, written: bool) {
        if self.links.len() >= PROFILE_CACHE && !self.links.contains_key(&key) {
            self.links.clear();
        }
        let link = Link {
            profile,
            cached_at: now,
            written_at: written.then_some(now),
        };
        self.links.insert(key, link);
    }
}

/// Everything a partition's owner holds.
#[derive(Debug)]
pub struct PartitionState {
    pub sessions: Sessions,
    /// Keys of events with a client id, for `dedupe_window_ms`.
    pub dedupe: Dedupe,
    /// Keys of events without one, for [`CONTENT_BUCKETS`] of receive time.
    pub content: Dedupe,
    pub profiles: DeviceProfiles,
}

impl PartitionState {
    pub fn new(settings: &Settings) -> PartitionState {
        PartitionState {
            sessions: Sessions::new(settings),
            dedupe: Dedupe::new(DEDUPE_BUCKETS),
            content: Dedupe::new(CONTENT_BUCKETS),
            profiles: DeviceProfiles::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn settings() -> Settings {
        Settings {
            session_timeout_ms: 30 * MIN as u64,
            session_grace_ms: 5 * MIN as u64,
            dedupe_window_ms: 60 * MIN as u64,
        }
    }

    #[test]
    fn events_join_the_open_session_within_timeout_and_grace() {
        let mut s = Sessions::new(&settings());
        let now = 1_000 * MIN;
        assert_eq!(s.assign(1, now, 10, now), 10, "first event opens");
        assert_eq!(s.assign(1, now + 29 * MIN, 11, now), 10, "inside timeout");
        assert_eq!(
            s.assign(1, now - 4 * MIN, 12, now),
            10,
            "late, inside grace"
        );
        assert_eq!(
            s.assign(1, now - 30 * MIN, 13, now),
            13,
            "far older: a session of its own"
        );
        assert_eq!(s.assign(1, now + 29 * MIN + 1, 14, now), 10, "still open");
        assert_eq!(
            s.assign(1, now + 29 * MIN + 31 * MIN, 15, now),
            15,
            "past the timeout: a new session"
        );
        assert_eq!(s.assign(2, now, 16, now), 16, "devices are apart");
    }

    #[test]
    fn sessions_expire_a_lifetime_after_their_last_change() {
        let settings = settings();
        let lifetime = session_lifetime_ms(&settings) as i64;
        let mut s = Sessions::new(&settings);
        s.assign(1, 0, 10, 0);
        assert!(s.is_open(1, lifetime));
        assert!(!s.is_open(1, lifetime + 1));
        assert_eq!(s.assign(1, 1, 11, lifetime + 1), 11, "expired: new session");
        s.sweep(2 * lifetime + 2);
        assert_eq!(s.len(), 0);
    }

    fn appended(log: &SessionLog) -> &[u8] {
        match log {
            SessionLog::Append(bytes) => bytes,
            SessionLog::Snapshot(_) => panic!("a snapshot where an append was due"),
        }
    }

    #[test]
    fn changes_log_each_touched_session_once_until_committed() {
        let mut s = Sessions::new(&settings());
        s.assign(1, 0, 10, 0);
        s.assign(1, 5, 11, 0);
        s.assign(2, 0, 20, 0);
        let log = s.changes();
        assert_eq!(appended(&log).len(), 2 * SESSION_RECORD);
        s.committed(&log);
        assert_eq!(s.log_bytes(), 2 * SESSION_RECORD);
        assert!(appended(&s.changes()).is_empty());
    }

    #[test]
    fn a_replayed_log_restores_the_last_record_of_each_live_session() {
        let settings = settings();
        let lifetime = session_lifetime_ms(&settings) as i64;
        let mut owner = Sessions::new(&settings);
        let mut log = Vec::new();
        owner.assign(1, 0, 10, 0);
        owner.assign(2, 0, 20, 0);
        let first = owner.changes();
        log.extend_from_slice(appended(&first));
        owner.committed(&first);
        owner.assign(1, 60_000, 11, lifetime);
        let second = owner.changes();
        log.extend_from_slice(appended(&second));
        owner.committed(&second);

        let mut restored = Sessions::new(&settings);
        assert_eq!(restored.replay(&log, lifetime + 1), 0);
        assert_eq!(restored.open, {
            let mut live = owner.open.clone();
            live.remove(&2);
            live
        });
        assert_eq!(restored.open[&1].last, 60_000, "the later record wins");
        assert!(!restored.is_open(2, lifetime + 1), "expired as it was read");
        assert_eq!(restored.log_bytes(), log.len());
        log.push(7);
        assert_eq!(Sessions::new(&settings).replay(&log, 0), 1, "a torn tail");
    }

    #[test]
    fn the_log_is_compacted_into_a_snapshot_past_twice_its_live_size() {
        let settings = settings();
        let mut s = Sessions::new(&settings);
        let mut logged = 0;
        let mut at = 0;
        let snapshot = loop {
            at += 1;
            s.assign(1, at, 10, at);
            let log = s.changes();
            s.committed(&log);
            match log {
                SessionLog::Append(bytes) => logged += bytes.len(),
                SessionLog::Snapshot(bytes) => break bytes,
            }
        };
        assert!(logged <= 2 * SESSION_RECORD + SNAPSHOT_SLACK);
        assert!(logged + SESSION_RECORD > 2 * SESSION_RECORD + SNAPSHOT_SLACK);
        assert_eq!(snapshot.len(), SESSION_RECORD, "one live session");
        assert_eq!(s.log_bytes(), SESSION_RECORD);
        let mut restored = Sessions::new(&settings);
        restored.replay(&snapshot, at);
        assert_eq!(restored.open, s.open);
    }

    #[test]
    fn a_restore_from_the_earlier_layout_commits_a_snapshot() {
        let mut s = Sessions::new(&settings());
        let session = Session {
            id: 3,
            start: 0,
            last: 0,
            touched: 0,
        };
        s.restore(1, session, 0);
        let log = s.changes();
        assert!(matches!(&log, SessionLog::Snapshot(bytes) if bytes.len() == SESSION_RECORD));
        s.committed(&log);
        assert!(matches!(s.changes(), SessionLog::Append(_)));
    }

    #[test]
    fn dedupe_keys_survive_their_log() {
        let keys = [0, 1 << 95, (1 << 96) - 1, 0xdead_beef];
        let mut log = encode_dedupe_keys(&keys);
        assert_eq!(log.len(), 4 * DEDUPE_KEY_BYTES);
        log.push(1);
        assert_eq!(decode_dedupe_keys(&log).collect::<Vec<_>>(), keys);
    }

    #[test]
    fn sessions_survive_their_encoding() {
        let session = Session {
            id: u128::MAX - 7,
            start: -5,
            last: 1_767_607_200_500,
            touched: 42,
        };
        assert_eq!(Session::decode(&session.encode()), Some(session));
        assert_eq!(Session::decode(&[0; 39]), None);
    }

    #[test]
    fn dedupe_remembers_keys_for_the_window_of_buckets() {
        let mut d = Dedupe::new(DEDUPE_BUCKETS);
        assert_eq!(d.leaving(100).count(), 0);
        d.insert(100, [1, 2]);
        d.insert(101, [3]);
        assert!(d.seen(1) && d.seen(3) && !d.seen(4));
        d.insert(106, []);
        assert!(d.seen(1), "bucket 100 is six buckets back: inside");
        assert_eq!(
            d.leaving(107).collect::<Vec<_>>(),
            [100],
            "bucket 100 leaves the window"
        );
        d.insert(107, [4]);
        assert!(!d.seen(1));
        assert!(d.seen(3) && d.seen(4));
        assert_eq!(d.len(), 2);
        assert_eq!(d.window(0), 101..=107);
    }

    #[test]
    fn keys_older_than_the_window_are_not_kept() {
        let mut d = Dedupe::new(CONTENT_BUCKETS);
        d.insert(10, [1]);
        assert_eq!(d.leaving(7).count(), 0);
        d.insert(7, [2]);
        assert!(!d.seen(2), "behind the window: ignored");
        d.insert(8, [3]);
        assert!(d.seen(3), "late, but inside the window");
        assert_eq!(d.leaving(12).collect::<Vec<_>>(), [8]);
        d.insert(12, []);
        assert!(d.seen(1) && !d.seen(3));
    }

    #[test]
    fn profile_links_are_trusted_for_a_day_and_bounded() {
        let mut p = DeviceProfiles::default();
        p.put(1, Some("ada".into()), 0, false);
        p.put(2, None, 0, false);
        assert_eq!(p.get(1, 10), Some(&Some("ada".into())));
        assert_eq!(p.get(2, 10), Some(&None));
        assert_eq!(p.get(1, PROFILE_CACHE_MS), None, "stale after a day");
        assert!(!p.written_within(1, "ada", 10, 100), "read, not written");
        p.put(1, Some("ada".into()), 0, true);
        assert!(p.written_within(1, "ada", 10, 100));
        assert!(!p.written_within(1, "bob", 10, 100));
        assert!(!p.written_within(1, "ada", 100, 100));
        for key in 10..(10 + PROFILE_CACHE as u128) {
            p.put(key, None, 0, false);
        }
        assert!(p.links.len() <= PROFILE_CACHE);
    }
}
