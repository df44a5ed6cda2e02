--[[
confirm.lua — confirm receipt of a batch of shipped orders: they become `completed`.

Used by the customer's confirm-receipt and by the sweeper for orders whose
automatic confirmation is due. Completion opens the after-sales window: the order
is scheduled in the window-due set at now_ms + window_ms. Confirming a completed
order again changes nothing.

KEYS[1]  event stream of the partition
KEYS[2]  confirm-due sorted set (order id scored by auto-confirmation ms)
KEYS[3]  window-due sorted set (order id scored by the end of its after-sales window)
KEYS[4…] order documents, named by index below

ARGV[1]  now_ms
ARGV[2]  window_ms: length of the after-sales window
ARGV[3]  order count N (each order at most once), then N orders, each:
         order_key_index, order_id, due_only ("1": only if its confirm-due score is
         <= now_ms, as the sweeper does; completion "auto" instead of "customer")

Returns one entry per order: {code, order document (msgpack) or ""}
  code 1 completed   2 already completed (unchanged)   3 not due (unchanged)
  code 4 not found   5 not shipped (unchanged)
Mirrored by reservation.outcomes.ConfirmCode. Document layout: see ship.lua.
An order whose deadline passed while it was not `shipped` (an after-sales case was
open) leaves the confirm-due set; the case puts it back when it returns the order to
`shipped`. Event: k order_completed, o document, m {}, t now_ms.
]]

local CODE_COMPLETED, CODE_ALREADY, CODE_NOT_DUE, CODE_NOT_FOUND, CODE_NOT_SHIPPED = 1, 2, 3, 4, 5
local STATUS, VERSION, UPDATED = 2, 18, 19
local COMPLETED_MS, COMPLETION, WINDOW_UNTIL = 26, 27, 28

local stream_key, confirm_key, window_key = KEYS[1], KEYS[2], KEYS[3]
local now_ms, window_ms, order_count = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if not now_ms or not window_ms or not order_count or #ARGV ~= 3 + 3 * order_count then
  return redis.error_reply('ERR confirm: malformed arguments')
end

local results = {}
for index = 1, order_count do
  local cursor = 4 + 3 * (index - 1)
  local order_key, order_id, due_only = KEYS[tonumber(ARGV[cursor])], ARGV[cursor + 1], ARGV[cursor + 2] == '1'
  if not order_key then return redis.error_reply('ERR confirm: order key index at ARGV ' .. cursor) end
  local packed = redis.call('GET', order_key)
  local score = redis.call('ZSCORE', confirm_key, order_id)
  local due = score and tonumber(score) <= now_ms
  if not packed then
    redis.call('ZREM', confirm_key, order_id)
    results[index] = {CODE_NOT_FOUND, ''}
  else
    local document = cmsgpack.unpack(packed)
    if document[STATUS] == 'completed' then
      results[index] = {CODE_ALREADY, packed}
    elseif document[STATUS] ~= 'shipped' then
      if due then redis.call('ZREM', confirm_key, order_id) end
      results[index] = {due_only and CODE_NOT_DUE or CODE_NOT_SHIPPED, packed}
    elseif due_only and not due then
      results[index] = {CODE_NOT_DUE, packed}
    else
      document[STATUS] = 'completed'
      document[COMPLETED_MS] = now_ms
      document[COMPLETION] = due_only and 'auto' or 'customer'
      document[WINDOW_UNTIL] = now_ms + window_ms
      document[VERSION] = document[VERSION] + 1
      document[UPDATED] = now_ms
      packed = cmsgpack.pack(document)
      redis.call('SET', order_key, packed)
      redis.call('ZREM', confirm_key, order_id)
      redis.call('ZADD', window_key, document[WINDOW_UNTIL], order_id)
      redis.call('XADD', stream_key, '*', 'k', 'order_completed', 'o', packed, 'm', cmsgpack.pack({}),
        't', string.format('%d', now_ms))
      results[index] = {CODE_COMPLETED, packed}
    end
  end
end
return results
