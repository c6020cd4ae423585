//! One batch of raw entries → identities, sessions, profile changes and
//! rows, committed atomically with the batch's acknowledgement and the
//! changelog of the partition's state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use analytics_enrich::{Enrichment, Identity, ProfileState, UserAgent, profile_row};
use analytics_event::{EventKind, RawEvent, now_ms, raw_documents};
use analytics_meta::Meta;
use analytics_store::{AliasRow, Frame};
use analytics_streams::payload::compress;
use analytics_streams::{
    Conn, DeadLetter, Entry, Lease, Letters, MAX_BUNDLE_BYTES, MAX_BUNDLE_EVENTS, ReadBatch,
    SlotCommands, StreamError, dead_letter, query_by_slot,
};
use redis::Value;
use serde_json::Value as Json;
use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use crate::keys::Keys;
use crate::restore::bucket_of;
use crate::scripts::{
    CommitCall, ContentLogs, ProfileCall, ProfileChange, Scripts, bundle_records,
};
use crate::state::{
    CONTENT_BUCKET_MS, KeySet, PartitionState, device_key, encode_dedupe_keys, session_lifetime_ms,
};
use crate::{GROUP, Settings};

/// How long a device stays linked to the profile that identified it.
const DEVICE_PROFILE_TTL_S: u64 = 30 * 24 * 3600;
/// A link is written again (its expiry pushed back) when the cached one is
/// older than this, not at every event of an identified device.
const DEVICE_PROFILE_REFRESH_MS: i64 = 3600 * 1000;
const BOT_POLICY_TTL: Duration = Duration::from_secs(30);
/// How much longer than a session's lifetime the sessions log outlives
/// its last write (room for the owner's and Redis's clocks to differ).
const SESSIONS_LOG_MARGIN_MS: u64 = 60_000;

/// What every partition task of one process shares.
pub struct Shared {
    pub enrichment: Enrichment,
    pub meta: Meta,
    pub settings: Settings,
    pub scripts: tokio::sync::RwLock<Scripts>,
    bot_policy: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Shared {
    pub fn new(enrichment: Enrichment, meta: Meta, settings: Settings, scripts: Scripts) -> Self {
        Shared {
            enrichment,
            meta,
            settings,
            scripts: tokio::sync::RwLock::new(scripts),
            bot_policy: Mutex::new(HashMap::new()),
        }
    }

    async fn drops_bots(&self, project: &str) -> bool {
        if let Some((at, drop)) = self
            .bot_policy
            .lock()
            .ok()
            .and_then(|c| c.get(project).copied())
            && at.elapsed() < BOT_POLICY_TTL
        {
            return drop;
        }
        let drop = match self.meta.drop_bots(project).await {
            Ok(drop) => drop,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read bot policy; keeping bot events");
                false
            }
        };
        if let Ok(mut cache) = self.bot_policy.lock() {
            cache.insert(project.to_owned(), (Instant::now(), drop));
        }
        drop
    }
}

/// One raw entry on its way through the batch.
struct Item<'a> {
    entry_id: Arc<str>,
    /// Borrows from its entry's payload, which outlives the batch's work.
    raw: RawEvent<'a>,
    ua: Arc<UserAgent>,
    identity: Identity,
    records: Vec<Frame>,
}

/// Counts of a committed batch.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Raw entries read, and the events they held.
    pub entries: u64,
    pub events: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub dropped_bots: u64,
    /// What went to the enriched partition: records, in this many entries.
    pub written: Written,
}

/// Records appended to an enriched partition and the entries holding them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub records: u64,
    pub entries: u64,
}

/// Why a batch could not be committed; it stays pending and is retried.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

impl ProcessError {
    /// Whether the commit was refused because another member owns the
    /// partition now.
    pub fn lease_lost(&self) -> bool {
        matches!(self, ProcessError::Redis(e) if e.code() == Some("LEASE"))
    }
}

fn reply<T: redis::FromRedisValue>(value: Option<Value>) -> Result<T, ProcessError> {
    let value = value.ok_or_else(|| ProcessError::Reply("missing reply".into()))?;
    redis::from_redis_value(value).map_err(|e| ProcessError::Reply(e.to_string()))
}

/// What one batch works with: the partition's keys, its owner's state and
/// the lease the commit must still find.
pub struct Owned<'a> {
    pub keys: &'a Keys,
    pub state: &'a mut PartitionState,
    pub lease: &'a Lease,
}

