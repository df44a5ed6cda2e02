--[[
stock_adjust.lua — change the units on hand of one SKU in one warehouse.

Mode "set" is a stocktake: on hand becomes ARGV[5], optionally only if it is
still ARGV[6] (compare-and-set). Mode "delta" adds ARGV[5] (negative removes).
The change lands on available; on hand never drops below what is reserved and
committed, so no held or sold unit disappears.

KEYS[1]  event stream of the partition
KEYS[2]  stock hash of the SKU
KEYS[3]  SKU config hash
KEYS[4]  warehouses hash (field warehouse id -> region)
KEYS[5]  sold-out set of the partition: the SKU leaves it when units are added or moved

ARGV[1]  now_ms
ARGV[2]  mode: "set" | "delta"
ARGV[3]  sku
ARGV[4]  warehouse_id
ARGV[5]  on_hand (set) or delta (delta)
ARGV[6]  expected on_hand for compare-and-set, or "" for none
ARGV[7]  reason
ARGV[8]  request_id
ARGV[9]  actor: the API client that asked for the change

Returns {code, available, reserved, committed, on_hand}
  code 1 changed   2 unknown sku   3 unknown warehouse
  code 4 compare-and-set failed (counters are the current ones)
  code 5 would take on hand below reserved + committed (counters are the current ones)
  code 6 would take on hand above ON_HAND_MAX (counters are the current ones)
Mirrored by reservation.outcomes.StockCode.
Event: k stock_changed, d {request_id, reason, movements}, u {actor, mode, {{warehouse,
available, reserved, committed, on_hand}}} (the counters before the change, for the audit
log; mirrored by reservation.records.StockAudit), t now_ms.
]]

local CODE_CHANGED, CODE_UNKNOWN_SKU, CODE_UNKNOWN_WAREHOUSE, CODE_CONFLICT, CODE_BELOW_HELD = 1, 2, 3, 4, 5
local CODE_ABOVE_MAX = 6
local ON_HAND_MAX = 1000000000  -- per (sku, warehouse); mirrored by intake.schemas.STOCK_MAX
local stream_key, stock_key, config_key, warehouses_key, sold_out_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now_ms, mode, sku, warehouse = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local value, expected = tonumber(ARGV[5]), ARGV[6]
if not now_ms or not value or (mode ~= 'set' and mode ~= 'delta') then
  return redis.error_reply('ERR stock_adjust: malformed arguments')
end

local function counters()
  local values = redis.call('HMGET', stock_key, 'a:' .. warehouse, 'r:' .. warehouse,
    'c:' .. warehouse, 'h:' .. warehouse)
  return {tonumber(values[1] or '0'), tonumber(values[2] or '0'),
    tonumber(values[3] or '0'), tonumber(values[4] or '0')}
end

if redis.call('EXISTS', config_key) == 0 then return {CODE_UNKNOWN_SKU, 0, 0, 0, 0} end
if redis.call('HEXISTS', warehouses_key, warehouse) == 0 then return {CODE_UNKNOWN_WAREHOUSE, 0, 0, 0, 0} end
local current = counters()
local code = CODE_CHANGED
if expected ~= '' and tonumber(expected) ~= current[4] then code = CODE_CONFLICT end
local delta = value
if mode == 'set' then delta = value - current[4] end
if code == CODE_CHANGED and current[1] + delta < 0 then code = CODE_BELOW_HELD end
if code == CODE_CHANGED and current[4] + delta > ON_HAND_MAX then code = CODE_ABOVE_MAX end
if code ~= CODE_CHANGED or delta == 0 then
  return {code, current[1], current[2], current[3], current[4]}
end

redis.call('HINCRBY', stock_key, 'a:' .. warehouse, delta)
redis.call('HINCRBY', stock_key, 'h:' .. warehouse, delta)
if delta > 0 then redis.call('SREM', sold_out_key, sku) end
redis.call('HSETNX', stock_key, 'r:' .. warehouse, 0)
redis.call('HSETNX', stock_key, 'c:' .. warehouse, 0)
local movements = {{sku, warehouse, 'adjust', math.abs(delta), delta, 0, 0, delta}}
redis.call('XADD', stream_key, '*', 'k', 'stock_changed',
  'd', cmsgpack.pack({ARGV[8], ARGV[7], movements}),
  'u', cmsgpack.pack({ARGV[9] or '', mode, {{warehouse, current[1], current[2], current[3], current[4]}}}),
  't', string.format('%d', now_ms))
local after = counters()
return {code, after[1], after[2], after[3], after[4]}
