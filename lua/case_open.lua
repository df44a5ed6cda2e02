--[[
case_open.lua — open an after-sales case on an order.

refund_only, return_refund or exchange, for some of the order's units. Each SKU's
units under refund (refund_only and return_refund cases not rejected) never exceed
what the order holds of it; a refund never exceeds what was paid less what was
already refunded.
- A paid order none of whose shipments left takes only a refund_only case for the
  whole order: it is approved at once, the order is cancelled (cancel_reason
  customer), its committed units return to available (a `release` movement each),
  leave the customer's purchase counters, and the case awaits its refund.
- A shipped order, or a completed one inside its after-sales window, goes to
  `after_sales` (its status is kept as previous_status) and the case awaits review.
The case id is the order id, "-r", and the number of the case on the order; the
caller names it and declares the key, the script checks it is the next one.

KEYS[1]  event stream of the partition
KEYS[2]  sold-out set of the partition (released SKUs leave it)
KEYS[3]  order document
KEYS[4]  the new case document
KEYS[5]  customer counters of the order's customer
KEYS[6…] the stock hash of each SKU named in ARGV[6…], then each existing case
         document of the order, in the order's case_ids order

ARGV[1]  now_ms
ARGV[2]  case_id
ARGV[3]  kind: refund_only | return_refund | exchange
ARGV[4]  reason
ARGV[5]  sku count S, then S skus (every SKU of the order), then item count I, then
         I pairs: sku, qty (distinct SKUs)

Returns {code, case document or "" , order document or ""}
  code 1 opened (awaiting review)   2 opened and approved (refund before shipment)
  code 3 order not found   4 not allowed in the order's status (unchanged)
  code 5 items invalid: a SKU not in the order, or more units than it holds unrefunded,
         or a refund before shipment that is not for the whole order
  code 6 the after-sales window is closed   7 the case id is not the next one (retry)
  code 8 nothing left to refund (everything paid was refunded)
Mirrored by reservation.outcomes.CaseOpenCode.

Case document (msgpack array, 1-based; mirrored by reservation.records.CaseRecord):
  1 case_id 2 order_id 3 customer_id 4 kind 5 status 6 items {{sku, qty, unit_price}}
  7 reason 8 amount (refund) 9 created_ms 10 updated_ms 11 version 12 refund_id
  13 refund_status ("" | pending | succeeded) 14 return_warehouse_id 15 damaged
  16 replacement {{sku, warehouse_id, qty}} 17 sold_out_sku 18 note 19 carrier 20 tracking_number
Case statuses: awaiting_review, awaiting_return, awaiting_refund, awaiting_exchange_return,
exchange_shipping, exchange_sold_out, succeeded, rejected.
Order document: see ship.lua. Event: k after_sales_opened (refund_requested when approved at once:
the payment system's cue to pay the refund back), o order, c case, m movements, t now_ms.
]]

local CODE_OPENED, CODE_APPROVED, CODE_NOT_FOUND, CODE_NOT_ALLOWED = 1, 2, 3, 4
local CODE_ITEMS, CODE_WINDOW_CLOSED, CODE_CASE_ID, CODE_NOTHING_LEFT = 5, 6, 7, 8
local STATUS, CUSTOMER, LINES, REASON, PAID_AMOUNT = 2, 3, 10, 11, 13
local REFUND_STATUS, REFUND_AMOUNT, VERSION, UPDATED = 16, 17, 18, 19
local SHIPMENTS, PREVIOUS, WINDOW_UNTIL, WINDOW_CLOSED, REFUNDED, CASES = 22, 23, 28, 29, 30, 31
local C_KIND, C_STATUS, C_ITEMS = 4, 5, 6

local stream_key, sold_out_key, order_key, case_key, counter_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now_ms, case_id, kind, reason = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local sku_count = tonumber(ARGV[5])
if not now_ms or not sku_count or (kind ~= 'refund_only' and kind ~= 'return_refund' and kind ~= 'exchange') then
  return redis.error_reply('ERR case_open: malformed arguments')
end
local stock_keys = {}
for index = 1, sku_count do stock_keys[ARGV[5 + index]] = KEYS[5 + index] end
local item_count = tonumber(ARGV[6 + sku_count])
if not item_count or #ARGV ~= 6 + sku_count + 2 * item_count then
  return redis.error_reply('ERR case_open: malformed items')
end
local wanted = {}
for index = 1, item_count do
  local sku, qty = ARGV[5 + sku_count + 2 * index], tonumber(ARGV[6 + sku_count + 2 * index])
  if not qty or qty < 1 or wanted[sku] then return redis.error_reply('ERR case_open: malformed or repeated item') end
  wanted[sku] = qty
end

--!include order_document

local packed = redis.call('GET', order_key)
if not packed then return {CODE_NOT_FOUND, '', ''} end
local document = cmsgpack.unpack(packed)
extend(document)
local existing = document[CASES]
-- A case opened since the caller read the order makes the id stale (and the declared case keys
-- short): that is a race to report for a retry, not a malformed call.
if case_id ~= document[1] .. '-r' .. (#existing + 1) then return {CODE_CASE_ID, '', packed} end
if #KEYS ~= 5 + sku_count + #existing then return redis.error_reply('ERR case_open: case keys not declared') end

-- The status decides first: a case on an order that cannot take one is refused as such.
local status, shipped_any = document[STATUS], #document[SHIPMENTS] > 0
local before_shipment = status == 'paid' and not shipped_any
if before_shipment then
  if kind ~= 'refund_only' then return {CODE_NOT_ALLOWED, '', packed} end
elseif status == 'completed' then
  if document[WINDOW_CLOSED] or now_ms >= document[WINDOW_UNTIL] then return {CODE_WINDOW_CLOSED, '', packed} end
elseif status ~= 'shipped' then
  return {CODE_NOT_ALLOWED, '', packed}
end

-- Units of each SKU in the order (with its price), and those already under refund.
local ordered, price = {}, {}
for _, line in ipairs(document[LINES]) do
  if not stock_keys[line[1]] then return redis.error_reply('ERR case_open: stock key of ' .. line[1] .. ' not declared') end
  ordered[line[1]] = (ordered[line[1]] or 0) + line[3]
  price[line[1]] = line[4]
end
local refunding = {}
for index = 1, #existing do
  local other = cmsgpack.unpack(redis.call('GET', KEYS[5 + sku_count + index]))
  if other[C_KIND] ~= 'exchange' and other[C_STATUS] ~= 'rejected' then
    for _, item in ipairs(other[C_ITEMS]) do refunding[item[1]] = (refunding[item[1]] or 0) + item[2] end
  end
end
local items, value, whole = {}, 0, true
for sku, qty in pairs(ordered) do
  if (wanted[sku] or 0) ~= qty then whole = false end
end
for index = 1, item_count do
  local sku = ARGV[5 + sku_count + 2 * index]
  local qty = wanted[sku]
  if not ordered[sku] then return {CODE_ITEMS, '', packed} end
  if kind ~= 'exchange' and qty + (refunding[sku] or 0) > ordered[sku] then return {CODE_ITEMS, '', packed} end
  if kind == 'exchange' and qty > ordered[sku] then return {CODE_ITEMS, '', packed} end
  items[#items + 1] = {sku, qty, price[sku]}
  value = value + qty * price[sku]
end

if before_shipment and not whole then return {CODE_ITEMS, '', packed} end
local refundable = document[PAID_AMOUNT] - document[REFUNDED]
if kind ~= 'exchange' and refundable <= 0 then return {CODE_NOTHING_LEFT, '', packed} end
local amount = 0
if kind ~= 'exchange' then amount = math.min(value, refundable) end

local case = {case_id, document[1], document[CUSTOMER], kind, 'awaiting_review', items, reason, amount,
  now_ms, now_ms, 1, '', '', '', false, {}, '', '', '', ''}
local code, movements = CODE_OPENED, {}
if before_shipment then
  code = CODE_APPROVED
  for _, line in ipairs(document[LINES]) do
    local sku, warehouse, qty = line[1], line[2], line[3]
    redis.call('HINCRBY', stock_keys[sku], 'c:' .. warehouse, -qty)
    redis.call('HINCRBY', stock_keys[sku], 'a:' .. warehouse, qty)
    redis.call('HINCRBY', counter_key, sku, -qty)
    redis.call('SREM', sold_out_key, sku)
    movements[#movements + 1] = {sku, warehouse, 'release', qty, qty, 0, -qty, 0}
  end
  case[5], case[12], case[13] = 'awaiting_refund', case_id .. '-refund', 'pending'
  document[STATUS], document[REASON] = 'cancelled', 'customer'
  document[REFUND_STATUS], document[REFUND_AMOUNT] = 'refund_pending', amount
else
  document[PREVIOUS] = status
  document[STATUS] = 'after_sales'
end
existing[#existing + 1] = case_id
document[VERSION] = document[VERSION] + 1
document[UPDATED] = now_ms
packed = cmsgpack.pack(document)
local case_packed = cmsgpack.pack(case)
redis.call('SET', order_key, packed)
redis.call('SET', case_key, case_packed)
local kind_of_event = code == CODE_APPROVED and 'refund_requested' or 'after_sales_opened'
redis.call('XADD', stream_key, '*', 'k', kind_of_event, 'o', packed, 'c', case_packed,
  'm', cmsgpack.pack(movements), 't', string.format('%d', now_ms))
return {code, case_packed, packed}
