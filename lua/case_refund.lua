--[[
case_refund.lua — the payment system refunded a case: the case succeeds, the order closes.

For a case awaiting its refund, or an exchange that could not be fulfilled
(exchange_sold_out, refunded instead at the value of its items). The refund is
never above what was paid less what was refunded before. The refund record (id,
amount, reason, status) moves to succeeded and the order, in after_sales or
cancelled by an approved refund-before-shipment, becomes `closed`.

KEYS[1]  event stream of the partition
KEYS[2]  order document
KEYS[3]  case document

ARGV[1]  now_ms

Returns {code, case document or "", order document or ""}
  code 1 refunded   2 case not found   3 the case awaits no refund (unchanged)
Mirrored by reservation.outcomes.CaseCode. Layouts: case_open.lua, ship.lua.
Event: k refund_succeeded, o order, c case, m {}, t now_ms.
]]

local CODE_DONE, CODE_NOT_FOUND, CODE_NOT_ALLOWED = 1, 2, 3
local STATUS, PAID_AMOUNT, REFUND_STATUS, VERSION, UPDATED, PREVIOUS, REFUNDED = 2, 13, 16, 18, 19, 23, 30
local C_STATUS, C_ITEMS, C_AMOUNT, C_UPDATED, C_VERSION, C_REFUND_ID, C_REFUND_STATUS = 5, 6, 8, 10, 11, 12, 13

local stream_key, order_key, case_key = KEYS[1], KEYS[2], KEYS[3]
local now_ms = tonumber(ARGV[1])
if not now_ms or #KEYS ~= 3 or #ARGV ~= 1 then return redis.error_reply('ERR case_refund: malformed arguments') end

local case_packed = redis.call('GET', case_key)
if not case_packed then return {CODE_NOT_FOUND, '', ''} end
local case = cmsgpack.unpack(case_packed)
local packed = redis.call('GET', order_key)
if not packed then return redis.error_reply('ERR case_refund: the order of a case is missing') end
local document = cmsgpack.unpack(packed)
if case[C_STATUS] ~= 'awaiting_refund' and case[C_STATUS] ~= 'exchange_sold_out' then
  return {CODE_NOT_ALLOWED, case_packed, packed}
end

if case[C_STATUS] == 'exchange_sold_out' then
  local value = 0
  for _, item in ipairs(case[C_ITEMS]) do value = value + item[2] * item[3] end
  case[C_AMOUNT] = value
  case[C_REFUND_ID] = case[1] .. '-refund'
end
case[C_AMOUNT] = math.max(0, math.min(case[C_AMOUNT], document[PAID_AMOUNT] - document[REFUNDED]))
case[C_STATUS], case[C_REFUND_STATUS] = 'succeeded', 'succeeded'
case[C_VERSION] = case[C_VERSION] + 1
case[C_UPDATED] = now_ms
document[REFUNDED] = document[REFUNDED] + case[C_AMOUNT]
if document[REFUND_STATUS] == 'refund_pending' then document[REFUND_STATUS] = 'refunded' end
document[STATUS], document[PREVIOUS] = 'closed', ''
document[VERSION] = document[VERSION] + 1
document[UPDATED] = now_ms
case_packed = cmsgpack.pack(case)
packed = cmsgpack.pack(document)
redis.call('SET', case_key, case_packed)
redis.call('SET', order_key, packed)
redis.call('XADD', stream_key, '*', 'k', 'refund_succeeded', 'o', packed, 'c', case_packed,
  'm', cmsgpack.pack({}), 't', string.format('%d', now_ms))
return {CODE_DONE, case_packed, packed}
