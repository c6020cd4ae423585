-- Commits a batch of one raw partition, atomically (built by `CommitCall`):
-- drops duplicates, appends the output records to the enriched partition
-- and acknowledges the raw entries.
-- KEYS[1]: raw stream, KEYS[2]: enriched stream, KEYS[3]: current dedupe
-- bucket, KEYS[4..]: older buckets still inside the window.
-- ARGV[1]: group, ARGV[2]: bucket TTL (ms), ARGV[3]/ARGV[4]: most records
-- / bytes per enriched entry, then per event: entry id, dedupe key (''
-- for an entry that is only acknowledged), previous-second key (or ''),
-- record count, records.
-- Each bucket is asked about the whole batch in one HMGET, not once per
-- event and bucket (the call overhead was most of the script's time);
-- duplicates inside the batch are caught by `known`, which also takes the
-- keys this batch stores. Records are binary frames that delimit
-- themselves (`analytics_store::decode_bundle`): an entry is several of
-- them, concatenated.
-- Returns {stored, duplicates, records, entries written}.
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
