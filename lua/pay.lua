--[[
pay.lua — record a payment for one order.

A pending order's reserved units become committed and the order is paid. If the
hold already expired (the order was cancelled for payment_timeout) the same units
are taken again, as a new reservation would take them: only if every line still
fits in its warehouse above the SKU's safety stock, the sale window is open, the
customer's purchase limit allows it and the customer is not blocked; then the
order is paid. Otherwise the payment is recorded on the cancelled order as a
pending refund. A payment for an order cancelled for any other reason is recorded
as a pending refund. Never takes a unit that is not available: no oversell.
The same payment (id and amount) twice is a no-op; one payment id never pays two
orders nor two amounts.

KEYS[1]  event stream of the partition
KEYS[2]  expiry sorted set of the partition
KEYS[3]  order document
KEYS[4]  customer counters of the order's customer
KEYS[5]  payment record (hash: order_id, amount) of this payment id
KEYS[6]  blocklist hash
KEYS[7…] for each SKU named in ARGV[7…], in that order: its stock hash, then its config hash

ARGV[1]  now_ms
ARGV[2]  order_id
ARGV[3]  payment_id
ARGV[4]  amount (minor units)
ARGV[5]  method
ARGV[6]  sku count S, then S skus (every SKU of the order)

Returns {code, order document (msgpack) or ""}
  code 1 paid   2 paid after expiry (stock taken again)   3 recorded for refund
  code 4 this payment was already recorded (unchanged)   5 order not found
  code 6 amount differs from the order total   7 order already paid by another payment
  code 8 payment id already used for another order or another amount
Mirrored by reservation.outcomes.PayCode. Document layout: see reserve.lua.
]]

local CODE_PAID, CODE_PAID_AFTER_EXPIRY, CODE_REFUND_PENDING, CODE_ALREADY = 1, 2, 3, 4
local CODE_NOT_FOUND, CODE_AMOUNT_MISMATCH, CODE_ALREADY_PAID, CODE_PAYMENT_REUSED = 5, 6, 7, 8
local STATUS, CUSTOMER, TOTAL, LINES, REASON = 2, 3, 8, 10, 11
local PAYMENT_ID, PAID_AMOUNT, METHOD, PAID_MS = 12, 13, 14, 15
local REFUND_STATUS, REFUND_AMOUNT, VERSION, UPDATED = 16, 17, 18, 19

local stream_key, expiry_key, order_key, counter_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local payment_key, blocklist_key = KEYS[5], KEYS[6]
local now_ms, order_id, payment_id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local amount, method, sku_count = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
-- An empty payment id is refused: the persister tells a paid order's cancellation by its payment id.
if not now_ms or not amount or not sku_count or payment_id == '' or #ARGV ~= 6 + sku_count
    or #KEYS ~= 6 + 2 * sku_count then
  return redis.error_reply('ERR pay: malformed arguments')
end
local stock_keys, config_keys = {}, {}
for index = 1, sku_count do
  stock_keys[ARGV[6 + index]] = KEYS[5 + 2 * index]
  config_keys[ARGV[6 + index]] = KEYS[6 + 2 * index]
end

local packed = redis.call('GET', order_key)
if not packed then return {CODE_NOT_FOUND, ''} end
local document = cmsgpack.unpack(packed)
for _, line in ipairs(document[LINES]) do
  if not stock_keys[line[1]] then return redis.error_reply('ERR pay: stock key of ' .. line[1] .. ' not declared') end
end

local record = redis.call('HMGET', payment_key, 'order_id', 'amount')
if record[1] then
  if record[1] ~= order_id or tonumber(record[2]) ~= amount then return {CODE_PAYMENT_REUSED, packed} end
  return {CODE_ALREADY, packed}
end
if amount ~= document[TOTAL] then return {CODE_AMOUNT_MISMATCH, packed} end
if document[STATUS] == 'paid' or document[REFUND_STATUS] ~= '' then return {CODE_ALREADY_PAID, packed} end
if document[STATUS] ~= 'pending_payment' and document[STATUS] ~= 'cancelled' then
  return {CODE_ALREADY_PAID, packed}
end

-- The rules of reserve.lua, for the same lines in the same warehouses.
local function fits_again()
  if document[STATUS] ~= 'cancelled' or document[REASON] ~= 'payment_timeout' then return false end
  if redis.call('HEXISTS', blocklist_key, document[CUSTOMER]) == 1 then return false end
  local wanted = {}
  for _, line in ipairs(document[LINES]) do
    local sku = line[1]
    local config = redis.call('HMGET', config_keys[sku], 'per_customer_limit', 'sale_starts_ms',
      'sale_ends_ms', 'safety_stock')
    local starts, ends = tonumber(config[2]), tonumber(config[3])
    if (starts and now_ms < starts) or (ends and now_ms >= ends) then return false end
    local safety = tonumber(config[4]) or 0
    local available = tonumber(redis.call('HGET', stock_keys[sku], 'a:' .. line[2]) or '0')
    if available - safety < line[3] then return false end
    wanted[sku] = (wanted[sku] or 0) + line[3]
    local limit = tonumber(config[1])
    local bought = tonumber(redis.call('HGET', counter_key, sku) or '0')
    if limit and bought + wanted[sku] > limit then return false end
  end
  return true
end

local code, kind, movements = nil, nil, {}
if document[STATUS] == 'pending_payment' then
  code, kind = CODE_PAID, 'order_paid'
  for _, line in ipairs(document[LINES]) do
    redis.call('HINCRBY', stock_keys[line[1]], 'r:' .. line[2], -line[3])
    redis.call('HINCRBY', stock_keys[line[1]], 'c:' .. line[2], line[3])
    movements[#movements + 1] = {line[1], line[2], 'commit', line[3], 0, -line[3], line[3], 0}
  end
elseif fits_again() then
  code, kind = CODE_PAID_AFTER_EXPIRY, 'order_paid'
  for _, line in ipairs(document[LINES]) do
    redis.call('HINCRBY', stock_keys[line[1]], 'a:' .. line[2], -line[3])
    redis.call('HINCRBY', stock_keys[line[1]], 'c:' .. line[2], line[3])
    redis.call('HINCRBY', counter_key, line[1], line[3])
    movements[#movements + 1] = {line[1], line[2], 'commit', line[3], -line[3], 0, line[3], 0}
  end
  document[REASON] = ''
else
  code, kind = CODE_REFUND_PENDING, 'order_refund_pending'
  document[REFUND_STATUS] = 'refund_pending'
  document[REFUND_AMOUNT] = amount
end
if code ~= CODE_REFUND_PENDING then document[STATUS] = 'paid' end
document[PAYMENT_ID], document[PAID_AMOUNT], document[METHOD], document[PAID_MS] = payment_id, amount, method, now_ms
document[VERSION] = document[VERSION] + 1
document[UPDATED] = now_ms
packed = cmsgpack.pack(document)
redis.call('SET', order_key, packed)
redis.call('ZREM', expiry_key, order_id)
redis.call('HSET', payment_key, 'order_id', order_id, 'amount', string.format('%d', amount))
redis.call('XADD', stream_key, '*', 'k', kind, 'o', packed, 'm', cmsgpack.pack(movements),
  't', string.format('%d', now_ms))
return {code, packed}
