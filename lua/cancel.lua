--[[
cancel.lua — cancel a batch of orders and give their stock back.

Used for customer and merchant cancellation and by the sweeper for unpaid orders
past their deadline. A pending order's reserved units return to available; a paid
order's committed units return to available and its payment becomes a pending
refund. Units leave the customer's purchase counters. Cancelling a cancelled order
changes nothing.

KEYS[1]  event stream of the partition
KEYS[2]  expiry sorted set of the partition
KEYS[3]  sold-out set of the partition: released SKUs leave it
KEYS[4]  metrics hash of the partition (field stream_extra_events, as in reserve.lua)
KEYS[5…] keys the orders below name by index (order, customer counters, SKU stock)

ARGV[1]  now_ms
ARGV[2]  "documents": answer each order's document; "codes": answer only the codes (the sweeper,
         which needs nothing else: no reply to build for 500 documents, none to parse)
ARGV[3]  the orders, one flat msgpack array (each order at most once; msgpack on the client, as for
         reserve.lua: one argument, integers that need no tonumber), each order in turn:
           order_key_index, counter_key_index, order_id, reason ("customer" | "merchant" |
           "payment_timeout"), due_only (a boolean; true: cancel only a pending order whose
           deadline is <= now_ms, as the sweeper does), sku count S, then S × sku,
           stock_key_index (every SKU of the order)
         Anything else (another reason, a due_only that is not a boolean, an order or order key
         named twice, a key that holds another order) is refused before any write.

Returns one entry per order: {code, order document (msgpack) or ""}; with "codes", one code per order
  code 1 cancelled   2 already cancelled (unchanged)   3 not due (unchanged)
  code 4 not found   5 not cancellable in its current status, or a shipment left (unchanged)
Mirrored by reservation.outcomes.CancelCode. Document layout: see reserve.lua.
Events: one stream entry per call, as reserve.lua's (an XADD per order was 16 % of a sweep's
  instructions at 500 holds a sweep). One order: k order_cancelled, o the document, t now_ms; two
  or more: k orders_cancelled, o the msgpack array of their documents, t now_ms, adding n - 1 to
  the metrics hash's stream_extra_events (at most 1000 an entry). No m (movements) field: each document line
  {sku, wh, qty} is the movement {sku, wh, 'release', qty, qty, -qty, 0, 0} of a pending order, or
  {sku, wh, 'release', qty, qty, 0, -qty, 0} of a paid one (the document then has a payment id:
  a pending order never does), and the persister derives it (one pack per order less here).
]]

local CODE_CANCELLED, CODE_ALREADY, CODE_NOT_DUE, CODE_NOT_FOUND, CODE_NOT_CANCELLABLE = 1, 2, 3, 4, 5
local STATUS, CUSTOMER, EXPIRES, LINES, REASON = 2, 3, 7, 10, 11
local PAID_AMOUNT, REFUND_STATUS, REFUND_AMOUNT, VERSION, UPDATED = 13, 16, 17, 18, 19
local SHIPMENTS = 22  -- shipments that left (see ship.lua)

local stream_key, expiry_key, sold_out_key, metrics_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- The cancelled orders' documents, appended to the stream as one entry at the end.
local cancelled = {}
local now_ms = tonumber(ARGV[1])
local reply_documents = ARGV[2] == 'documents'
if not now_ms or (not reply_documents and ARGV[2] ~= 'codes') then
  return redis.error_reply('ERR cancel: malformed header')
end
local unpacked_ok, flat = pcall(cmsgpack.unpack, ARGV[3] or '')
if not unpacked_ok or type(flat) ~= 'table' or #ARGV ~= 3 then
  return redis.error_reply('ERR cancel: ARGV[3] must be the msgpack array of orders, and the last argument')
end

local key_count, floor = #KEYS, math.floor
local function key_index(value)
  if type(value) ~= 'number' or value ~= floor(value) or value < 5 or value > key_count then return nil end
  return value
end

