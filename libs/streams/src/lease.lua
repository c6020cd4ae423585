-- A partition's lease (see `ownership.rs`). KEYS[1]: the lease.
-- ARGV[1]: the member's token, ARGV[2]: lifetime (ms), ARGV[3]: `acquire`
-- (take it when free, or extend it when already held), `renew` (extend it
-- only when held) or `release` (drop it only when held).
-- Returns 1 when the member holds (or, for `release`, held) the lease.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  if ARGV[3] == 'release' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return 1
end
if not holder and ARGV[3] == 'acquire' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
