--[[
reserve.lua — decide a batch of orders, each independently and all-or-nothing.

For every order: replay its idempotency record if one exists; otherwise check the
customer blocklist, the region's dispatch rule, each SKU's sale window and
per-customer limit, allocate every line to the region's warehouses in dispatch
order, and only if every line fits: move the units from available to reserved,
count them against the customer's limit, store the order document, schedule its
expiry, record the idempotency key (with the accepted document, so a replay answers
the original body without naming the original order's key) and append an
`order_created` event.

KEYS[1]  event stream of the partition
KEYS[2]  expiry sorted set of the partition (score = deadline ms, member = order id)
KEYS[3]  dispatch hash (field region -> comma-separated warehouse ids in priority order)
KEYS[4]  blocklist hash (field customer id -> reason)
KEYS[5]  sold-out set of the partition: SKUs with no sellable unit in any warehouse
KEYS[6]  metrics hash of the partition (field "reserve_<code>" -> orders decided with that code;
         field "stream_extra_events" -> events the stream holds beyond one per entry, see below)
KEYS[7…] the keys the orders below name by index (idempotency, order, customer
         counters, SKU config, SKU stock)

ARGV[1]  now_ms
ARGV[2]  stream_length_max: refuse new orders while the stream holds this many entries
ARGV[3]  idempotency_ttl_ms
ARGV[4]  attempts_max: orders a customer may try per window (0: no limit)
ARGV[5]  window_ms of that limit
ARGV[6]  abnormal_attempts_max: more tries than this in one window start a cool-down (0: never)
ARGV[7]  cooldown_ms
ARGV[8]  client_attempts_max: orders one API client may send per window (0: no limit)
ARGV[9]  the orders, one flat msgpack array (msgspec on the client packs it in C; one argument
         instead of ~20 per order costs both sides far less, and one flat table costs Lua less
         than nested ones). Each order in turn:
           idempotency_key_index, order_key_index, customer_counter_key_index, customer_rate_key_index
           (0 when attempts_max and abnormal_attempts_max are 0), client_rate_key_index (0 when
           client_attempts_max is 0), order_id, document_tail, fingerprint, customer_id, region, document_head,
           hold_ttl_ms, allow_split (boolean), line count n,
           then n × sku, qty, sku_config_key_index, sku_stock_key_index
         (SKUs within one order are distinct: the caller merges duplicates).
         The order document below as the caller packs what it knows: document_head is its array
         header and fields 1-7 (order_id, 'pending_payment', customer_id, region, order_type,
         now_ms, now_ms + hold_ttl_ms), document_tail fields 11-21 ('', '', 0, '', 0, '', 0, 1,
         now_ms, idempotency_key, fingerprint); the script packs fields 8-10, which its decisions
         make, between them: the same bytes as cmsgpack.pack of the whole table, for a third of
         the packing (callgrind: packing whole documents was 9 % of a call's instructions).

Returns one flat array, two entries per order, in order: code, detail, code, detail, …
  code 1 accepted   detail = order document (msgpack)
  code 2 replayed   detail = order document (msgpack) as it was when accepted
  code 3 sold out            detail = sku
  code 4 purchase limit      detail = sku
  code 5 sale not open       detail = sku
  code 6 customer blocked    detail = ""
  code 7 idempotency key reused with another body  detail = original order id
  code 8 unknown sku         detail = sku
  code 9 unknown region      detail = region
  code 10 stream backlog full detail = ""
  code 11 mixed currencies   detail = sku
  code 12 rate limited       detail = ms until the window ends
  code 13 cooling down       detail = ms until the cool-down ends
Mirrored by reservation.outcomes.ReserveCode.
Customer rate hash (customer_rate_key): start (window start ms), n (tries in it), cool (cool-down end ms).
Client rate hash (client_rate_key): start, n, over the same window.
A replay is not a try; every other order is, whatever its outcome.

Order document (msgpack array, 1-based here; mirrored by reservation.records.OrderRecord):
  1 order_id 2 status 3 customer_id 4 region 5 order_type 6 created_ms 7 expires_ms
  8 total 9 currency 10 lines {{sku, warehouse_id, qty, unit_price, merchant_id}, …}
  11 cancel_reason 12 payment_id 13 paid_amount 14 payment_method 15 paid_ms
  16 refund_status 17 refund_amount 18 version 19 updated_ms 20 idempotency_key 21 fingerprint
Stock hash fields per warehouse w: a:w available, r:w reserved, c:w committed, h:w on hand.
Events: one stream entry per call, whatever the number of orders it accepts (an XADD per order
  was 13 % of a call's instructions at 100 orders a call, and each entry costs the persister a
  read and an acknowledgement). One order: k order_created, o its document; two or more:
  k orders_created, o the msgpack array of their documents, in order. No t (time) field: it would
  be each document's updated_ms. No m (movements) field: each document line {sku, wh, qty} is the
  movement {sku, wh, 'reserve', qty, -qty, qty, 0, 0}, and the persister derives it.
  An entry of n orders adds n - 1 to the metrics hash's stream_extra_events (ack.lua takes them
  off as the persister acknowledges it), so the backlog bound counts events: XLEN + that field.
Idempotency record: a string, the accepted document (order id and fingerprint are its fields
  1 and 21), expiring after idempotency_ttl_ms.
]]

-- Globals read per order, kept in locals (a global is a table look-up in Lua 5.1).
local call, type, tonumber, floor = redis.call, type, tonumber, math.floor

-- Result codes are written as numbers (the list is in the header): a named local would be one
-- more upvalue for every function that returns it, captured anew on every call.

local stream_key, expiry_key, dispatch_key, blocklist_key, sold_out_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local metrics_key = KEYS[6]
local now_ms = tonumber(ARGV[1])
local stream_length_max = tonumber(ARGV[2])
local idempotency_ttl_ms = tonumber(ARGV[3])
local attempts_max, window_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local abnormal_max, cooldown_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local client_attempts_max = tonumber(ARGV[8])
if not now_ms or not stream_length_max or not idempotency_ttl_ms or idempotency_ttl_ms < 1
    or idempotency_ttl_ms ~= math.floor(idempotency_ttl_ms) or not attempts_max
    or not window_ms or not abnormal_max or not cooldown_ms or not client_attempts_max then
  return redis.error_reply('ERR reserve: malformed header')
end

local function int(value)
  return string.format('%d', value)
end

-- Stock of every SKU the batch touches is read once (HGETALL) and kept here; orders are
-- decided against these numbers and the changed counters are written once at the end,
-- one HSET per SKU. Nothing else runs while the script does, so this is exact.
-- stock[stock_key] = {available = {warehouse -> n}, reserved = {warehouse -> n}, changed = {warehouse -> true}}
local stock = {}

local function stock_of(stock_key)
  local levels = stock[stock_key]
  if not levels then
    levels = {available = {}, reserved = {}, changed = {}}
    local fields = call('HGETALL', stock_key)
    for index = 1, #fields, 2 do
      local kind, warehouse = string.sub(fields[index], 1, 2), string.sub(fields[index], 3)
      if kind == 'a:' then
        levels.available[warehouse] = tonumber(fields[index + 1])
      elseif kind == 'r:' then
        levels.reserved[warehouse] = tonumber(fields[index + 1])
      end
    end
    stock[stock_key] = levels
  end
  return levels
end

-- Flag the SKU when no warehouse at all has a sellable unit left. The flag lets every
-- worker refuse at once without calling Redis; anything that adds stock clears it.
local flagged = {}
local function flag_if_sold_out(sku, stock_key, safety)
  if flagged[sku] then return end
  for _, available in pairs(stock_of(stock_key).available) do
    if available - safety > 0 then return end
  end
  flagged[sku] = true
  call('SADD', sold_out_key, sku)
end

-- Configuration, dispatch rules (split into warehouse lists) and the blocklist do not change
-- while the script runs: each is read once per batch. Customer counters do change, and are read each time.
local config_cache, rule_cache, blocked_cache = {}, {}, {}
local stream_length, blocklist_empty = nil, nil
-- Idempotency records: read for the whole batch before deciding (records[order position]),
-- and the ones this batch writes (written[idempotency key index]).
local records, written = {}, {}


-- A SKU's config, its numbers parsed once per batch (tonumber of a string is a strtod):
-- {price or nil, currency, merchant_id, per_customer_limit or nil, sale_starts_ms or nil,
--  sale_ends_ms or nil, safety_stock (0 when unset)}; no price: the SKU is unknown.
local function sku_config(config_index)
  local config = config_cache[config_index]
  if not config then
    config = call('HMGET', KEYS[config_index], 'price', 'currency', 'merchant_id',
      'per_customer_limit', 'sale_starts_ms', 'sale_ends_ms', 'safety_stock')
    config[1], config[4], config[5] = tonumber(config[1]), tonumber(config[4]), tonumber(config[5])
    config[6], config[7] = tonumber(config[6]), tonumber(config[7]) or 0
    config_cache[config_index] = config
  end
  return config
end

-- The orders are read straight from the flat argument, never copied into a table per order or
-- per line: `o` below is the index in `flat` where an order starts, and its fields are at
-- o + 0 idempotency_key_index, 1 order_key_index, 2 customer_counter_key_index,
-- 3 customer_rate_key_index, 4 client_rate_key_index, 5 order_id, 6 document_tail, 7 fingerprint,
-- 8 customer_id, 9 region, 10 document_head, 11 hold_ttl_ms, 12 allow_split, 13 line count n, and
-- line l (1-based) at o + 10 + 4l: sku, qty, sku_config_key_index, sku_stock_key_index.
-- (Tables made per order were a tenth of a call's instructions: allocation, hashing, collection.)
local flat
-- starts[position]: where the position-th order starts in flat.
local starts

-- The plan of the order being decided: 7 values per piece (sku, warehouse, qty, unit price,
-- merchant, stock key, safety stock), reused from one order to the next.
local pieces = {}

-- Read every line's config and plan its allocation into `pieces` without changing anything.
-- Returns the piece count, currency and total; or nil, code and detail when the order cannot be held.
local function plan_order(o, warehouses)
  local count, currency, total = 0, nil, 0
  for line = o + 14, o + 10 + 4 * flat[o + 13], 4 do
    local sku, qty = flat[line], flat[line + 1]
    local config = sku_config(flat[line + 2])
    local price = config[1]
    if not price then return nil, 8, sku end -- unknown sku
    if currency and currency ~= config[2] then return nil, 11, sku end -- mixed currencies
    currency = config[2]
    local sale_starts, sale_ends = config[5], config[6]
    if (sale_starts and now_ms < sale_starts) or (sale_ends and now_ms >= sale_ends) then
      return nil, 5, sku -- sale not open
    end
    local limit = config[4]
    if limit then
      local bought = tonumber(call('HGET', KEYS[flat[o + 2]], sku) or '0')
      if bought + qty > limit then return nil, 4, sku end -- purchase limit
    end
    local safety = config[7]
    local stock_key = KEYS[flat[line + 3]]
    local available = stock_of(stock_key).available
    -- The first warehouse, in dispatch order, that has the whole line; else, if the order allows
    -- splitting, every warehouse in that order, each giving what it has; else none.
    local first, last = 1, 0
    for warehouse_number = 1, #warehouses do
      if (available[warehouses[warehouse_number]] or 0) - safety >= qty then
        first, last = warehouse_number, warehouse_number
        break
      end
    end
    if last == 0 and flat[o + 12] == true then last = #warehouses end -- allow_split
    local gathered = 0
    for warehouse_number = first, last do
      local warehouse = warehouses[warehouse_number]
      local take = (available[warehouse] or 0) - safety
      if take > qty - gathered then take = qty - gathered end
      if take > 0 then
        pieces[count * 7 + 1], pieces[count * 7 + 2], pieces[count * 7 + 3] = sku, warehouse, take
        pieces[count * 7 + 4], pieces[count * 7 + 5] = price, config[3]
        pieces[count * 7 + 6], pieces[count * 7 + 7] = stock_key, safety
        count = count + 1
        gathered = gathered + take
        if gathered == qty then break end
      end
    end
    if gathered < qty then
      flag_if_sold_out(sku, stock_key, safety)
      return nil, 3, sku -- sold out
    end
    total = total + price * qty
  end
  return count, currency, total
end

-- Written once at the end of the batch: the order documents (MSET) and their deadlines (ZADD),
-- and the accepted orders' documents, appended to the stream as one entry (created).
local documents, deadlines, created = {}, {}, {}

-- A msgpack array header for n elements (n < 65536).
local function array_header(n)
  if n < 16 then return string.char(0x90 + n) end
  return string.char(0xdc, floor(n / 256), n % 256)
end

local function hold_order(o, count, currency, total)
  -- The document's lines, {sku, warehouse_id, qty, unit_price, merchant_id} each, packed piece
  -- by piece: the bytes cmsgpack.pack makes of the nested tables, without making them.
  local packed_lines = array_header(count)
  for first = 1, count * 7, 7 do
    local sku, warehouse, qty, stock_key, safety = pieces[first], pieces[first + 1], pieces[first + 2],
      pieces[first + 5], pieces[first + 6]
    local levels = stock_of(stock_key)
    levels.available[warehouse] = levels.available[warehouse] - qty
    levels.reserved[warehouse] = (levels.reserved[warehouse] or 0) + qty
    levels.changed[warehouse] = true
    if levels.available[warehouse] - safety <= 0 then flag_if_sold_out(sku, stock_key, safety) end
    packed_lines = packed_lines .. '\149' .. cmsgpack.pack(sku, warehouse, qty, pieces[first + 3], pieces[first + 4])
  end
  local counter_key = KEYS[flat[o + 2]]
  for line = o + 14, o + 10 + 4 * flat[o + 13], 4 do
    call('HINCRBY', counter_key, flat[line], flat[line + 1])
  end
  local packed = flat[o + 10] .. cmsgpack.pack(total, currency) .. packed_lines .. flat[o + 6]
  local index = #documents
  documents[index + 1], documents[index + 2] = KEYS[flat[o + 1]], packed
  deadlines[index + 1], deadlines[index + 2] = now_ms + flat[o + 11], flat[o + 5]
  call('SET', KEYS[flat[o]], packed, 'PX', idempotency_ttl_ms)
  written[flat[o]] = packed
  created[#created + 1] = packed
  return packed
end

-- One more try in a fixed window kept in a hash: returns the tries so far and the window start.
local function count_in_window(rate_key)
  local rate = call('HMGET', rate_key, 'start', 'n')
  local start, tries = tonumber(rate[1]) or 0, tonumber(rate[2]) or 0
  if now_ms - start >= window_ms then start, tries = now_ms, 0 end
  tries = tries + 1
  call('HSET', rate_key, 'start', int(start), 'n', tries)
  call('PEXPIRE', rate_key, window_ms + cooldown_ms)
  return tries, start
end

-- Count this try against the API client's and the customer's windows: a refusal's code and
-- detail when over a limit, else nil.
local function count_attempt(o)
  if client_attempts_max > 0 then
    local tries, start = count_in_window(KEYS[flat[o + 4]])
    if tries > client_attempts_max then return 12, int(start + window_ms - now_ms) end -- rate limited
  end
  if attempts_max == 0 and abnormal_max == 0 then return nil end
  local rate_key = KEYS[flat[o + 3]]
  local cool = tonumber(call('HGET', rate_key, 'cool') or '0')
  if cool > now_ms then return 13, int(cool - now_ms) end -- cooling down
  local tries, start = count_in_window(rate_key)
  if abnormal_max > 0 and tries > abnormal_max then
    call('HSET', rate_key, 'cool', int(now_ms + cooldown_ms))
    return 13, int(cooldown_ms) -- cooling down
  end
  if attempts_max > 0 and tries > attempts_max then return 12, int(start + window_ms - now_ms) end -- rate limited
  return nil
end

-- The order at o, the index-th of the batch: its code and detail.
local function decide(o, index)
  local accepted = written[flat[o]] or records[index]
  if accepted then
    local document = cmsgpack.unpack(accepted)
    if document[21] ~= flat[o + 7] then return 7, document[1] end -- key reused
    return 2, accepted -- replayed
  end
  local limited, wait = count_attempt(o)
  if limited then return limited, wait end
  if not stream_length then
    -- Events the stream holds: one per entry, plus what entries of several orders hold beyond one
    -- (inline: a function made on every call costs a one-order call more than the HGET it saves).
    -- While even entries full of orders could not reach the bound with this batch, the entries
    -- alone decide the same, and the count is not read. An empty stream holds no events whatever
    -- the count says (it could only be left over from entries removed without ack.lua, such as a
    -- stream deleted by hand): the count is cleared then.
    stream_length = call('XLEN', stream_key)
    if stream_length == 0 then
      call('HDEL', metrics_key, 'stream_extra_events')
    elseif stream_length * 1000 + #starts >= stream_length_max then -- 1000 an entry at most (lib/stream_entries.lua)
      stream_length = stream_length + tonumber(call('HGET', metrics_key, 'stream_extra_events') or '0')
    end
  end
  if stream_length >= stream_length_max then return 10, '' end -- backlog full
  local customer_id = flat[o + 8]
  local blocked = blocked_cache[customer_id]
  if blocked == nil and blocklist_empty == nil then
    blocklist_empty = call('HLEN', blocklist_key) == 0
  end
  if blocklist_empty then
    blocked = false
  elseif blocked == nil then
    blocked = call('HEXISTS', blocklist_key, customer_id) == 1
    blocked_cache[customer_id] = blocked
  end
  if blocked then return 6, '' end -- customer blocked
  local region = flat[o + 9]
  local warehouses = rule_cache[region]
  if warehouses == nil then
    local rule = call('HGET', dispatch_key, region)
    warehouses = false
    if rule then
      warehouses = {}
      for warehouse in string.gmatch(rule, '[^,]+') do warehouses[#warehouses + 1] = warehouse end
    end
    rule_cache[region] = warehouses
  end
  if not warehouses then return 9, region end -- unknown region
  local count, currency_or_code, total_or_detail = plan_order(o, warehouses)
  if not count then return currency_or_code, total_or_detail end
  local packed = hold_order(o, count, currency_or_code, total_or_detail)
  stream_length = stream_length + 1
  return 1, packed -- accepted
end

-- Parse and check the whole batch before the first write: a script that fails
-- half-way keeps the writes it already made.
-- KEYS holds exactly the integers 1..#KEYS: a value it has is a whole number in range (so the
-- comparison is safe), without the type() and floor() calls a check per value would make.
local function is_key_index(value)
  return KEYS[value] ~= nil and value >= 7
end

-- A rate key index is 0 (no key sent) when the limits that use that key are off.
local customer_limited, client_limited = attempts_max > 0 or abnormal_max > 0, client_attempts_max > 0
local unpacked_ok
unpacked_ok, flat = pcall(cmsgpack.unpack, ARGV[9] or '')
if not unpacked_ok or type(flat) ~= 'table' or #ARGV ~= 9 then
  return redis.error_reply('ERR reserve: ARGV[9] must be the msgpack array of orders, and the last argument')
end
starts = {}
local cursor, flat_length = 1, #flat
while cursor <= flat_length do
  local position = #starts + 1
  local line_count = flat[cursor + 13]
  if not is_key_index(flat[cursor]) or not is_key_index(flat[cursor + 1]) or not is_key_index(flat[cursor + 2])
      or not (is_key_index(flat[cursor + 3]) or (flat[cursor + 3] == 0 and not customer_limited))
      or not (is_key_index(flat[cursor + 4]) or (flat[cursor + 4] == 0 and not client_limited))
      or type(flat[cursor + 5]) ~= 'string' or type(flat[cursor + 6]) ~= 'string'
      or type(flat[cursor + 7]) ~= 'string' or type(flat[cursor + 8]) ~= 'string'
      or type(flat[cursor + 9]) ~= 'string' or type(flat[cursor + 10]) ~= 'string'
      or type(flat[cursor + 11]) ~= 'number' or type(line_count) ~= 'number' or line_count < 1
      or line_count % 1 ~= 0 or cursor + 13 + 4 * line_count > flat_length then
    return redis.error_reply('ERR reserve: malformed order ' .. position)
  end
  starts[position] = cursor
  local seen = line_count > 1 and {} or nil
  for line = cursor + 14, cursor + 10 + 4 * line_count, 4 do
    local sku, qty = flat[line], flat[line + 1]
    if type(sku) ~= 'string' or (seen and seen[sku]) or type(qty) ~= 'number' or qty < 1 or qty % 1 ~= 0
        or not is_key_index(flat[line + 2]) or not is_key_index(flat[line + 3]) then
      return redis.error_reply('ERR reserve: malformed or repeated line in order ' .. position)
    end
    if seen then seen[sku] = true end
  end
  cursor = cursor + 14 + 4 * line_count
end

-- Every order's idempotency record, read with one MGET (false: none). An order of this batch
-- may repeat an earlier one's key: records written by this batch are looked up first.
local CHUNK = 1000
for first = 1, #starts, CHUNK do
  local last = math.min(first + CHUNK - 1, #starts)
  local keys = {}
  for index = first, last do keys[#keys + 1] = KEYS[flat[starts[index]]] end
  local found = call('MGET', unpack(keys))
  for offset = 1, #found do records[first + offset - 1] = found[offset] end
end

-- One flat reply, code and detail per order (a table per order would cost one more allocation each).
local results, counts = {}, {}
for index = 1, #starts do
  local code, detail = decide(starts[index], index)
  results[2 * index - 1], results[2 * index] = code, detail
  counts[code] = (counts[code] or 0) + 1
end

-- The batch's deferred writes: changed stock counters, order documents, deadlines.
--!include chunked
for stock_key, levels in pairs(stock) do
  local fields = {}
  for warehouse in pairs(levels.changed) do
    fields[#fields + 1] = 'a:' .. warehouse
    fields[#fields + 1] = int(levels.available[warehouse])
    fields[#fields + 1] = 'r:' .. warehouse
    fields[#fields + 1] = int(levels.reserved[warehouse])
  end
  if #fields > 0 then call('HSET', stock_key, unpack(fields)) end
end
--!include stream_entries
append_documents(stream_key, metrics_key, 'order_created', 'orders_created', created)
call_chunked('MSET', nil, documents)
call_chunked('ZADD', expiry_key, deadlines)
for code, count in pairs(counts) do call('HINCRBY', metrics_key, 'reserve_' .. code, count) end
return results
