--[[
keys_exist.lua — which of the given keys exist, in one call.

Used before a sold-out short-circuit: a request whose idempotency key already holds
a record must be replayed by reserve.lua, never refused.

KEYS[1…] keys to look up (all in one partition)
ARGV     none

Returns one integer per key, in order: 1 exists, 0 does not.
]]

local found = {}
for index, key in ipairs(KEYS) do found[index] = redis.call('EXISTS', key) end
return found
