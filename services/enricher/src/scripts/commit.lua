-- Commits a batch of one raw partition, atomically (built by `CommitCall`),
-- for the member that holds the partition's lease: appends the output
-- bundles to the enriched partition, writes the partition state's
-- changelog and acknowledges the raw entries. The changelog is bytes Redis
-- only copies, no field per event: the keys of events with a client id
-- appended to the current id bucket's log; those of events without one
-- appended to their receive-time buckets' logs (the buckets that left the
-- owner's window deleted, the newest one recorded in the head key); the
-- changed sessions appended to the sessions log, or a snapshot in its
-- place. Duplicates were already dropped by the owner, which holds the
-- dedupe windows in memory.
-- KEYS[1]: raw stream, KEYS[2]: enriched stream, KEYS[3]: the lease,
-- KEYS[4]: current id bucket's log, KEYS[5]: the sessions log,
-- KEYS[6]: the sessions hash of the earlier layout (deleted by a snapshot),
-- KEYS[7]: the content head, then the content buckets' logs to append to,
-- then those to delete.
-- ARGV[1]: group, ARGV[2]: lease token, ARGV[3]: id bucket TTL (ms),
-- ARGV[4]: sessions log TTL (ms), ARGV[5]: 'append' or 'snapshot',
-- ARGV[6]: id keys, ARGV[7]: session records, ARGV[8]: content TTL (ms),
-- ARGV[9]: the newest content bucket, ARGV[10]: content logs appended to,
-- ARGV[11]: content logs deleted, ARGV[12]: the count of bundles, then the
-- bundles (compressed: the `z` field), then each appended content log's
-- keys, then the raw entry ids.
-- A member whose lease has passed to another commits nothing: the reply
-- is an error starting with LEASE.
if redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return redis.error_reply('LEASE the partition is owned by another member')
end
local appended, deleted, bundles = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local at = 13
for i = at, at + bundles - 1 do
  redis.call('XADD', KEYS[2], '*', 'z', ARGV[i])
end
at = at + bundles
if #ARGV[6] > 0 then
  redis.call('APPEND', KEYS[4], ARGV[6])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
for i = 0, appended - 1 do
  redis.call('APPEND', KEYS[8 + i], ARGV[at + i])
  redis.call('PEXPIRE', KEYS[8 + i], ARGV[8])
end
at = at + appended
for i = 0, deleted - 1 do
  redis.call('DEL', KEYS[8 + appended + i])
end
if appended > 0 then
  redis.call('SET', KEYS[7], ARGV[9], 'PX', ARGV[8])
end
-- Every session in the log was touched at or before this commit, so once
-- the log has not been written for a session lifetime all of it has expired.
if ARGV[5] == 'snapshot' then
  redis.call('DEL', KEYS[6])
  if #ARGV[7] > 0 then
    redis.call('SET', KEYS[5], ARGV[7], 'PX', ARGV[4])
  else
    redis.call('DEL', KEYS[5])
  end
elseif #ARGV[7] > 0 then
  redis.call('APPEND', KEYS[5], ARGV[7])
  redis.call('PEXPIRE', KEYS[5], ARGV[4])
end
local CHUNK = 1000
local from = at
while from <= #ARGV do
  local to = math.min(from + CHUNK - 1, #ARGV)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, from, to))
  from = to + 1
end
return 1
