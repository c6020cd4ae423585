-- A profile operation, applied once per event id (built by `ProfileCall`).
-- KEYS[1]: profile hash, KEYS[2]: set of applied event ids.
-- ARGV: event id, op (`set` or `add`), time (ms), then for `set`
-- field/value pairs, for `add` one field and the amount.
-- A `set` overrides a field only with a value at least as recent as the
-- one it holds (`t:<field>` keeps its time), so identify calls processed
-- out of order by different partitions still end with the latest value;
-- `add` commutes and needs no such care.
-- Returns the whole profile hash after the operation.
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