/// Processes and commits one batch of `keys.raw`. After an error the state
/// may hold changes that were not committed (or were, with the reply
/// lost): the caller restores it before the next batch.
pub async fn process(
    shared: &Shared,
    owned: Owned<'_>,
    conn: &mut Conn,
    batch: ReadBatch,
) -> Result<Outcome, ProcessError> {
    let Owned { keys, state, lease } = owned;
    let mut outcome = Outcome {
        entries: batch.entries.len() as u64,
        ..Outcome::default()
    };
    let mut letters = Vec::new();
    let mut dropped: Vec<String> = batch.vanished;
    // The events borrow their strings from the payloads kept here.
    let entries = batch.entries;
    // Counting the frames first is cheap (each is length-prefixed), and an
    // item is large: growing the vector would copy every item again.
    let documents = entries
        .iter()
        .map(|entry| raw_documents(&entry.payload).count())
        .sum();
    let mut items = Vec::with_capacity(documents);
    // Bad documents of entries whose other events are committed below: they
    // are copied to the dead letters first, the commit acknowledges the entry.
    let mut parked = Vec::new();
    for entry in &entries {
        let (items_before, letters_before) = (items.len(), letters.len());
        // One id shared by the entry's events, not a copy per event.
        let entry_id: Arc<str> = Arc::from(entry.id.as_str());
        for document in raw_documents(&entry.payload) {
            outcome.events += 1;
            match document.decode() {
                Ok(mut raw) => {
                    raw.hoist_page();
                    let ua = shared.enrichment.user_agent(&raw);
                    if ua.is_bot() && shared.drops_bots(&raw.project_id).await {
                        outcome.dropped_bots += 1;
                        continue;
                    }
                    items.push(Item {
                        entry_id: entry_id.clone(),
                        identity: Identity {
                            device_id: raw.device_id.to_string(),
                            profile_id: raw.profile_id.to_string(),
                            session_id: raw.session_id.to_string(),
                        },
                        raw,
                        ua,
                        records: Vec::with_capacity(2),
                    });
                }
                Err(e) => {
                    letters.push(DeadLetter {
                        reason: format!("cannot decode raw event: {e}"),
                        entry: Entry {
                            id: entry.id.clone(),
                            payload: document.alone().into_owned(),
                        },
                    });
                }
            }
        }
        if items.len() > items_before {
            parked.extend(letters.drain(letters_before..));
        } else if letters.len() == letters_before {
            // Only bots (or no event at all): acknowledged without records.
            dropped.push(entry.id.clone());
        }
    }
    dead_letter(conn, &keys.raw, &keys.dead, GROUP, &parked, Letters::Copied).await?;
    let now = now_ms();
    resolve_identities(keys, conn, state, &mut items, now).await?;
    apply_state(shared, keys, conn, state, &mut items, now).await?;
    for item in &mut items {
        let row = shared
            .enrichment
            .event_row(&item.raw, &item.ua, &item.identity);
        item.records.insert(0, Frame::Event(row));
    }
    let (stored, duplicates, records, entries) = commit(
        shared,
        Owned { keys, state, lease },
        conn,
        &items,
        &dropped,
        now,
    )
    .await?;
    outcome.stored = stored;
    outcome.duplicates = duplicates;
    outcome.written = Written { records, entries };
    dead_letter(conn, &keys.raw, &keys.dead, GROUP, &letters, Letters::Moved).await?;
    Ok(outcome)
}

