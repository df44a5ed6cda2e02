--[[
config_put.lua — change one configuration hash and record the change as an event.

Warehouses, dispatch rules, SKUs and the customer blocklist are hashes; changing
one and appending its event happen together, so Postgres sees every change.

KEYS[1]  event stream of the partition
KEYS[2]  the hash to change

ARGV[1]  now_ms
ARGV[2]  event kind (e.g. "sku_put")
ARGV[3]  event data (msgpack, encoded by the caller)
ARGV[4]  operation: "merge" (HSET the pairs) | "replace" (DEL, then HSET the pairs)
         | "delete" (HDEL the fields)
ARGV[5…] field, value pairs ("merge", "replace") or fields ("delete")

Returns 1.
]]

local stream_key, hash_key = KEYS[1], KEYS[2]
local now_ms, kind, data, operation = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
if not now_ms or #ARGV < 5 then return redis.error_reply('ERR config_put: malformed arguments') end

local rest = {}
for index = 5, #ARGV do rest[#rest + 1] = ARGV[index] end
if operation == 'delete' then
  redis.call('HDEL', hash_key, unpack(rest))
elseif operation == 'merge' or operation == 'replace' then
  if #rest % 2 ~= 0 then return redis.error_reply('ERR config_put: odd field/value list') end
  if operation == 'replace' then redis.call('DEL', hash_key) end
  redis.call('HSET', hash_key, unpack(rest))
else
  return redis.error_reply('ERR config_put: unknown operation ' .. tostring(operation))
end
redis.call('XADD', stream_key, '*', 'k', kind, 'd', data, 't', string.format('%d', now_ms))
return 1
