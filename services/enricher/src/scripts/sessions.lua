-- Sessions of a batch of events, in order (built by `SessionsCall`).
-- KEYS[i]: the session hash of event i's device.
-- ARGV: timeout (ms), grace (ms), TTL (ms), then per event its time (ms)
-- and the id a new session would get.
-- An event joins the open session when it is within `timeout` after its
-- last event and not more than `grace` before its start (late arrivals);
-- otherwise it starts a new one. Events far older than the open session
-- get a session of their own without disturbing it.
-- Returns the session id of each event.
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
