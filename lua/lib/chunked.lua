-- chunked.lua — one command over a long list of values, in calls of at most 1000 values (Lua's
-- unpack takes a bounded number; an even size keeps MSET's key/value pairs together). key: the
-- command's key before the values (ZADD, ZREM, SREM), or nil (MSET). Spliced in by
-- reservation/scripts.py; used by reserve.lua and cancel.lua for their end-of-batch writes.
local function call_chunked(command, key, values)
  for first = 1, #values, 1000 do
    local last = math.min(first + 999, #values)
    if key then
      redis.call(command, key, unpack(values, first, last))
    else
      redis.call(command, unpack(values, first, last))
    end
  end
end
