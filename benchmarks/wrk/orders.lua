-- wrk script: POST /v1/orders for one hot SKU, a fresh Idempotency-Key and customer per request.
-- Usage: GATEWAY_TOKEN=... RUN_ID=$(date +%s) wrk -t1 -c64 -d20s -s benchmarks/wrk/orders.lua http://127.0.0.1:8000
-- Environment: GATEWAY_TOKEN (bearer token), SKU (default "hot"), RUN_ID (makes keys unique across runs:
-- LuaJIT's math.random is not seeded, so without it two runs would send the same keys and get replays).
-- At the end it prints a human line and one `WRK_JSON {...}` line that benchmarks/e2e.py parses.
local counter = 0
local thread_id = 0
local threads = {}
local token = os.getenv("GATEWAY_TOKEN") or ""
local sku = os.getenv("SKU") or "hot"
local run_id = os.getenv("RUN_ID") or tostring(os.time())
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. token,
}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
  table.insert(threads, thread)
end

function request()
  counter = counter + 1
  headers["Idempotency-Key"] = string.format("wrk-%s-%d-%d", run_id, id or 0, counter)
  local body = string.format(
    '{"customer_id":"c%s-%d-%d","region":"eu","order_type":"flash","items":[{"sku":"%s","qty":1}]}',
    run_id, id or 0, counter, sku)
  return wrk.format("POST", "/v1/orders", headers, body)
end

function done(summary, latency, requests)
  local function ms(percentile)
    return latency:percentile(percentile) / 1000
  end
  io.write(string.format("p50 %.2f ms  p99 %.2f ms  p99.9 %.2f ms\n", ms(50), ms(99), ms(99.9)))
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,' ..
    '"p999_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f}\n',
    summary.requests, summary.duration, summary.bytes, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, ms(50), ms(90), ms(99), ms(99.9), latency.max / 1000, latency.mean / 1000))
end
