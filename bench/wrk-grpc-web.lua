-- wrk script for bench/e2e.sh: binary gRPC-Web unary calls, as a browser's grpc-web client
-- sends them, with a check of every reply.
--
-- Request: POST /ringway.test.Echo/Unary, content-type application/grpc-web+proto, body = one
-- uncompressed gRPC frame (flag 0, big-endian length 16) holding a 16-byte message.
-- A reply counts as good when its status is 200 and its body ends in a trailer frame saying
-- grpc-status:0. Bad replies are counted per thread and the first one is printed.
-- done() prints one machine-readable RESULT line that e2e.sh parses.

wrk.method = "POST"
wrk.path = "/ringway.test.Echo/Unary"
wrk.headers["content-type"] = "application/grpc-web+proto"
wrk.headers["x-grpc-web"] = "1"
wrk.headers["accept"] = "application/grpc-web+proto"
wrk.body = "\0\0\0\0\16" .. "ringway-16-bytes"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non_200 = 0
  grpc_errors = 0
  first_bad = ""
end

function response(status, headers, body)
  if status ~= 200 then
    non_200 = non_200 + 1
    if first_bad == "" then
      first_bad = "HTTP " .. status .. ": " .. string.sub(body or "", 1, 200)
    end
  elseif not string.find(body or "", "grpc-status:0", 1, true)
      and headers["grpc-status"] ~= "0" then
    grpc_errors = grpc_errors + 1
    if first_bad == "" then
      first_bad = "grpc error, grpc-status=" .. tostring(headers["grpc-status"])
          .. " grpc-message=" .. tostring(headers["grpc-message"])
    end
  end
end

function done(summary, latency, requests)
  local bad_http, bad_grpc, example = 0, 0, ""
  for _, thread in ipairs(threads) do
    bad_http = bad_http + thread:get("non_200")
    bad_grpc = bad_grpc + thread:get("grpc_errors")
    if example == "" then example = thread:get("first_bad") end
  end
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non_200=%d grpc_errors=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.requests / summary.duration * 1e6,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)), bad_http, bad_grpc, socket_errors))
  if example ~= "" then
    io.write("FIRST_BAD " .. string.gsub(example, "\n", " ") .. "\n")
  end
end
