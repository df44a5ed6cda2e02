--[[
order_refund.lua — the payment system refunded a cancelled order's payment: it is closed.

For an order cancelled after it was paid (by the customer or merchant, or paid after
its hold expired and the stock was gone): its refund_pending becomes refunded,
refunded_amount grows by the refund and the order becomes `closed`. An order with
after-sales cases is refunded through its cases instead. Refunding a closed order
again changes nothing. No stock changes (the cancellation released it).

KEYS[1]  event stream of the partition
KEYS[2]  order document

ARGV[1]  now_ms

Returns {code, order document (msgpack) or ""}
  code 1 refunded and closed   2 already refunded (unchanged)   3 order not found
  code 4 no refund pending, or the order has after-sales cases (unchanged)
Mirrored by reservation.outcomes.OrderRefundCode. Document layout: see ship.lua.
Event: k order_refunded, o document, m {}, t now_ms.
]]

local CODE_REFUNDED, CODE_ALREADY, CODE_NOT_FOUND, CODE_NOT_ALLOWED = 1, 2, 3, 4
local STATUS, REFUND_STATUS, REFUND_AMOUNT, VERSION, UPDATED, REFUNDED, CASES = 2, 16, 17, 18, 19, 30, 31

local stream_key, order_key = KEYS[1], KEYS[2]
local now_ms = tonumber(ARGV[1])
if not now_ms or #KEYS ~= 2 or #ARGV ~= 1 then return redis.error_reply('ERR order_refund: malformed arguments') end

--!include order_document

local packed = redis.call('GET', order_key)
if not packed then return {CODE_NOT_FOUND, ''} end
local document = cmsgpack.unpack(packed)
extend(document)
if document[REFUND_STATUS] == 'refunded' and document[STATUS] == 'closed' then return {CODE_ALREADY, packed} end
if document[STATUS] ~= 'cancelled' or document[REFUND_STATUS] ~= 'refund_pending' or #document[CASES] > 0 then
  return {CODE_NOT_ALLOWED, packed}
end
document[STATUS], document[REFUND_STATUS] = 'closed', 'refunded'
document[REFUNDED] = document[REFUNDED] + document[REFUND_AMOUNT]
document[VERSION] = document[VERSION] + 1
document[UPDATED] = now_ms
packed = cmsgpack.pack(document)
redis.call('SET', order_key, packed)
redis.call('XADD', stream_key, '*', 'k', 'order_refunded', 'o', packed, 'm', cmsgpack.pack({}),
  't', string.format('%d', now_ms))
return {CODE_REFUNDED, packed}
