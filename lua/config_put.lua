--[[
config_put.lua — change one configuration hash and record the change as an event.

Warehouses, dispatch rules, SKUs and the customer blocklist are hashes; changing
one and appending its event happen together, so Postgres sees every change. The
event carries who asked and what the hash held before, read in this same call, so
the audit log's "before" is exactly what the change replaced.

KEYS[1]  event stream of the partition
KEYS[2]  the hash to change

ARGV[1]  now_ms
ARGV[2]  event kind (e.g. "sku_put")
ARGV[3]  event data (msgpack, encoded by the caller)
ARGV[4]  actor: the API client that asked for the change
ARGV[5]  operation: "merge" (HSET the pairs) | "replace" (DEL, then HSET the pairs)
         | "delete" (HDEL the fields)
ARGV[6…] field, value pairs ("merge", "replace") or fields ("delete")

Returns 1.
Event: k kind, d data, u {actor, operation, before}, t now_ms, where before is a flat
field, value list of what the hash held: every field for "replace", the named fields
that existed for "merge" and "delete". Mirrored by reservation.records.ConfigAudit.
]]

local stream_key, hash_key = KEYS[1], KEYS[2]
local now_ms, kind, data, actor, operation = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not now_ms or #ARGV < 6 then return redis.error_reply('ERR config_put: malformed arguments') end

local rest = {}
for index = 6, #ARGV do rest[#rest + 1] = ARGV[index] end
local named, step = {}, 2
if operation == 'delete' then step = 1 end
for index = 1, #rest, step do named[#named + 1] = rest[index] end

local before = {}
if operation == 'replace' then
  before = redis.call('HGETALL', hash_key)
else
  local values = redis.call('HMGET', hash_key, unpack(named))
  for index, field in ipairs(named) do
    if values[index] then
      before[#before + 1] = field
      before[#before + 1] = values[index]
    end
  end
end

if operation == 'delete' then
  redis.call('HDEL', hash_key, unpack(rest))
elseif operation == 'merge' or operation == 'replace' then
  if #rest % 2 ~= 0 then return redis.error_reply('ERR config_put: odd field/value list') end
  if operation == 'replace' then redis.call('DEL', hash_key) end
  redis.call('HSET', hash_key, unpack(rest))
else
  return redis.error_reply('ERR config_put: unknown operation ' .. tostring(operation))
end
redis.call('XADD', stream_key, '*', 'k', kind, 'd', data, 'u', cmsgpack.pack({actor, operation, before}),
  't', string.format('%d', now_ms))
return 1
