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
/// a slot, so the caller would group them per slot.)
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
/// ARGV[1]: group, ARGV[2]: bucket TTL (ms), then per entry:
/// entry id, dedupe key, previous-second key (or ''), record count, records.
/// Returns {stored, duplicates}.
pub const COMMIT: &str = r#"
local stored, dups = 0, 0
local ids = {}
local i = 3
while i <= #ARGV do
  local entry, key, alt, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local dup = false
  for b = 3, #KEYS do
    if redis.call('HEXISTS', KEYS[b], key) == 1 or (alt ~= '' and redis.call('HEXISTS', KEYS[b], alt) == 1) then
      dup = true
      break
    end
  end
  if dup then
    dups = dups + 1
  else
    redis.call('HSET', KEYS[3], key, 1)
    for r = 0, n - 1 do redis.call('XADD', KEYS[2], '*', 'e', ARGV[i + r]) end
    stored = stored + 1
  end
  i = i + n
  ids[#ids + 1] = entry
  if #ids == 500 then
    redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
    ids = {}
  end
end
if #ids > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)) end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {stored, dups}
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
