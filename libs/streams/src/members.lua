-- A member's heartbeat (see `ownership.rs`). KEYS[1]: the group's members
-- (sorted set scored by the last heartbeat, in Redis's own clock, so the
-- members' clocks need not agree). ARGV[1]: the member, ARGV[2]: how long
-- (ms) a member stays without a heartbeat, ARGV[3]: `beat` or `leave`.
-- Returns the live members.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
