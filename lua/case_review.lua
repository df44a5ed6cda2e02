--[[
case_review.lua — the merchant approves or rejects a case awaiting review.

Approval moves the case on: refund_only → awaiting_refund (its refund record is
created, pending), return_refund → awaiting_return, exchange → awaiting_exchange_return.
Rejection ends the case and returns the order to the status it had before the case
(previous_status), putting it back on the timer that status runs on: a shipped order
in confirm-due at its confirm_due_ms, a completed one in window-due at the end of its
window. No stock changes.

KEYS[1]  event stream of the partition
KEYS[2]  confirm-due sorted set
KEYS[3]  window-due sorted set
KEYS[4]  order document
KEYS[5]  case document

ARGV[1]  now_ms
ARGV[2]  decision: approve | reject
ARGV[3]  note (may be "")

Returns {code, case document or "", order document or ""}
  code 1 decided   2 case not found   3 the case is not awaiting review (unchanged)
Mirrored by reservation.outcomes.CaseCode. Layouts: case_open.lua, ship.lua.
Event: k refund_requested (a refund_only case approved: its refund is pending), else
after_sales_approved / after_sales_rejected; o order, c case, m {}, t now_ms.
]]

local CODE_DONE, CODE_NOT_FOUND, CODE_NOT_ALLOWED = 1, 2, 3
local STATUS, VERSION, UPDATED = 2, 18, 19
local C_KIND, C_STATUS, C_UPDATED, C_VERSION, C_REFUND_ID, C_REFUND_STATUS, C_NOTE = 4, 5, 10, 11, 12, 13, 18

--!include order_resume

local stream_key, confirm_key, window_key, order_key, case_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now_ms, decision, note = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if not now_ms or #KEYS ~= 5 or #ARGV ~= 3 or (decision ~= 'approve' and decision ~= 'reject') then
  return redis.error_reply('ERR case_review: malformed arguments')
end

local case_packed = redis.call('GET', case_key)
if not case_packed then return {CODE_NOT_FOUND, '', ''} end
local case = cmsgpack.unpack(case_packed)
local packed = redis.call('GET', order_key)
if not packed then return redis.error_reply('ERR case_review: the order of a case is missing') end
local document = cmsgpack.unpack(packed)
if case[C_STATUS] ~= 'awaiting_review' then return {CODE_NOT_ALLOWED, case_packed, packed} end

if decision == 'approve' then
  local next_status = {refund_only = 'awaiting_refund', return_refund = 'awaiting_return',
    exchange = 'awaiting_exchange_return'}
  case[C_STATUS] = next_status[case[C_KIND]]
  if case[C_KIND] == 'refund_only' then case[C_REFUND_ID], case[C_REFUND_STATUS] = case[1] .. '-refund', 'pending' end
else
  case[C_STATUS] = 'rejected'
  resume_previous_status(document, confirm_key, window_key)
  document[VERSION] = document[VERSION] + 1
  document[UPDATED] = now_ms
  packed = cmsgpack.pack(document)
  redis.call('SET', order_key, packed)
end
case[C_NOTE] = note
case[C_VERSION] = case[C_VERSION] + 1
case[C_UPDATED] = now_ms
case_packed = cmsgpack.pack(case)
redis.call('SET', case_key, case_packed)
local kind_of_event = decision == 'reject' and 'after_sales_rejected' or 'after_sales_approved'
if case[C_REFUND_STATUS] == 'pending' then kind_of_event = 'refund_requested' end
redis.call('XADD', stream_key, '*', 'k', kind_of_event, 'o', packed, 'c', case_packed,
  'm', cmsgpack.pack({}), 't', string.format('%d', now_ms))
return {CODE_DONE, case_packed, packed}
