-- wrk script for bench/throughput/run.sh.
-- done() prints one machine-readable line:
--   RESULT <req/s> <requests> <p50 us> <p99 us> <max us> <socket errors> <status>=400 responses> <duration us>
-- With COUNT_BACKENDS=1 it also counts responses per backend (from the body's
-- "backend-N" prefix) and prints "DIST backend-1=n,backend-2=m,...".  Counting
-- runs Lua per response and slows wrk, so run.sh uses it for warm-ups only.
-- With DELAY_MS=n each connection waits n ms between requests, which holds
-- the offered load below what Caddy can serve (at most CONNS x 1000/n req/s):
-- Caddy's CPU per request then measures a policy's cost without the
-- scheduler's sharing of the cores deciding who gets them.
local threads = {}

local delay_ms = tonumber(os.getenv("DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function setup(thread)
  table.insert(threads, thread)
end

if os.getenv("COUNT_BACKENDS") == "1" then
  function init(args)
    counts = {}
  end

  function response(status, headers, body)
    local b = body and string.match(body, "^(backend%-%d+)") or ("status-" .. status)
    counts[b] = (counts[b] or 0) + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status, summary.duration))
  if os.getenv("COUNT_BACKENDS") == "1" then
    local total = {}
    for _, t in ipairs(threads) do
      local c = t:get("counts") or {}
      for k, v in pairs(c) do
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
end