/// Profiles behind aliases (shared keys, one round trip, one per hash
/// slot on a cluster), profiles of identified devices (the owner's cache,
/// read through on a miss), and devices that carry over from yesterday's
/// salt (an open session of yesterday's id, on this same partition).
async fn resolve_identities(
    keys: &Keys,
    conn: &mut Conn,
    state: &mut PartitionState,
    items: &mut [Item<'_>],
    now: i64,
) -> Result<(), ProcessError> {
    let mut commands = SlotCommands::new(conn);
    // Items that wait for a reply, and the device whose link it is (None: an alias).
    let mut asked = Vec::new();
    for (index, item) in items.iter_mut().enumerate() {
        let raw = &item.raw;
        let key = if raw.profile_id.is_empty() {
            let device = device_key(&raw.project_id, &raw.device_id);
            match state.profiles.get(device, now) {
                Some(linked) => {
                    if let Some(profile) = linked {
                        item.identity.profile_id = profile.clone();
                    }
                    continue;
                }
                None => {
                    asked.push((index, Some(device)));
                    keys.device_profile(&raw.project_id, &raw.device_id)
                }
            }
        } else {
            asked.push((index, None));
            keys.alias(&raw.project_id, &raw.profile_id)
        };
        let mut get = redis::cmd("GET");
        get.arg(&key);
        commands.push(&key, get);
    }
    let replies = if commands.is_empty() {
        Vec::new()
    } else {
        query_by_slot(conn, commands).await?
    };
    if replies.len() != asked.len() {
        return Err(ProcessError::Reply("a profile link is missing".into()));
    }
    for ((index, device), value) in asked.into_iter().zip(replies) {
        let found: Option<String> = reply(Some(value))?;
        if let Some(device) = device {
            state.profiles.put(device, found.clone(), now, false);
        }
        if let Some(profile) = found {
            items[index].identity.profile_id = profile;
        }
    }
    for item in items.iter_mut() {
        let raw = &item.raw;
        // A visit that started before midnight keeps yesterday's device id.
        if !raw.previous_device_id.is_empty()
            && state
                .sessions
                .is_open(device_key(&raw.project_id, &raw.previous_device_id), now)
        {
            item.identity.device_id = raw.previous_device_id.to_string();
        }
    }
    Ok(())
}

/// Sessions (in the owner's memory), then device → profile links, profile
/// operations and aliases (shared keys) in one round trip.
async fn apply_state(
    shared: &Shared,
    keys: &Keys,
    conn: &mut Conn,
    state: &mut PartitionState,
    items: &mut [Item<'_>],
    now: i64,
) -> Result<(), ProcessError> {
    for item in items.iter_mut() {
        let (raw, identity) = (&item.raw, &mut item.identity);
        if raw.kind == EventKind::Track && !item.ua.is_bot() && identity.session_id.is_empty() {
            let at = analytics_enrich::event_time_ms(raw);
            let device = device_key(&raw.project_id, &identity.device_id);
            let candidate = session_id(&raw.project_id, &identity.device_id, at);
            let id = state.sessions.assign(device, at, candidate, now);
            identity.session_id = format!("{id:032x}");
        }
    }
    let scripts = shared.scripts.read().await.clone();
    let mut commands = SlotCommands::new(conn);
    // The item whose profile state each profile call returns.
    let mut profile_calls = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let (raw, identity) = (&item.raw, &item.identity);
        let project: &str = &raw.project_id;
        if !identity.profile_id.is_empty() && !item.ua.is_bot() {
            let device = device_key(project, &identity.device_id);
            let profile = identity.profile_id.as_str();
            if !state
                .profiles
                .written_within(device, profile, now, DEVICE_PROFILE_REFRESH_MS)
            {
                let key = keys.device_profile(project, &identity.device_id);
                let mut set = redis::cmd("SET");
                set.arg(&key)
                    .arg(&identity.profile_id)
                    .arg("EX")
                    .arg(DEVICE_PROFILE_TTL_S);
                commands.push(&key, set);
                profile_calls.push(None);
                state
                    .profiles
                    .put(device, Some(identity.profile_id.clone()), now, true);
            }
        }
        if let Some(change) = profile_operation(raw) {
            let (hash, applied) = keys.profile(project, &identity.profile_id);
            let call = ProfileCall {
                hash: &hash,
                applied: &applied,
                event_id: &raw.id,
                at_ms: raw.received_at_ms,
                change: &change,
            };
            commands.push(&hash, call.command(&scripts.profile));
            profile_calls.push(Some(index));
        }
        if let (EventKind::Alias, Some(alias)) = (raw.kind, &raw.alias) {
            let key = keys.alias(project, alias);
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(&identity.profile_id);
            commands.push(&key, set);
            profile_calls.push(None);
        }
    }
    if !commands.is_empty() {
        let replies = query_by_slot(conn, commands).await?;
        for (call, value) in profile_calls.into_iter().zip(replies) {
            let Some(index) = call else { continue };
            let pairs: Vec<(String, String)> = reply(Some(value))?;
            let profile = ProfileState::from_hash(pairs);
            let item = &mut items[index];
            item.records.push(Frame::Profile(profile_row(
                &item.raw.project_id,
                &item.identity.profile_id,
                &profile,
            )));
        }
    }
    for item in items.iter_mut() {
        let raw = &item.raw;
        if let (EventKind::Alias, Some(alias)) = (raw.kind, &raw.alias) {
            item.records.push(Frame::Alias(AliasRow {
                project_id: raw.project_id.to_string(),
                alias: alias.clone(),
                profile_id: item.identity.profile_id.clone(),
                created_at: (raw.received_at_ms / 1000).max(0) as u32,
            }));
        }
    }
    Ok(())
}

/// A new session's id: derived from device and first event time, so a
/// redelivered batch that starts the same session names it the same.
fn session_id(project: &str, device: &str, at_ms: i64) -> u128 {
    let mut h = Xxh3::new();
    for part in [project.as_bytes(), device.as_bytes(), &at_ms.to_be_bytes()] {
        h.update(part);
        h.update(&[0]);
    }
    h.digest128()
}

/// The profile script's arguments after the event id, for profile events.
fn profile_operation(raw: &RawEvent) -> Option<ProfileChange> {
    match raw.kind {
        EventKind::Identify => {
            let mut fields = Vec::new();
            for (key, value) in &raw.traits {
                let field = match key.as_str() {
                    "firstName" => "fn".to_owned(),
                    "lastName" => "ln".to_owned(),
                    "email" => "em".to_owned(),
                    "avatar" => "av".to_owned(),
                    other => format!("p:{other}"),
                };
                let text = match (field.starts_with("p:"), value) {
                    (false, Json::String(s)) => s.clone(),
                    _ => value.to_string(),
                };
                fields.push((field, text));
            }
            for (key, value) in &raw.properties.to_map() {
                fields.push((format!("p:{key}"), value.to_string()));
            }
            Some(ProfileChange::Set(fields))
        }
        EventKind::Increment | EventKind::Decrement => {
            let amount = raw.value.unwrap_or(1.0);
            let signed = if raw.kind == EventKind::Decrement {
                -amount
            } else {
                amount
            };
            let property = raw.property.clone().unwrap_or_default();
            Some(ProfileChange::Add {
                field: format!("p:{property}"),
                amount: signed,
            })
        }
        EventKind::Track | EventKind::Alias => None,
    }
}

/// The key under which an event is remembered for dedupe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DedupeKey {
    /// A client id: retries carry the same one, for `dedupe_window_ms`.
    Id(u128),
    /// An event without one: its content and the second it was received;
    /// `previous` is the key of the same content one second earlier.
    Content {
        key: u128,
        previous: u128,
        received_ms: i64,
    },
}

