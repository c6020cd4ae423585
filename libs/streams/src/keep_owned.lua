-- For each id: if the consumer still holds it, reset its idle time (so no
-- other consumer claims it) and return it; an id another consumer has
-- claimed meanwhile is left alone and not returned (called by `keep_owned`).
-- KEYS[1]: the stream. ARGV[1]: group, ARGV[2]: consumer, ARGV[3..]: ids.
local owned = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    owned[#owned + 1] = ARGV[i]
  end
end
return owned
