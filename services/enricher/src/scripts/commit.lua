-- Commits a batch of one raw partition, atomically (built by `CommitCall`),
-- for the member that holds the partition's lease: appends the output
-- bundles to the enriched partition, writes the partition state's
-- changelog (the batch's dedupe keys appended to the current bucket's log,
-- the changed sessions appended to the sessions log or a snapshot in its
-- place) and acknowledges the raw entries. Duplicates were already dropped
-- by the owner, which holds the dedupe window in memory. The changelog is
-- bytes Redis only copies: no field per event.
-- KEYS[1]: raw stream, KEYS[2]: enriched stream, KEYS[3]: the lease,
-- KEYS[4]: current dedupe bucket's log, KEYS[5]: the sessions log,
-- KEYS[6]: the sessions hash of the earlier layout (deleted by a snapshot).
-- ARGV[1]: group, ARGV[2]: lease token, ARGV[3]: bucket TTL (ms),
-- ARGV[4]: sessions log TTL (ms), ARGV[5]: 'append' or 'snapshot',
-- ARGV[6]: dedupe keys, ARGV[7]: session records, ARGV[8]: the count of
-- bundles, then the bundles (compressed: the `z` field), then the raw
-- entry ids.
-- A member whose lease has passed to another commits nothing: the reply
-- is an error starting with LEASE.
if redis.call('GET', KEYS[3]) ~= ARGV[2] then
  return redis.error_reply('LEASE the partition is owned by another member')
end
local bundles = tonumber(ARGV[8])
for i = 9, 8 + bundles do
  redis.call('XADD', KEYS[2], '*', 'z', ARGV[i])
end
if #ARGV[6] > 0 then
  redis.call('APPEND', KEYS[4], ARGV[6])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
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
local from = 9 + bundles
while from <= #ARGV do
  local to = math.min(from + CHUNK - 1, #ARGV)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, from, to))
  from = to + 1
end
return 1