local REASONS = {customer = true, merchant = true, payment_timeout = true}
-- named: order ids and order key indexes seen, so no order (by id or by key) is released twice.
local orders, cursor, named, flat_length = {}, 1, {}, #flat
while cursor <= flat_length do
  local sku_count = flat[cursor + 5]
  local order = {order_index = key_index(flat[cursor]), counter_index = key_index(flat[cursor + 1]),
    order_id = flat[cursor + 2], reason = flat[cursor + 3], due_only = flat[cursor + 4],
    stock_index = {}}
  if not order.order_index or not order.counter_index or type(order.order_id) ~= 'string'
      or not REASONS[order.reason] or type(order.due_only) ~= 'boolean' or named[order.order_id]
      or named[order.order_index] or type(sku_count) ~= 'number' or sku_count < 0
      or sku_count ~= floor(sku_count) or cursor + 5 + 2 * sku_count > flat_length then
    return redis.error_reply('ERR cancel: malformed or repeated order ' .. (#orders + 1))
  end
  named[order.order_id], named[order.order_index] = true, true
  cursor = cursor + 6
  for _ = 1, sku_count do
    local stock_index = key_index(flat[cursor + 1])
    if type(flat[cursor]) ~= 'string' or not stock_index then
      return redis.error_reply('ERR cancel: malformed sku in order ' .. (#orders + 1))
    end
    order.stock_index[flat[cursor]] = stock_index
    cursor = cursor + 2
  end
  orders[#orders + 1] = order
end

local call, CHUNK = redis.call, 1000
--!include chunked

-- Read every document (one MGET, chunked: Lua's unpack takes a bounded number of values) and
-- check its SKUs are all declared before the first write.
for first = 1, #orders, CHUNK do
  local last, keys = math.min(first + CHUNK - 1, #orders), {}
  for index = first, last do keys[#keys + 1] = KEYS[orders[index].order_index] end
  local found = call('MGET', unpack(keys))
  for index = first, last do
    local packed = found[index - first + 1]
    if packed then
      local order = orders[index]
      order.document = cmsgpack.unpack(packed)
      if order.document[1] ~= order.order_id then
        return redis.error_reply('ERR cancel: the key given for order ' .. order.order_id .. ' holds another order')
      end
      local lines = order.document[LINES]
      for line_number = 1, #lines do
        if not order.stock_index[lines[line_number][1]] then
          return redis.error_reply('ERR cancel: stock key of ' .. lines[line_number][1] .. ' not declared')
        end
      end
    end
  end
end

-- Written once at the end of the batch, as reserve.lua does: counter deltas summed per key and
-- field (one HINCRBY each), documents (MSET), deadlines dropped (ZREM), SKUs unflagged (SREM).
-- Nothing else runs while the script does, so the end state is the same as writing each at once.
local deltas, delta_keys = {}, {}
local function add(key, field, amount)
  local fields = deltas[key]
  if not fields then
    fields = {}
    deltas[key] = fields
    delta_keys[#delta_keys + 1] = key
  end
  fields[field] = (fields[field] or 0) + amount
end
local documents, unscheduled, released_skus, released_list = {}, {}, {}, {}
local now_text = string.format('%d', now_ms)

local function release(order)
  local document = order.document
  local paid = document[STATUS] == 'paid'
  local held_field = paid and 'c:' or 'r:'
  local lines = document[LINES]
  local counter_key = KEYS[order.counter_index]
  for line_number = 1, #lines do
    local line = lines[line_number]
    local sku, warehouse, qty = line[1], line[2], line[3]
    local stock_key = KEYS[order.stock_index[sku]]
    add(stock_key, held_field .. warehouse, -qty)
    add(stock_key, 'a:' .. warehouse, qty)
    add(counter_key, sku, -qty)
    if not released_skus[sku] then
      released_skus[sku] = true
      released_list[#released_list + 1] = sku
    end
  end
  if paid then
    document[REFUND_STATUS] = 'refund_pending'
    document[REFUND_AMOUNT] = document[PAID_AMOUNT]
  end
  document[STATUS] = 'cancelled'
  document[REASON] = order.reason
  document[VERSION] = document[VERSION] + 1
  document[UPDATED] = now_ms
  local packed = cmsgpack.pack(document)
  documents[#documents + 1] = KEYS[order.order_index]
  documents[#documents + 1] = packed
  unscheduled[#unscheduled + 1] = order.order_id
  cancelled[#cancelled + 1] = packed
  return packed
end

-- One answer per order: {code, document} (the document as it is now, packed unless it is packed already).
local results = {}
local function answer(index, code, document, packed)
  if not reply_documents then
    results[index] = code
  elseif packed or not document then
    results[index] = {code, packed or ''}
  else
    results[index] = {code, cmsgpack.pack(document)}
  end
end

for index = 1, #orders do
  local order = orders[index]
  local document = order.document
  if not document then
    unscheduled[#unscheduled + 1] = order.order_id
    answer(index, CODE_NOT_FOUND)
  elseif document[STATUS] == 'cancelled' then
    unscheduled[#unscheduled + 1] = order.order_id
    answer(index, CODE_ALREADY, document)
  elseif order.due_only and (document[STATUS] ~= 'pending_payment' or document[EXPIRES] > now_ms) then
    if document[STATUS] ~= 'pending_payment' then unscheduled[#unscheduled + 1] = order.order_id end
    answer(index, CODE_NOT_DUE, document)
  elseif (document[STATUS] ~= 'pending_payment' and document[STATUS] ~= 'paid')
      or (document[SHIPMENTS] and #document[SHIPMENTS] > 0) then  -- a shipment left: too late to cancel
    answer(index, CODE_NOT_CANCELLABLE, document)
  else
    answer(index, CODE_CANCELLED, nil, release(order))
  end
end

for _, key in ipairs(delta_keys) do
  for field, amount in pairs(deltas[key]) do
    if amount ~= 0 then call('HINCRBY', key, field, amount) end
  end
end
--!include stream_entries
append_documents(stream_key, metrics_key, 'order_cancelled', 'orders_cancelled', cancelled, 't', now_text)
call_chunked('MSET', nil, documents)
call_chunked('ZREM', expiry_key, unscheduled)
call_chunked('SREM', sold_out_key, released_list)
return results
