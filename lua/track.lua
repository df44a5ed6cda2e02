--[[
track.lua — record one logistics event of a shipped shipment.

The event joins the end of the shipment's track (kept in the order document, at
most track_length_max events per shipment). The same event (status, location,
occurred_ms) twice is recorded once. No stock changes.

KEYS[1]  event stream of the partition
KEYS[2]  order document

ARGV[1]  now_ms
ARGV[2]  order_id
ARGV[3]  shipment_id
ARGV[4]  status (carrier status: in_transit, delivered, lost, delayed, …)
ARGV[5]  location
ARGV[6]  occurred_ms (when the carrier saw it)
ARGV[7]  track_length_max

Returns {code, order document (msgpack) or ""}
  code 1 recorded   2 already recorded (unchanged)   3 order not found
  code 4 the shipment has not shipped (or is not the order's)   5 the track is full (unchanged)
Mirrored by reservation.outcomes.TrackCode. Document layout: see ship.lua.
Event: k shipment_tracked, o document, m {} (no movements), t now_ms.
]]

local CODE_RECORDED, CODE_ALREADY, CODE_NOT_FOUND, CODE_NOT_SHIPPED, CODE_FULL = 1, 2, 3, 4, 5
local VERSION, UPDATED, SHIPMENTS = 18, 19, 22

local stream_key, order_key = KEYS[1], KEYS[2]
local now_ms, shipment_id, status, location = tonumber(ARGV[1]), ARGV[3], ARGV[4], ARGV[5]
local occurred_ms, track_length_max = tonumber(ARGV[6]), tonumber(ARGV[7])
if not now_ms or not occurred_ms or not track_length_max or #ARGV ~= 7 or #KEYS ~= 2 then
  return redis.error_reply('ERR track: malformed arguments')
end

local packed = redis.call('GET', order_key)
if not packed then return {CODE_NOT_FOUND, ''} end
local document = cmsgpack.unpack(packed)
if not document[SHIPMENTS] then return {CODE_NOT_SHIPPED, packed} end  -- written before any shipment

local shipment = nil
for _, state in ipairs(document[SHIPMENTS]) do
  if state[1] == shipment_id then shipment = state end
end
if not shipment then return {CODE_NOT_SHIPPED, packed} end
local track = shipment[5]
for _, event in ipairs(track) do
  if event[1] == status and event[2] == location and event[3] == occurred_ms then return {CODE_ALREADY, packed} end
end
if #track >= track_length_max then return {CODE_FULL, packed} end
-- Appended in arrival order (a position never changes, so Postgres keys events by it).
track[#track + 1] = {status, location, occurred_ms, now_ms}

document[VERSION] = document[VERSION] + 1
document[UPDATED] = now_ms
packed = cmsgpack.pack(document)
redis.call('SET', order_key, packed)
redis.call('XADD', stream_key, '*', 'k', 'shipment_tracked', 'o', packed, 'm', cmsgpack.pack({}),
  't', string.format('%d', now_ms))
return {CODE_RECORDED, packed}
