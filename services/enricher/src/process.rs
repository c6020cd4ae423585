//! One batch of raw entries → identities, sessions, profile changes and
//! rows, committed atomically with the batch's acknowledgement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use analytics_enrich::{Enrichment, Identity, ProfileState, UserAgent, profile_row};
use analytics_event::{EventKind, RawEvent, now_ms};
use analytics_meta::Meta;
use analytics_store::{AliasRow, Record};
use analytics_streams::{
    Conn, DeadLetter, Entry, Letters, MAX_BUNDLE_BYTES, MAX_BUNDLE_EVENTS, ReadBatch, SlotCommands,
    StreamError, bundle_documents, dead_letter, query_by_slot, slot_groups,
};
use redis::Value;
use serde_json::Value as Json;
use xxhash_rust::xxh3::Xxh3;

use crate::keys::Keys;
use crate::scripts::{
    CommitCall, CommitEntry, ProfileCall, ProfileChange, Scripts, SessionEvent, SessionsCall,
};
use crate::{GROUP, Settings};

/// How long a device stays linked to the profile that identified it.
const DEVICE_PROFILE_TTL_S: u64 = 30 * 24 * 3600;
const BOT_POLICY_TTL: Duration = Duration::from_secs(30);

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
struct Item {
    entry_id: String,
    raw: RawEvent,
    ua: Arc<UserAgent>,
    identity: Identity,
    records: Vec<Record>,
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

fn reply<T: redis::FromRedisValue>(value: Option<Value>) -> Result<T, ProcessError> {
    let value = value.ok_or_else(|| ProcessError::Reply("missing reply".into()))?;
    redis::from_redis_value(value).map_err(|e| ProcessError::Reply(e.to_string()))
}

/// Processes and commits one batch of `keys.raw`.
pub async fn process(
    shared: &Shared,
    keys: &Keys,
    conn: &mut Conn,
    batch: ReadBatch,
) -> Result<Outcome, ProcessError> {
    let mut outcome = Outcome {
        entries: batch.entries.len() as u64,
        ..Outcome::default()
    };
    let mut letters = Vec::new();
    let mut items = Vec::with_capacity(batch.entries.len());
    let mut dropped: Vec<String> = batch.vanished;
    // Bad documents of entries whose other events are committed below: they
    // are copied to the dead letters first, the commit acknowledges the entry.
    let mut parked = Vec::new();
    for entry in batch.entries {
        let (items_before, letters_before) = (items.len(), letters.len());
        for document in bundle_documents(&entry.payload) {
            outcome.events += 1;
            match serde_json::from_slice::<RawEvent>(document) {
                Ok(raw) => {
                    let ua = shared.enrichment.user_agent(&raw);
                    if ua.is_bot() && shared.drops_bots(&raw.project_id).await {
                        outcome.dropped_bots += 1;
                        continue;
                    }
                    items.push(Item {
                        entry_id: entry.id.clone(),
                        identity: Identity {
                            device_id: raw.device_id.clone(),
                            profile_id: raw.profile_id.clone(),
                            session_id: raw.session_id.clone(),
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
                            payload: document.to_vec(),
                        },
                    });
                }
            }
        }
        if items.len() > items_before {
            parked.extend(letters.drain(letters_before..));
        } else if letters.len() == letters_before {
            // Only bots (or no event at all): acknowledged without records.
            dropped.push(entry.id);
        }
    }
    dead_letter(conn, &keys.raw, &keys.dead, GROUP, &parked, Letters::Copied).await?;
    resolve_identities(keys, conn, &mut items).await?;
    apply_state(shared, keys, conn, &mut items).await?;
    for item in &mut items {
        let row = shared
            .enrichment
            .event_row(&item.raw, &item.ua, &item.identity);
        item.records.insert(0, Record::Events(row));
    }
    let (stored, duplicates, records, entries) =
        commit(shared, keys, conn, &items, &dropped).await?;
    outcome.stored = stored;
    outcome.duplicates = duplicates;
    outcome.written = Written { records, entries };
    dead_letter(conn, &keys.raw, &keys.dead, GROUP, &letters, Letters::Moved).await?;
    Ok(outcome)
}

/// Profiles behind aliases, profiles of identified devices, and devices
/// that carry over from yesterday's salt: read in one round trip (one per
/// hash slot on a cluster).
async fn resolve_identities(
    keys: &Keys,
    conn: &mut Conn,
    items: &mut [Item],
) -> Result<(), ProcessError> {
    let mut commands = SlotCommands::new(conn);
    for item in items.iter() {
        let raw = &item.raw;
        let key = if raw.profile_id.is_empty() {
            keys.device_profile(&raw.project_id, &raw.device_id)
        } else {
            keys.alias(&raw.project_id, &raw.profile_id)
        };
        let mut get = redis::cmd("GET");
        get.arg(&key);
        commands.push(&key, get);
        if !raw.previous_device_id.is_empty() {
            let key = keys.session(&raw.project_id, &raw.previous_device_id);
            let mut exists = redis::cmd("EXISTS");
            exists.arg(&key);
            commands.push(&key, exists);
        }
    }
    let mut replies = query_by_slot(conn, commands).await?.into_iter();
    for item in items.iter_mut() {
        let found: Option<String> = reply(replies.next())?;
        if let Some(profile) = found {
            item.identity.profile_id = profile;
        }
        if !item.raw.previous_device_id.is_empty() {
            let open: bool = reply(replies.next())?;
            // A visit that started before midnight keeps yesterday's device id.
            if open {
                item.identity.device_id = item.raw.previous_device_id.clone();
            }
        }
    }
    Ok(())
}

/// What the reply of one `apply_state` command is for.
enum Expect {
    Nothing,
    /// The profile's state after the operation of item N.
    Profile(usize),
    /// Session ids, in order, of the listed items.
    Sessions(Vec<usize>),
}

/// Sessions, device → profile links and profile operations, in one round
/// trip; the sessions of the whole batch go to one script call (one per
/// hash slot on a cluster, where a script may only touch one slot).
async fn apply_state(
    shared: &Shared,
    keys: &Keys,
    conn: &mut Conn,
    items: &mut [Item],
) -> Result<(), ProcessError> {
    let settings = &shared.settings;
    let scripts = shared.scripts.read().await.clone();
    let mut commands = SlotCommands::new(conn);
    let mut expects = Vec::new();
    // (item, session key, event time) of the events that may open a session.
    let mut openers = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let (raw, identity) = (&item.raw, &item.identity);
        let project = raw.project_id.as_str();
        if raw.kind == EventKind::Track && !item.ua.is_bot() && identity.session_id.is_empty() {
            let at = analytics_enrich::event_time_ms(raw);
            openers.push((index, keys.session(project, &identity.device_id), at));
        }
        if !identity.profile_id.is_empty() && !item.ua.is_bot() {
            let key = keys.device_profile(project, &identity.device_id);
            let mut set = redis::cmd("SET");
            set.arg(&key)
                .arg(&identity.profile_id)
                .arg("EX")
                .arg(DEVICE_PROFILE_TTL_S);
            commands.push(&key, set);
            expects.push(Expect::Nothing);
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
            expects.push(Expect::Profile(index));
        }
        if let (EventKind::Alias, Some(alias)) = (raw.kind, &raw.alias) {
            let key = keys.alias(project, alias);
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(&identity.profile_id);
            commands.push(&key, set);
            expects.push(Expect::Nothing);
        }
    }
    for group in slot_groups(conn, openers.iter().map(|(_, key, _)| key.as_str())) {
        let events = group
            .iter()
            .map(|&o| {
                let (index, key, at) = &openers[o];
                let item = &items[*index];
                SessionEvent {
                    key,
                    at_ms: *at,
                    candidate: session_id(&item.raw.project_id, &item.identity.device_id, *at),
                }
            })
            .collect();
        let call = SessionsCall {
            timeout_ms: settings.session_timeout_ms,
            grace_ms: settings.session_grace_ms,
            ttl_ms: settings.session_timeout_ms + settings.session_grace_ms + 60_000,
            events,
        };
        commands.push(&openers[group[0]].1, call.command(&scripts.sessions));
        expects.push(Expect::Sessions(
            group.iter().map(|&o| openers[o].0).collect(),
        ));
    }
    let replies = query_by_slot(conn, commands).await?;
    for (expect, value) in expects.into_iter().zip(replies) {
        match expect {
            Expect::Nothing => {}
            Expect::Profile(index) => {
                let pairs: Vec<(String, String)> = reply(Some(value))?;
                let state = ProfileState::from_hash(pairs);
                let item = &mut items[index];
                item.records.push(Record::Profiles(profile_row(
                    &item.raw.project_id,
                    &item.identity.profile_id,
                    &state,
                )));
            }
            Expect::Sessions(indices) => {
                let ids: Vec<String> = reply(Some(value))?;
                if ids.len() != indices.len() {
                    return Err(ProcessError::Reply("a session id is missing".into()));
                }
                for (index, id) in indices.into_iter().zip(ids) {
                    items[index].identity.session_id = id;
                }
            }
        }
    }
    for item in items.iter_mut() {
        let raw = &item.raw;
        if let (EventKind::Alias, Some(alias)) = (raw.kind, &raw.alias) {
            item.records.push(Record::ProfileAliases(AliasRow {
                project_id: raw.project_id.clone(),
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
fn session_id(project: &str, device: &str, at_ms: i64) -> String {
    let mut h = Xxh3::new();
    for part in [project.as_bytes(), device.as_bytes(), &at_ms.to_be_bytes()] {
        h.update(part);
        h.update(&[0]);
    }
    format!("{:032x}", h.digest128())
}

/// Feeds serialized JSON straight into a hash, without a buffer.
struct HashWriter<'a>(&'a mut Xxh3);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
            for (key, value) in &raw.properties {
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

/// The key under which an event is remembered for dedupe, and for events
/// without a client id the key of the same content one second earlier.
/// Keys are 96 bits of xxh3-128: collisions (which would drop an event)
/// are negligible at the window's sizes, at a fraction of SHA-256's cost.
fn dedupe_keys(raw: &RawEvent) -> (String, String) {
    let finish = |h: &Xxh3| format!("{:024x}", h.digest128() >> 32);
    let mut h = Xxh3::new();
    h.update(raw.project_id.as_bytes());
    h.update(&[0]);
    if raw.id_from_client {
        h.update(b"id\0");
        h.update(raw.id.as_bytes());
        return (finish(&h), String::new());
    }
    h.update(b"content\0");
    h.update(raw.ip.as_bytes());
    h.update(&[0]);
    h.update(raw.user_agent.as_bytes());
    h.update(&[0]);
    let _ = serde_json::to_writer(
        HashWriter(&mut h),
        &(
            &raw.kind,
            &raw.name,
            &raw.device_id,
            &raw.profile_id,
            &raw.properties,
            &raw.traits,
            &raw.property,
            &raw.value,
            &raw.alias,
            &raw.client_time_ms,
        ),
    );
    let second = raw.received_at_ms / 1000;
    let key = |s: i64| {
        let mut h = h.clone();
        h.update(&s.to_be_bytes());
        finish(&h)
    };
    (key(second), key(second - 1))
}

async fn commit(
    shared: &Shared,
    keys: &Keys,
    conn: &mut Conn,
    items: &[Item],
    dropped: &[String],
) -> Result<(u64, u64, u64, u64), ProcessError> {
    if items.is_empty() && dropped.is_empty() {
        return Ok((0, 0, 0, 0));
    }
    let window = shared.settings.dedupe_window_ms;
    let bucket_ms = (window / 6).max(1);
    let buckets = keys.dedupe_buckets(now_ms().max(0) as u64 / bucket_ms, 7);
    let scripts = shared.scripts.read().await.clone();
    let dedupe: Vec<(String, String)> = items.iter().map(|item| dedupe_keys(&item.raw)).collect();
    let mut entries: Vec<CommitEntry> = items
        .iter()
        .zip(&dedupe)
        .map(|(item, (key, alt))| CommitEntry {
            entry_id: &item.entry_id,
            dedupe_key: key,
            previous_key: alt,
            records: &item.records,
        })
        .collect();
    // Dropped entries (bots, vanished) are only acknowledged.
    entries.extend(dropped.iter().map(|id| CommitEntry {
        entry_id: id,
        dedupe_key: "",
        previous_key: "",
        records: &[],
    }));
    let call = CommitCall {
        raw: &keys.raw,
        enriched: &keys.enriched,
        buckets: &buckets,
        group: GROUP,
        bucket_ttl_ms: window + bucket_ms,
        max_bundle_records: MAX_BUNDLE_EVENTS,
        max_bundle_bytes: MAX_BUNDLE_BYTES,
        entries,
    };
    let cmd = call.command(&scripts.commit);
    Ok(cmd.query_async(conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawEvent {
        serde_json::from_value(serde_json::json!({
            "id": "e1", "project_id": "p", "kind": "track", "name": "a", "device_id": "d",
            "received_at_ms": 1_767_607_200_500i64, "ip": "1.2.3.4", "user_agent": "ua"
        }))
        .unwrap()
    }

    #[test]
    fn client_ids_dedupe_on_the_id_alone() {
        let mut a = raw();
        a.id_from_client = true;
        let mut b = a.clone();
        b.received_at_ms += 1_800_000;
        b.properties.insert("x".into(), 1.into());
        assert_eq!(dedupe_keys(&a), dedupe_keys(&b));
        assert_eq!(dedupe_keys(&a).1, "");
        b.id = "e2".into();
        assert_ne!(dedupe_keys(&a).0, dedupe_keys(&b).0);
    }

    #[test]
    fn identical_content_within_a_second_shares_a_key() {
        let a = raw();
        let mut b = a.clone();
        b.id = "server-assigned-2".into();
        b.received_at_ms += 700; // next second
        let (ka, _) = dedupe_keys(&a);
        let (kb, alt_b) = dedupe_keys(&b);
        assert_ne!(ka, kb);
        assert_eq!(ka, alt_b, "the later event must find the earlier one");
        let mut c = a.clone();
        c.ip = "5.6.7.8".into();
        assert_ne!(dedupe_keys(&c).0, ka);
        let mut d = a.clone();
        d.received_at_ms += 2_000;
        assert_ne!(dedupe_keys(&d).1, ka);
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
        assert_eq!(session_id("p", "d", 5).len(), 32);
    }
}
