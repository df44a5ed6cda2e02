--[[
window_close.lua — close the after-sales window of a batch of completed orders.

Run by the sweeper for orders whose window-due score is <= now_ms: a `completed`
order is marked after_sales_closed (no new case may be opened) and leaves the set.
An order that is not `completed` (a case is open) leaves the set too; the case puts
it back when it returns the order to `completed`.

KEYS[1]  event stream of the partition
KEYS[2]  window-due sorted set (order id scored by the end of its after-sales window)
KEYS[3…] order documents, named by index below

ARGV[1]  now_ms
ARGV[2]  order count N, then N orders, each: order_key_index, order_id

Returns one entry per order: {code, order document (msgpack) or ""}
  code 1 closed   2 not due, or already closed (unchanged)   3 not found
  code 4 not completed (left the set, unchanged)
Mirrored by reservation.outcomes.WindowCode. Document layout: see ship.lua.
Event: k order_after_sales_closed, o document, m {}, t now_ms.
]]

local CODE_CLOSED, CODE_UNCHANGED, CODE_NOT_FOUND, CODE_NOT_COMPLETED = 1, 2, 3, 4
local STATUS, VERSION, UPDATED, CLOSED = 2, 18, 19, 29

local stream_key, window_key = KEYS[1], KEYS[2]
local now_ms, order_count = tonumber(ARGV[1]), tonumber(ARGV[2])
if not now_ms or not order_count or #ARGV ~= 2 + 2 * order_count then
  return redis.error_reply('ERR window_close: malformed arguments')
end

local results = {}
for index = 1, order_count do
  local cursor = 3 + 2 * (index - 1)
  local order_key, order_id = KEYS[tonumber(ARGV[cursor])], ARGV[cursor + 1]
  if not order_key then return redis.error_reply('ERR window_close: order key index at ARGV ' .. cursor) end
  local packed = redis.call('GET', order_key)
  local score = redis.call('ZSCORE', window_key, order_id)
  local due = score and tonumber(score) <= now_ms
  if not packed then
    redis.call('ZREM', window_key, order_id)
    results[index] = {CODE_NOT_FOUND, ''}
  elseif not due then
    results[index] = {CODE_UNCHANGED, packed}
  else
    redis.call('ZREM', window_key, order_id)
    local document = cmsgpack.unpack(packed)
    if document[STATUS] ~= 'completed' then
      results[index] = {CODE_NOT_COMPLETED, packed}
    elseif document[CLOSED] then
      results[index] = {CODE_UNCHANGED, packed}
    else
      document[CLOSED] = true
      document[VERSION] = document[VERSION] + 1
      document[UPDATED] = now_ms
      packed = cmsgpack.pack(document)
      redis.call('SET', order_key, packed)
      redis.call('XADD', stream_key, '*', 'k', 'order_after_sales_closed', 'o', packed, 'm', cmsgpack.pack({}),
        't', string.format('%d', now_ms))
      results[index] = {CODE_CLOSED, packed}
    end
  end
end
return results
