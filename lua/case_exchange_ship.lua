--[[
case_exchange_ship.lua — the replacement of an exchange case leaves its warehouses.

Its committed units leave the stock (committed and on hand drop, a `ship` movement
each), the case succeeds, and the order returns to the status it had before the case
(previous_status), back on that status's timer (see case_review.lua).

KEYS[1]  event stream of the partition
KEYS[2]  confirm-due sorted set
KEYS[3]  window-due sorted set
KEYS[4]  order document
KEYS[5]  case document
KEYS[6…] stock hash of each SKU named in ARGV[5…], in that order

ARGV[1]  now_ms
ARGV[2]  carrier
ARGV[3]  tracking_number
ARGV[4]  sku count S, then S skus (every SKU of the case)

Returns {code, case document or "", order document or ""}
  code 1 shipped   2 case not found   3 the case has no replacement to ship (unchanged)
Mirrored by reservation.outcomes.CaseCode. Layouts: case_open.lua, ship.lua.
Event: k exchange_shipped, o order, c case, m movements, t now_ms.
]]

local CODE_DONE, CODE_NOT_FOUND, CODE_NOT_ALLOWED = 1, 2, 3
local STATUS, VERSION, UPDATED = 2, 18, 19
local C_STATUS, C_UPDATED, C_VERSION, C_REPLACEMENT, C_CARRIER, C_TRACKING = 5, 10, 11, 16, 19, 20

--!include order_resume

local stream_key, confirm_key, window_key, order_key, case_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now_ms, carrier, tracking_number, sku_count = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
if not now_ms or not sku_count or #ARGV ~= 4 + sku_count or #KEYS ~= 5 + sku_count then
  return redis.error_reply('ERR case_exchange_ship: malformed arguments')
end
local stock_keys = {}
for index = 1, sku_count do stock_keys[ARGV[4 + index]] = KEYS[5 + index] end

local case_packed = redis.call('GET', case_key)
if not case_packed then return {CODE_NOT_FOUND, '', ''} end
local case = cmsgpack.unpack(case_packed)
local packed = redis.call('GET', order_key)
if not packed then return redis.error_reply('ERR case_exchange_ship: the order of a case is missing') end
local document = cmsgpack.unpack(packed)
if case[C_STATUS] ~= 'exchange_shipping' then return {CODE_NOT_ALLOWED, case_packed, packed} end
for _, line in ipairs(case[C_REPLACEMENT]) do
  if not stock_keys[line[1]] then return redis.error_reply('ERR case_exchange_ship: stock key of ' .. line[1] .. ' not declared') end
end

local movements = {}
for _, line in ipairs(case[C_REPLACEMENT]) do
  local sku, warehouse, qty = line[1], line[2], line[3]
  redis.call('HINCRBY', stock_keys[sku], 'c:' .. warehouse, -qty)
  redis.call('HINCRBY', stock_keys[sku], 'h:' .. warehouse, -qty)
  movements[#movements + 1] = {sku, warehouse, 'ship', qty, 0, 0, -qty, -qty}
end
case[C_STATUS], case[C_CARRIER], case[C_TRACKING] = 'succeeded', carrier, tracking_number
case[C_VERSION] = case[C_VERSION] + 1
case[C_UPDATED] = now_ms
resume_previous_status(document, confirm_key, window_key)
document[VERSION] = document[VERSION] + 1
document[UPDATED] = now_ms
case_packed = cmsgpack.pack(case)
packed = cmsgpack.pack(document)
redis.call('SET', case_key, case_packed)
redis.call('SET', order_key, packed)
redis.call('XADD', stream_key, '*', 'k', 'exchange_shipped', 'o', packed, 'c', case_packed,
  'm', cmsgpack.pack(movements), 't', string.format('%d', now_ms))
return {CODE_DONE, case_packed, packed}
