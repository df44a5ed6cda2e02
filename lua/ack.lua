--[[
ack.lua — acknowledge stream entries for a consumer group, and take the events of entries that
held several orders off the partition's count of events beyond one per entry.

reserve.lua appends one entry per call: an entry of n orders adds n - 1 to the metrics hash's
stream_extra_events, which its backlog bound adds to XLEN. The count comes off here, once per
entry, and only for an entry this call acknowledges (XACK answers 1 once): a persister that
acknowledges an entry again after a crash, or one another consumer already acknowledged, takes
nothing off twice.

KEYS[1]  event stream of the partition
KEYS[2]  metrics hash of the partition
ARGV[1]  consumer group
ARGV[2]  m: how many entries below hold several orders
ARGV[3…] m pairs: entry id, its orders beyond the first; then the other entries' ids

Returns the number of entries acknowledged.
]]

local call = redis.call
local stream_key, metrics_key, group = KEYS[1], KEYS[2], ARGV[1]
local multi = tonumber(ARGV[2])
if not multi or multi < 0 or multi % 1 ~= 0 or 2 + 2 * multi > #ARGV then
  return redis.error_reply('ERR ack: malformed arguments')
end

local acknowledged, extra = 0, 0
for index = 3, 2 + 2 * multi, 2 do
  local more = tonumber(ARGV[index + 1])
  if not more or more < 0 or more % 1 ~= 0 then
    return redis.error_reply('ERR ack: malformed count for ' .. ARGV[index])
  end
  if call('XACK', stream_key, group, ARGV[index]) == 1 then
    acknowledged = acknowledged + 1
    extra = extra + more
  end
end
for first = 3 + 2 * multi, #ARGV, 1000 do
  acknowledged = acknowledged + call('XACK', stream_key, group, unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
if extra > 0 then
  -- Never below zero: a count cleared by reserve.lua (an empty stream) stays cleared.
  local left = call('HINCRBY', metrics_key, 'stream_extra_events', -extra)
  if left <= 0 then call('HDEL', metrics_key, 'stream_extra_events') end
end
return acknowledged