/// An event's dedupe key. Keys are 96 bits of xxh3-128: collisions (which
/// would drop an event) are negligible at the window's sizes, at a
/// fraction of SHA-256's cost.
fn dedupe_key(raw: &RawEvent) -> DedupeKey {
    let finish = |h: &Xxh3| h.digest128() >> 32;
    let mut h = Xxh3::new();
    h.update(raw.project_id.as_bytes());
    h.update(&[0]);
    if raw.id_from_client {
        h.update(b"id\0");
        h.update(raw.id.as_bytes());
        return DedupeKey::Id(finish(&h));
    }
    // The content in one buffer, hashed at once (many small updates of a
    // streaming hash cost more than the copy); each text after its length,
    // so no two events' fields run together.
    let mut content = Vec::with_capacity(
        160 + raw.user_agent.len() + raw.path.len() + raw.properties.text().len(),
    );
    let mut text = |t: &str| {
        content.extend_from_slice(&(t.len() as u64).to_le_bytes());
        content.extend_from_slice(t.as_bytes());
    };
    for part in [
        &*raw.ip,
        &raw.user_agent,
        raw.kind.as_str(),
        &raw.name,
        &raw.device_id,
        &raw.profile_id,
        &raw.path,
        &raw.referrer,
        // Compact and key-sorted as the edge wrote it: equal properties
        // hash equally without being written out again.
        raw.properties.text(),
        raw.property.as_deref().unwrap_or_default(),
        raw.alias.as_deref().unwrap_or_default(),
    ] {
        text(part);
    }
    if !raw.traits.is_empty() {
        // A map of JSON values always serializes.
        text(&serde_json::to_string(&raw.traits).unwrap_or_default());
    }
    let present = [
        raw.property.is_some(),
        raw.alias.is_some(),
        raw.value.is_some(),
        raw.client_time_ms.is_some(),
    ];
    content.extend(present.map(u8::from));
    for number in [
        raw.value.map(f64::to_bits),
        raw.client_time_ms.map(|t| t as u64),
    ] {
        content.extend_from_slice(&number.unwrap_or_default().to_le_bytes());
    }
    h.update(b"content\0");
    h.update(&xxh3_128(&content).to_le_bytes());
    let second = raw.received_at_ms / 1000;
    let key = |s: i64| {
        let mut h = h.clone();
        h.update(&s.to_be_bytes());
        finish(&h)
    };
    DedupeKey::Content {
        key: key(second),
        previous: key(second - 1),
        received_ms: raw.received_at_ms,
    }
}

