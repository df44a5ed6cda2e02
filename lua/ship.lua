--[[
ship.lua — one shipment of a paid order leaves its warehouse.

The shipment's units leave the stock: committed and on hand both drop by its
quantities (a `ship` movement each). The shipment is recorded with its carrier and
tracking number. When it was the order's last unshipped shipment the order becomes
`shipped` and its automatic confirmation of receipt is scheduled. Shipping a
shipment twice changes nothing.

KEYS[1]  event stream of the partition
KEYS[2]  confirm-due sorted set of the partition (order id scored by auto-confirmation ms)
KEYS[3]  order document
KEYS[4…] stock hash of each SKU named in ARGV[8…], in that order

ARGV[1]  now_ms
ARGV[2]  order_id
ARGV[3]  shipment_id
ARGV[4]  carrier
ARGV[5]  tracking_number
ARGV[6]  auto_confirm_ms: receipt is confirmed automatically this long after the last shipment
ARGV[7]  sku count S, then S skus (every SKU of the order)

Returns {code, order document (msgpack) or ""}
  code 1 shipped   2 this shipment already shipped (unchanged)   3 order not found
  code 4 no such shipment in the order   5 the order is not paid (unchanged)
Mirrored by reservation.outcomes.ShipCode.

Order document: fields 1-21 see reserve.lua; the lifecycle adds (filled in by every
script after reserve.lua, so a document always has all of them once changed):
  22 shipment_states {{shipment_id, carrier, tracking_number, shipped_ms, track}, …}
     track {{status, location, occurred_ms, recorded_ms}, …}
  23 previous_status 24 shipped_ms 25 confirm_due_ms 26 completed_ms 27 completion
  28 after_sales_until_ms 29 after_sales_closed 30 refunded_amount 31 case_ids {…}
Shipments are the order's lines grouped by (merchant_id, warehouse_id), numbered from 1
in order of first appearance: shipment id = order_id .. '-' .. number.
Event: k shipment_shipped, o document, m movements, t now_ms.
]]

local CODE_SHIPPED, CODE_ALREADY, CODE_NOT_FOUND, CODE_NO_SHIPMENT, CODE_NOT_PAID = 1, 2, 3, 4, 5
local STATUS, LINES, VERSION, UPDATED = 2, 10, 18, 19
local SHIPMENTS, SHIPPED_MS, CONFIRM_DUE = 22, 24, 25

local stream_key, confirm_key, order_key = KEYS[1], KEYS[2], KEYS[3]
local now_ms, order_id, shipment_id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local carrier, tracking_number = ARGV[4], ARGV[5]
local auto_confirm_ms, sku_count = tonumber(ARGV[6]), tonumber(ARGV[7])
if not now_ms or not auto_confirm_ms or not sku_count or #ARGV ~= 7 + sku_count or #KEYS ~= 3 + sku_count then
  return redis.error_reply('ERR ship: malformed arguments')
end
local stock_keys = {}
for index = 1, sku_count do stock_keys[ARGV[7 + index]] = KEYS[3 + index] end

--!include order_document

local packed = redis.call('GET', order_key)
if not packed then return {CODE_NOT_FOUND, ''} end
local document = cmsgpack.unpack(packed)
extend(document)

-- Group the lines into shipments exactly as reservation.records.OrderRecord.shipments does.
local numbers, groups, count = {}, {}, 0
for _, line in ipairs(document[LINES]) do
  if not stock_keys[line[1]] then return redis.error_reply('ERR ship: stock key of ' .. line[1] .. ' not declared') end
  local group = line[5] .. '\0' .. line[2]
  if not numbers[group] then
    count = count + 1
    numbers[group] = count
    groups[count] = {}
  end
  local lines = groups[numbers[group]]
  lines[#lines + 1] = line
end
local wanted = nil
for number = 1, count do
  if order_id .. '-' .. number == shipment_id then wanted = groups[number] end
end
if not wanted then return {CODE_NO_SHIPMENT, packed} end
for _, state in ipairs(document[SHIPMENTS]) do
  if state[1] == shipment_id then return {CODE_ALREADY, packed} end
end
if document[STATUS] ~= 'paid' then return {CODE_NOT_PAID, packed} end

local movements = {}
for _, line in ipairs(wanted) do
  local sku, warehouse, qty = line[1], line[2], line[3]
  redis.call('HINCRBY', stock_keys[sku], 'c:' .. warehouse, -qty)
  redis.call('HINCRBY', stock_keys[sku], 'h:' .. warehouse, -qty)
  movements[#movements + 1] = {sku, warehouse, 'ship', qty, 0, 0, -qty, -qty}
end
local states = document[SHIPMENTS]
states[#states + 1] = {shipment_id, carrier, tracking_number, now_ms, {}}
if #states == count then
  document[STATUS] = 'shipped'
  document[SHIPPED_MS] = now_ms
  document[CONFIRM_DUE] = now_ms + auto_confirm_ms
  redis.call('ZADD', confirm_key, document[CONFIRM_DUE], order_id)
end
document[VERSION] = document[VERSION] + 1
document[UPDATED] = now_ms
packed = cmsgpack.pack(document)
redis.call('SET', order_key, packed)
redis.call('XADD', stream_key, '*', 'k', 'shipment_shipped', 'o', packed, 'm', cmsgpack.pack(movements),
  't', string.format('%d', now_ms))
return {CODE_SHIPPED, packed}
