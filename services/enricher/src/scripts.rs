//! Lua scripts that keep the enricher's shared state consistent when
//! several enricher processes work on the same devices and profiles.
//! Each script touches keys of one hash tag only (one cluster slot).

use analytics_streams::Conn;

/// Sessions of a batch of events, in order. KEYS[i]: the session hash of
/// event i's device. ARGV: timeout (ms), grace (ms), TTL (ms), then per
/// event its time (ms) and the id a new session would get.
/// An event joins the open session when it is within `timeout` after its
/// last event and not more than `grace` before its start (late arrivals);
/// otherwise it starts a new one. Events far older than the open session
/// get a session of their own without disturbing it.
/// (One call per batch; on a Redis Cluster the keys of one call must share
/// a slot, and the caller groups them per slot.)
pub const SESSIONS: &str = r#"
local timeout = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local ts = tonumber(ARGV[2 + 2 * i])
  local candidate = ARGV[3 + 2 * i]
  local s = redis.call('HMGET', key, 'id', 'start', 'last')
  local id = nil
  if s[1] then
    local start = tonumber(s[2])
    local last = tonumber(s[3])
    if ts <= last + timeout and ts >= start - grace then
      if ts > last then redis.call('HSET', key, 'last', ARGV[2 + 2 * i]) end
      if ts < start then redis.call('HSET', key, 'start', ARGV[2 + 2 * i]) end
      redis.call('PEXPIRE', key, ARGV[3])
      id = s[1]
    elseif ts < start - grace then
      id = candidate
    end
  end
  if not id then
    redis.call('HSET', key, 'id', candidate, 'start', ARGV[2 + 2 * i], 'last', ARGV[2 + 2 * i])
    redis.call('PEXPIRE', key, ARGV[3])
    id = candidate
  end
  out[i] = id
end
return out
"#;

/// A profile operation, applied once per event id.
/// KEYS[1]: profile hash, KEYS[2]: set of applied event ids.
/// ARGV: event id, op (`set` or `add`), time (ms), then for `set`
/// field/value pairs, for `add` one field and the amount.
/// A `set` overrides a field only with a value at least as recent as the
/// one it holds (`t:<field>` keeps its time), so identify calls processed
/// out of order by different partitions still end with the latest value;
/// `add` commutes and needs no such care.
/// Returns the whole profile hash after the operation.
pub const PROFILE: &str = r#"
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('EXPIRE', KEYS[2], 604800)
  local ts = tonumber(ARGV[3])
  local created = redis.call('HGET', KEYS[1], 'created')
  if not created or ts < tonumber(created) then redis.call('HSET', KEYS[1], 'created', ARGV[3]) end
  if ARGV[2] == 'set' then
    for i = 4, #ARGV, 2 do
      local at = tonumber(redis.call('HGET', KEYS[1], 't:' .. ARGV[i]) or '0')
      if ts >= at then
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1], 't:' .. ARGV[i], ARGV[3])
      end
    end
  else
    local ok = redis.pcall('HINCRBYFLOAT', KEYS[1], ARGV[4], ARGV[5])
    if type(ok) == 'table' and ok.err then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) end
  end
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return redis.call('HGETALL', KEYS[1])
"#;

/// Commits a batch of one raw partition, atomically: drops duplicates,
/// appends the output records to the enriched partition and acknowledges
/// the raw entries.
/// KEYS[1]: raw stream, KEYS[2]: enriched stream, KEYS[3]: current dedupe
/// bucket, KEYS[4..]: older buckets still inside the window.
/// ARGV[1]: group, ARGV[2]: bucket TTL (ms), ARGV[3]/ARGV[4]: most records
/// / bytes per enriched entry, then per event: entry id, dedupe key (''
/// for an entry that is only acknowledged), previous-second key (or ''),
/// record count, records.
/// Each bucket is asked about the whole batch in one HMGET, not once per
/// event and bucket (the call overhead was most of the script's time);
/// duplicates inside the batch are caught by `known`, which also takes the
/// keys this batch stores. Records are binary frames that delimit
/// themselves (`analytics_store::decode_bundle`): an entry is several of
/// them, concatenated.
/// Returns {stored, duplicates, records, entries written}.
pub const COMMIT: &str = r#"
local CHUNK = 1000
local FIRST = 5
local max_records, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = {}
local i = FIRST
while i <= #ARGV do
  if ARGV[i + 1] ~= '' then fields[#fields + 1] = ARGV[i + 1] end
  if ARGV[i + 2] ~= '' then fields[#fields + 1] = ARGV[i + 2] end
  i = i + 4 + tonumber(ARGV[i + 3])
end
local known = {}
for b = 3, #KEYS do
  for from = 1, #fields, CHUNK do
    local to = math.min(from + CHUNK - 1, #fields)
    local found = redis.call('HMGET', KEYS[b], unpack(fields, from, to))
    for j = from, to do
      if found[j - from + 1] then known[fields[j]] = true end
    end
  end
end
local bundle, bytes, records, entries = {}, 0, 0, 0
local function write()
  redis.call('XADD', KEYS[2], '*', 'e', table.concat(bundle))
  bundle, bytes, entries = {}, 0, entries + 1
end
local stored, dups = 0, 0
local new, ids = {}, {}
i = FIRST
while i <= #ARGV do
  local entry, key, alt, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if key ~= '' then
    if known[key] or (alt ~= '' and known[alt]) then
      dups = dups + 1
    else
      known[key] = true
      new[#new + 1] = key
      new[#new + 1] = 1
      for r = i + 4, i + 3 + n do
        local record = ARGV[r]
        if #bundle >= max_records or (#bundle > 0 and bytes + #record > max_bytes) then write() end
        bundle[#bundle + 1] = record
        bytes = bytes + #record
        records = records + 1
      end
      stored = stored + 1
    end
  end
  i = i + 4 + n
  if ids[#ids] ~= entry then ids[#ids + 1] = entry end
end
if #bundle > 0 then write() end
for from = 1, #new, CHUNK do
  redis.call('HSET', KEYS[3], unpack(new, from, math.min(from + CHUNK - 1, #new)))
end
for from = 1, #ids, CHUNK do
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, from, math.min(from + CHUNK - 1, #ids)))
end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {stored, dups, records, entries}
"#;

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