/// Drops duplicates (against the window in memory and the batch itself),
/// then commits outputs, changelog and acknowledgements in one script; the
/// new dedupe keys join the window once Redis has them.
async fn commit(
    shared: &Shared,
    owned: Owned<'_>,
    conn: &mut Conn,
    items: &[Item<'_>],
    dropped: &[String],
    now: i64,
) -> Result<(u64, u64, u64, u64), ProcessError> {
    let Owned { keys, state, lease } = owned;
    if items.is_empty() && dropped.is_empty() {
        return Ok((0, 0, 0, 0));
    }
    let mut id_keys = Vec::new();
    // Content keys by receive-time bucket.
    let mut content_keys: BTreeMap<u64, Vec<u128>> = BTreeMap::new();
    let mut in_batch = KeySet::with_capacity_and_hasher(items.len(), Default::default());
    let mut records = Vec::with_capacity(items.len() * 2);
    let mut duplicates = 0;
    for item in items {
        // Keys restored from layouts that kept both kinds in the id window
        // are found there too.
        let known =
            |k: u128| in_batch.contains(&k) || state.dedupe.seen(k) || state.content.seen(k);
        let key = match dedupe_key(&item.raw) {
            DedupeKey::Id(key) if !known(key) => {
                id_keys.push(key);
                key
            }
            DedupeKey::Content {
                key,
                previous,
                received_ms,
            } if !known(key) && !known(previous) => {
                let bucket = (received_ms.max(0) / CONTENT_BUCKET_MS) as u64;
                content_keys.entry(bucket).or_default().push(key);
                key
            }
            _ => {
                duplicates += 1;
                continue;
            }
        };
        in_batch.insert(key);
        records.extend(&item.records);
    }
    let (bundles, record_count) = bundle_records(records, MAX_BUNDLE_EVENTS, MAX_BUNDLE_BYTES);
    let bundles: Vec<Vec<u8>> = bundles.iter().map(|b| compress(b)).collect();
    let mut ids: Vec<&str> = Vec::with_capacity(items.len() + dropped.len());
    for id in items.iter().map(|item| &*item.entry_id) {
        if ids.last() != Some(&id) {
            ids.push(id);
        }
    }
    ids.extend(dropped.iter().map(String::as_str));
    let (bucket, bucket_ms) = bucket_of(&shared.settings, now);
    let sessions_log = state.sessions.changes();
    let newest = content_keys.keys().next_back().copied().unwrap_or(0);
    let window = state.content.window(newest);
    let content_appended: Vec<(String, Vec<u8>)> = content_keys
        .iter()
        .filter(|(b, _)| window.contains(b))
        .map(|(b, bucket_keys)| (keys.content_log(*b), encode_dedupe_keys(bucket_keys)))
        .collect();
    let content_deleted: Vec<String> = state
        .content
        .leaving(newest)
        .map(|b| keys.content_log(b))
        .collect();
    let scripts = shared.scripts.read().await.clone();
    let call = CommitCall {
        raw: &keys.raw,
        enriched: &keys.enriched,
        lease,
        bucket: &keys.dedupe_log(bucket),
        sessions: &keys.sessions_log(),
        legacy_sessions: &keys.legacy_sessions(),
        group: GROUP,
        bucket_ttl_ms: shared.settings.dedupe_window_ms + bucket_ms,
        sessions_ttl_ms: session_lifetime_ms(&shared.settings) + SESSIONS_LOG_MARGIN_MS,
        bundles: &bundles,
        dedupe_keys: &encode_dedupe_keys(&id_keys),
        sessions_log: &sessions_log,
        content: ContentLogs {
            head: &keys.content_head(),
            newest: *window.end(),
            ttl_ms: shared.settings.dedupe_window_ms,
            appended: &content_appended,
            deleted: &content_deleted,
        },
        ids: &ids,
    };
    let _: i64 = call.command(&scripts.commit).query_async(conn).await?;
    state.sessions.committed(&sessions_log);
    let stored = in_batch.len() as u64;
    state.dedupe.insert(bucket, id_keys);
    for (bucket, keys) in content_keys {
        state.content.insert(bucket, keys);
    }
    Ok((stored, duplicates, record_count, bundles.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use analytics_event::Properties;

    fn raw() -> RawEvent<'static> {
        serde_json::from_value(serde_json::json!({
            "id": "e1", "project_id": "p", "kind": "track", "name": "a", "device_id": "d",
            "received_at_ms": 1_767_607_200_500i64, "ip": "1.2.3.4", "user_agent": "ua"
        }))
        .unwrap()
    }

    /// The key and the previous second's key of a content-keyed event.
    fn content(raw: &RawEvent) -> (u128, u128) {
        match dedupe_key(raw) {
            DedupeKey::Content { key, previous, .. } => (key, previous),
            DedupeKey::Id(_) => panic!("an event without a client id is keyed by content"),
        }
    }

    #[test]
    fn client_ids_dedupe_on_the_id_alone() {
        let mut a = raw();
        a.id_from_client = true;
        let mut b = a.clone();
        b.received_at_ms += 1_800_000;
        b.properties = Properties::from_map(serde_json::json!({"x": 1}).as_object().unwrap());
        assert_eq!(dedupe_key(&a), dedupe_key(&b));
        assert!(matches!(dedupe_key(&a), DedupeKey::Id(_)));
        b.id = "e2".into();
        assert_ne!(dedupe_key(&a), dedupe_key(&b));
    }

    #[test]
    fn identical_content_within_a_second_shares_a_key() {
        let a = raw();
        let mut b = a.clone();
        b.id = "server-assigned-2".into();
        b.received_at_ms += 700; // next second
        let (ka, _) = content(&a);
        let (kb, previous_b) = content(&b);
        assert_ne!(ka, kb);
        assert_eq!(ka, previous_b, "the later event must find the earlier one");
        assert!(matches!(
            dedupe_key(&b),
            DedupeKey::Content { received_ms, .. } if received_ms == b.received_at_ms
        ));
        let mut c = a.clone();
        c.ip = "5.6.7.8".into();
        assert_ne!(content(&c).0, ka);
        let mut d = a.clone();
        d.received_at_ms += 2_000;
        assert_ne!(content(&d).1, ka);
    }

    #[test]
    fn every_part_of_the_content_is_in_its_key() {
        let a = raw();
        let changes: Vec<fn(&mut RawEvent)> = vec![
            |r| r.name = "b".into(),
            |r| r.device_id = "d2".into(),
            |r| r.profile_id = "u".into(),
            |r| r.path = "/elsewhere".into(),
            |r| r.referrer = "https://r.example/".into(),
            |r| {
                r.properties =
                    Properties::from_map(serde_json::json!({"x": 2}).as_object().unwrap())
            },
            |r| r.kind = EventKind::Increment,
            |r| r.property = Some(String::new()),
            |r| r.alias = Some("x".into()),
            |r| r.value = Some(0.0),
            |r| r.client_time_ms = Some(0),
            |r| {
                r.traits.insert("k".into(), 1.into());
            },
            // The same letters split between two fields another way.
            |r| {
                r.name = format!("{}{}", r.name, r.device_id).into();
                r.device_id = "".into();
            },
        ];
        let key = content(&a).0;
        for (i, change) in changes.iter().enumerate() {
            let mut b = a.clone();
            change(&mut b);
            assert_ne!(content(&b).0, key, "change {i}");
        }
    }

    #[test]
    fn profile_operations_map_traits_and_amounts() {
        let mut r = raw();
        r.kind = EventKind::Decrement;
        r.property = Some("credits".into());
        r.value = Some(2.5);
        assert_eq!(
            profile_operation(&r).unwrap(),
            ProfileChange::Add {
                field: "p:credits".into(),
                amount: -2.5
            }
        );
        r.kind = EventKind::Identify;
        r.traits = serde_json::json!({"firstName": "Ada", "plan": "pro"})
            .as_object()
            .cloned()
            .unwrap();
        let Some(ProfileChange::Set(fields)) = profile_operation(&r) else {
            panic!("identify sets fields");
        };
        assert!(fields.contains(&("fn".into(), "Ada".into())));
        assert!(fields.contains(&("p:plan".into(), "\"pro\"".into())));
        r.kind = EventKind::Track;
        assert!(profile_operation(&r).is_none());
    }

    #[test]
    fn session_ids_are_deterministic() {
        assert_eq!(session_id("p", "d", 5), session_id("p", "d", 5));
        assert_ne!(session_id("p", "d", 5), session_id("p", "d", 6));
    }
}
