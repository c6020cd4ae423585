-- Commits a batch of one raw partition, atomically (built by `CommitCall`),
-- for the member that holds the partition's lease: appends the output
-- bundles to the enriched partition, writes the partition state's
-- changelog (new dedupe keys, changed and expired sessions) and
-- acknowledges the raw entries. Duplicates were already dropped by the
-- owner, which holds the dedupe window in memory.
-- KEYS[1]: raw stream, KEYS[2]: enriched stream, KEYS[3]: the lease,
-- KEYS[4]: current dedupe bucket, KEYS[5]: the sessions hash.
-- ARGV[1]: group, ARGV[2]: lease token, ARGV[3]: bucket TTL (ms), then
-- the counts of bundles, dedupe keys, changed sessions, expired sessions
-- and entry ids, then those lists in that order (a changed session is a
-- field and its value).
-- A member whose lease has passed to another commits nothing: the reply
-- is an error starting with LEASE.
if redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return redis.error_reply('LEASE the partition is owned by another member')
end
local CHUNK = 1000
local bundles, keys, sessions = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local expired, ids = tonumber(ARGV[7]), tonumber(ARGV[8])
local at = 9
for i = at, at + bundles - 1 do
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[i])
end
at = at + bundles
-- Runs `command key ...` over `n` arguments from `at`, a chunk at a time;
-- `pair` builds field/value pairs from bare fields.
local function chunked(command, key, n, pair, extra)
  local from = at
  while from < at + n do
    local to = math.min(from + CHUNK - 1, at + n - 1)
    local args = {}
    for i = from, to do
      args[#args + 1] = ARGV[i]
      if pair then args[#args + 1] = '' end
    end
    if extra then redis.call(command, key, extra, unpack(args)) else redis.call(command, key, unpack(args)) end
    from = to + 1
  end
  at = at + n
end
chunked('HSET', KEYS[4], keys, true)
if keys > 0 then redis.call('PEXPIRE', KEYS[4], ARGV[3]) end
chunked('HSET', KEYS[5], 2 * sessions, false)
chunked('HDEL', KEYS[5], expired, false)
chunked('XACK', KEYS[1], ids, false, ARGV[1])
return 1
