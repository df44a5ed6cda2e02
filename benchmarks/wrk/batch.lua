-- wrk script: POST /v1/orders:batch with ORDERS_PER_REQUEST (default 100) single-line orders for one hot SKU,
-- each with a fresh idempotency key and customer.
-- Usage: GATEWAY_TOKEN=... RUN_ID=$(date +%s) wrk -t1 -c64 -d20s -s benchmarks/wrk/batch.lua http://127.0.0.1:8000
-- Counts the accepted orders in the responses (results with "status":201) and prints them in the
-- `WRK_JSON {...}` line, with the request latencies; a request answered non-2xx counts in non_2xx.
local counter = 0
local thread_id = 0
local threads = {}
accepted = 0 -- a global: done() reads it from every thread with thread:get()
local token = os.getenv("GATEWAY_TOKEN") or ""
local sku = os.getenv("SKU") or "hot"
local run_id = os.getenv("RUN_ID") or tostring(os.time())
local per_request = tonumber(os.getenv("ORDERS_PER_REQUEST") or "100")
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. token,
}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
  table.insert(threads, thread)
end

function init(args)
  accepted = 0
end

function request()
  local orders = {}
  for index = 1, per_request do
    counter = counter + 1
    orders[index] = string.format(
      '{"idempotency_key":"wrkb-%s-%d-%d","customer_id":"cb%s-%d-%d","region":"eu","order_type":"flash",' ..
      '"items":[{"sku":"%s","qty":1}]}',
      run_id, id or 0, counter, run_id, id or 0, counter, sku)
  end
  return wrk.format("POST", "/v1/orders:batch", headers, '{"orders":[' .. table.concat(orders, ",") .. ']}')
end

function response(status, response_headers, body)
  if status >= 200 and status < 300 then
    local _, found = string.gsub(body, '"status":201', "")
    accepted = accepted + found
  end
end

function done(summary, latency, requests)
  local total_accepted = 0
  for _, thread in ipairs(threads) do
    total_accepted = total_accepted + (thread:get("accepted") or 0)
  end
  local function ms(percentile)
    return latency:percentile(percentile) / 1000
  end
  local seconds = summary.duration / 1000000
  io.write(string.format("%d orders accepted, %.0f orders/s; request p50 %.2f ms  p99 %.2f ms\n",
    total_accepted, total_accepted / seconds, ms(50), ms(99)))
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"non_2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,' ..
    '"p999_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f,"orders_per_request":%d,"accepted_orders":%d}\n',
    summary.requests, summary.duration, summary.bytes, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, ms(50), ms(90), ms(99), ms(99.9), latency.max / 1000, latency.mean / 1000,
    per_request, total_accepted))
end
