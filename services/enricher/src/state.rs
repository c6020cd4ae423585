//! The state an enricher keeps for the raw partition it owns: open
//! sessions, the dedupe window, and which devices were identified as which
//! profile. Only the partition's owner reads or changes it (a device's
//! events all land on one partition), so it lives in memory and costs no
//! round trip per event.
//!
//! Durability is a compacted changelog in Redis, written by the same
//! atomic commit as the batch's output and acknowledgement: a hash of the
//! partition's sessions (`<prefix>:sessions:{pN}`, one field per device,
//! removed when the session expires) and the dedupe buckets
//! (`<prefix>:dedupe:{pN}:<bucket>`, which expire on their own). A new
//! owner restores from them exactly the state that matches what was
//! acknowledged. The device → profile links stay in shared keys (they live
//! for 30 days) and are cached here, read through on a miss: the owner is
//! their only writer, so the cache is never stale while the lease holds.
//!
//! Bounds: sessions hold the devices active within the session lifetime
//! (timeout + grace + one minute), about 90 bytes each; the dedupe window
//! holds every event of the last `dedupe_window_ms`, about 30 bytes each;
//! the profile cache at most [`PROFILE_CACHE`] devices, about 120 bytes each.

use std::collections::{HashMap, HashSet, VecDeque};

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

/// The open sessions of a partition's devices, and what changed since the
/// last commit.
#[derive(Debug)]
pub struct Sessions {
    open: HashMap<u128, Session>,
    timeout: i64,
    grace: i64,
    lifetime: i64,
    changed: HashSet<u128>,
    expired: Vec<u128>,
}

impl Sessions {
    pub fn new(settings: &Settings) -> Sessions {
        Sessions {
            open: HashMap::new(),
            timeout: settings.session_timeout_ms as i64,
            grace: settings.session_grace_ms as i64,
            lifetime: session_lifetime_ms(settings) as i64,
            changed: HashSet::new(),
            expired: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Takes a restored session (dropped when it has expired).
    pub fn restore(&mut self, key: u128, session: Session, now: i64) {
        if now - session.touched <= self.lifetime {
            self.open.insert(key, session);
        }
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

    /// Forgets expired sessions; the next commit removes them from Redis.
    pub fn sweep(&mut self, now: i64) {
        let lifetime = self.lifetime;
        let expired = &mut self.expired;
        self.open.retain(|key, s| {
            let keep = now - s.touched <= lifetime;
            if !keep {
                expired.push(*key);
            }
            keep
        });
    }

    /// What the next commit writes: changed sessions (field, value) and
    /// expired ones. Cleared by [`Sessions::committed`].
    pub fn changes(&self) -> (Vec<(u128, Session)>, &[u128]) {
        let set = self
            .changed
            .iter()
            .filter_map(|key| self.open.get(key).map(|s| (*key, *s)))
            .collect();
        (set, &self.expired)
    }

    pub fn committed(&mut self) {
        self.changed.clear();
        self.expired.clear();
    }
}

/// How long a session stays open after its last change.
pub fn session_lifetime_ms(settings: &Settings) -> u64 {
    settings.session_timeout_ms + settings.session_grace_ms + 60_000
}

/// The dedupe keys of the window, by bucket (`dedupe_window_ms / 6` each).
#[derive(Debug, Default)]
pub struct Dedupe {
    buckets: VecDeque<(u64, HashSet<u128>)>,
}

impl Dedupe {
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|(_, keys)| keys.len()).sum()
    }

    pub fn seen(&self, key: u128) -> bool {
        self.buckets.iter().any(|(_, keys)| keys.contains(&key))
    }

    /// Adds committed keys to bucket `bucket` and forgets buckets that left
    /// the window.
    pub fn insert(&mut self, bucket: u64, keys: impl IntoIterator<Item = u128>) {
        let oldest = bucket.saturating_sub(DEDUPE_BUCKETS - 1);
        self.buckets.retain(|(b, _)| *b >= oldest);
        let position = match self.buckets.iter().position(|(b, _)| *b == bucket) {
            Some(position) => position,
            None => {
                self.buckets.push_back((bucket, HashSet::new()));
                self.buckets.len() - 1
            }
        };
        self.buckets[position].1.extend(keys);
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
    pub dedupe: Dedupe,
    pub profiles: DeviceProfiles,
}

impl PartitionState {
    pub fn new(settings: &Settings) -> PartitionState {
        PartitionState {
            sessions: Sessions::new(settings),
            dedupe: Dedupe::default(),
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
        s.committed();
        assert!(s.is_open(1, lifetime));
        assert!(!s.is_open(1, lifetime + 1));
        assert_eq!(s.assign(1, 1, 11, lifetime + 1), 11, "expired: new session");
        s.committed();
        s.sweep(2 * lifetime + 2);
        let (set, expired) = s.changes();
        assert!(set.is_empty());
        assert_eq!(expired, [1]);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn changes_list_each_touched_session_once_until_committed() {
        let mut s = Sessions::new(&settings());
        s.assign(1, 0, 10, 0);
        s.assign(1, 5, 11, 0);
        s.assign(2, 0, 20, 0);
        let (mut set, _) = s.changes();
        set.sort_by_key(|(k, _)| *k);
        assert_eq!(set.len(), 2);
        assert_eq!(set[0].1.last, 5);
        s.committed();
        assert!(s.changes().0.is_empty());
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
        let mut d = Dedupe::default();
        d.insert(100, [1, 2]);
        d.insert(101, [3]);
        assert!(d.seen(1) && d.seen(3) && !d.seen(4));
        d.insert(106, []);
        assert!(d.seen(1), "bucket 100 is six buckets back: inside");
        d.insert(107, [4]);
        assert!(!d.seen(1), "bucket 100 left the window");
        assert!(d.seen(3) && d.seen(4));
        assert_eq!(d.len(), 2);
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
