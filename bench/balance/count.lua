-- wrk script for bench/balance/run.sh: counts responses per backend from
-- the body's "backend-N" prefix, and prints two machine-readable lines:
--   RESULT <req/s> <requests> <p50 us> <p90 us> <p99 us> <p99.9 us> <max us>
--          <socket errors> <status>=400 responses> <duration us>
--   DIST   backend-1=n,backend-2=m,...   (other bodies count as "other")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  local k = body and string.match(body, "^backend%-%d+") or "other"
  counts[k] = (counts[k] or 0) + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status, summary.duration))
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts") or {}) do
      total[k] = (total[k] or 0) + v
    end
  end
  local keys = {}
  for k in pairs(total) do
    table.insert(keys, k)
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    table.insert(parts, k .. "=" .. total[k])
  end
  io.write("DIST\t" .. table.concat(parts, ",") .. "\n")
end
