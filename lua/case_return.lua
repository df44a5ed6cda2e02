--[[
case_return.lua — the customer's returned units arrived at a warehouse.

Unless marked damaged, they are restocked there: on hand and available rise (a
`restock` movement each), and the SKU leaves the sold-out set. A return_refund case
then awaits its refund (its refund record is created, pending). An exchange case
takes its replacement now, as an order would: each item whole from the first
warehouse of the order's region (dispatch order) that has it above the SKU's safety
stock, reserved and committed at once (a `reserve` and a `commit` movement); if any
item does not fit, nothing is taken and the case is exchange_sold_out, naming the SKU
(it can then be refunded instead).

KEYS[1]  event stream of the partition
KEYS[2]  sold-out set of the partition
KEYS[3]  warehouses hash (warehouse id -> region)
KEYS[4]  dispatch hash (region -> warehouse ids in priority order)
KEYS[5]  order document
KEYS[6]  case document
KEYS[7…] for each SKU named in ARGV[5…], in that order: its stock hash, then its config hash

ARGV[1]  now_ms
ARGV[2]  warehouse_id the units arrived at
ARGV[3]  damaged: "1" | "0"
ARGV[4]  sku count S, then S skus (every SKU of the case)

Returns {code, case document or "", order document or ""}
  code 1 received   2 case not found   3 the case is not awaiting a return (unchanged)
  code 4 unknown warehouse (unchanged)
Mirrored by reservation.outcomes.CaseCode. Layouts: case_open.lua, ship.lua.
Event: k refund_requested (a return_refund case: its refund is pending), else return_received;
o order, c case, m movements, t now_ms.
]]

local CODE_DONE, CODE_NOT_FOUND, CODE_NOT_ALLOWED, CODE_UNKNOWN_WAREHOUSE = 1, 2, 3, 4
local REGION, VERSION, UPDATED = 4, 18, 19
local C_STATUS, C_ITEMS, C_UPDATED, C_VERSION, C_REFUND_ID, C_REFUND_STATUS = 5, 6, 10, 11, 12, 13
local C_WAREHOUSE, C_DAMAGED, C_REPLACEMENT, C_SOLD_OUT = 14, 15, 16, 17

local stream_key, sold_out_key, warehouses_key, dispatch_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local order_key, case_key = KEYS[5], KEYS[6]
local now_ms, warehouse_id, damaged, sku_count = tonumber(ARGV[1]), ARGV[2], ARGV[3] == '1', tonumber(ARGV[4])
if not now_ms or not sku_count or #ARGV ~= 4 + sku_count or #KEYS ~= 6 + 2 * sku_count then
  return redis.error_reply('ERR case_return: malformed arguments')
end
local stock_keys, config_keys = {}, {}
for index = 1, sku_count do
  stock_keys[ARGV[4 + index]] = KEYS[5 + 2 * index]
  config_keys[ARGV[4 + index]] = KEYS[6 + 2 * index]
end

local case_packed = redis.call('GET', case_key)
if not case_packed then return {CODE_NOT_FOUND, '', ''} end
local case = cmsgpack.unpack(case_packed)
local packed = redis.call('GET', order_key)
if not packed then return redis.error_reply('ERR case_return: the order of a case is missing') end
local document = cmsgpack.unpack(packed)
local status = case[C_STATUS]
if status ~= 'awaiting_return' and status ~= 'awaiting_exchange_return' then
  return {CODE_NOT_ALLOWED, case_packed, packed}
end
if not redis.call('HGET', warehouses_key, warehouse_id) then return {CODE_UNKNOWN_WAREHOUSE, case_packed, packed} end
for _, item in ipairs(case[C_ITEMS]) do
  if not stock_keys[item[1]] then return redis.error_reply('ERR case_return: keys of ' .. item[1] .. ' not declared') end
end

local movements = {}
if not damaged then
  for _, item in ipairs(case[C_ITEMS]) do
    local sku, qty = item[1], item[2]
    redis.call('HINCRBY', stock_keys[sku], 'h:' .. warehouse_id, qty)
    redis.call('HINCRBY', stock_keys[sku], 'a:' .. warehouse_id, qty)
    redis.call('SREM', sold_out_key, sku)
    movements[#movements + 1] = {sku, warehouse_id, 'restock', qty, qty, 0, 0, qty}
  end
end
case[C_WAREHOUSE], case[C_DAMAGED] = warehouse_id, damaged

if status == 'awaiting_return' then
  case[C_STATUS], case[C_REFUND_ID], case[C_REFUND_STATUS] = 'awaiting_refund', case[1] .. '-refund', 'pending'
else
  -- The replacement: every item whole in one warehouse, or nothing.
  local rule = redis.call('HGET', dispatch_key, document[REGION]) or ''
  local chosen, short = {}, nil
  for _, item in ipairs(case[C_ITEMS]) do
    local sku, qty = item[1], item[2]
    local safety = tonumber(redis.call('HGET', config_keys[sku], 'safety_stock') or '0') or 0
    for warehouse in string.gmatch(rule, '[^,]+') do
      if not chosen[sku] then
        local available = tonumber(redis.call('HGET', stock_keys[sku], 'a:' .. warehouse) or '0')
        if available - safety >= qty then chosen[sku] = warehouse end
      end
    end
    if not chosen[sku] and not short then short = sku end
  end
  if short then
    case[C_STATUS], case[C_SOLD_OUT] = 'exchange_sold_out', short
  else
    local replacement = {}
    for _, item in ipairs(case[C_ITEMS]) do
      local sku, qty, warehouse = item[1], item[2], chosen[item[1]]
      redis.call('HINCRBY', stock_keys[sku], 'a:' .. warehouse, -qty)
      redis.call('HINCRBY', stock_keys[sku], 'c:' .. warehouse, qty)
      movements[#movements + 1] = {sku, warehouse, 'reserve', qty, -qty, qty, 0, 0}
      movements[#movements + 1] = {sku, warehouse, 'commit', qty, 0, -qty, qty, 0}
      replacement[#replacement + 1] = {sku, warehouse, qty}
    end
    case[C_STATUS], case[C_REPLACEMENT] = 'exchange_shipping', replacement
  end
end
case[C_VERSION] = case[C_VERSION] + 1
case[C_UPDATED] = now_ms
case_packed = cmsgpack.pack(case)
redis.call('SET', case_key, case_packed)
document[VERSION] = document[VERSION] + 1  -- the order's row follows every step of its case
document[UPDATED] = now_ms
packed = cmsgpack.pack(document)
redis.call('SET', order_key, packed)
local kind_of_event = case[C_REFUND_STATUS] == 'pending' and 'refund_requested' or 'return_received'
redis.call('XADD', stream_key, '*', 'k', kind_of_event, 'o', packed, 'c', case_packed,
  'm', cmsgpack.pack(movements), 't', string.format('%d', now_ms))
return {CODE_DONE, case_packed, packed}
