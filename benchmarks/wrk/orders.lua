-- wrk script: POST /v1/orders for one hot SKU, a fresh Idempotency-Key and customer per request.
-- Usage: GATEWAY_TOKEN=... wrk -t1 -c64 -d20s -s benchmarks/wrk/orders.lua http://127.0.0.1:8000
local counter = 0
local thread_id = 0
local token = os.getenv("GATEWAY_TOKEN") or ""
local sku = os.getenv("SKU") or "hot"

function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
end

function request()
  counter = counter + 1
  local key = string.format("wrk-%d-%d-%d", id or 0, counter, math.random(1, 1000000000))
  local body = string.format(
    '{"customer_id":"c%d-%d","region":"eu","order_type":"flash","items":[{"sku":"%s","qty":1}]}',
    id or 0, counter, sku)
  return wrk.format("POST", "/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = key,
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
