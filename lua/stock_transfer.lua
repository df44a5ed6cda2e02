--[[
stock_transfer.lua — move available units of one SKU from one warehouse to another.

KEYS[1]  event stream of the partition
KEYS[2]  stock hash of the SKU
KEYS[3]  SKU config hash
KEYS[4]  warehouses hash (field warehouse id -> region)
KEYS[5]  sold-out set of the partition: the SKU leaves it when units are added or moved

ARGV[1]  now_ms
ARGV[2]  sku
ARGV[3]  from warehouse id
ARGV[4]  to warehouse id
ARGV[5]  qty (> 0)
ARGV[6]  request_id
ARGV[7]  actor: the API client that asked for the change

Returns {code, available at source}
  code 1 moved   2 unknown sku   3 unknown warehouse   4 not enough available at source
  code 5 would take on hand at the target above ON_HAND_MAX
Mirrored by reservation.outcomes.TransferCode.
Event: k stock_changed, d {request_id, "transfer", movements}, u {actor, "transfer",
{{source, available, reserved, committed, on_hand}, {target, ...}}} (the counters before
the move, for the audit log; mirrored by reservation.records.StockAudit), t now_ms.
]]

local CODE_MOVED, CODE_UNKNOWN_SKU, CODE_UNKNOWN_WAREHOUSE, CODE_INSUFFICIENT, CODE_ABOVE_MAX = 1, 2, 3, 4, 5
local ON_HAND_MAX = 1000000000  -- per (sku, warehouse); mirrored by intake.schemas.STOCK_MAX
local stream_key, stock_key, config_key, warehouses_key, sold_out_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now_ms, sku, source, target = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local qty = tonumber(ARGV[5])
if not now_ms or not qty or qty < 1 or source == target then
  return redis.error_reply('ERR stock_transfer: malformed arguments')
end

if redis.call('EXISTS', config_key) == 0 then return {CODE_UNKNOWN_SKU, 0} end
if redis.call('HEXISTS', warehouses_key, source) == 0 or redis.call('HEXISTS', warehouses_key, target) == 0 then
  return {CODE_UNKNOWN_WAREHOUSE, 0}
end
local available = tonumber(redis.call('HGET', stock_key, 'a:' .. source) or '0')
if available < qty then return {CODE_INSUFFICIENT, available} end
if tonumber(redis.call('HGET', stock_key, 'h:' .. target) or '0') + qty > ON_HAND_MAX then
  return {CODE_ABOVE_MAX, available}
end

local before = {}
for _, warehouse in ipairs({source, target}) do
  local values = redis.call('HMGET', stock_key, 'a:' .. warehouse, 'r:' .. warehouse, 'c:' .. warehouse, 'h:' .. warehouse)
  before[#before + 1] = {warehouse, tonumber(values[1] or '0'), tonumber(values[2] or '0'),
    tonumber(values[3] or '0'), tonumber(values[4] or '0')}
end
for _, warehouse in ipairs({source, target}) do
  redis.call('HSETNX', stock_key, 'r:' .. warehouse, 0)
  redis.call('HSETNX', stock_key, 'c:' .. warehouse, 0)
end
redis.call('HINCRBY', stock_key, 'a:' .. source, -qty)
redis.call('HINCRBY', stock_key, 'h:' .. source, -qty)
redis.call('HINCRBY', stock_key, 'a:' .. target, qty)
redis.call('HINCRBY', stock_key, 'h:' .. target, qty)
redis.call('SREM', sold_out_key, sku)
local movements = {{sku, source, 'transfer', qty, -qty, 0, 0, -qty}, {sku, target, 'transfer', qty, qty, 0, 0, qty}}
redis.call('XADD', stream_key, '*', 'k', 'stock_changed',
  'd', cmsgpack.pack({ARGV[6], 'transfer', movements}),
  'u', cmsgpack.pack({ARGV[7] or '', 'transfer', before}), 't', string.format('%d', now_ms))
return {CODE_MOVED, available - qty}
