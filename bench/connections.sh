#!/usr/bin/env bash
# Idle keep-alive connections at scale: ringway with two workers holds N connections (19,000 by
# default: a process may hold at most 20,000 descriptors on these machines) from source
# addresses across 127.0.0.0/8, each having served one gRPC-Web call. Reports the proxy's
# resident memory per connection and the latency of calls on idle connections (bench/
# connections.py), per repeat and as medians with min-max. No test asserts any of it.
#
#   bench/connections.sh [N] [REPEATS]           (defaults: 19000 3)
#   RINGWAY_BENCH_BINARY=path   another ringway build to measure (default target/release/ringway)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-19000}
REPEATS=${2:-3}
BINARY=${RINGWAY_BENCH_BINARY:-target/release/ringway}
PROXY_PORT=${PROXY_PORT:-47080}
BACKEND_PORT=${BACKEND_PORT:-47090}
[ -x "$BINARY" ] && [ -x target/release/ringway-load ] || cargo build --release --workspace --bins

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

target/release/ringway-load backend --listen "127.0.0.1:$BACKEND_PORT" --name pod >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$BACKEND_PORT") 2>/dev/null && break; sleep 0.1; done
results=()
for run in $(seq "$REPEATS"); do
  "$BINARY" --listen "127.0.0.1:$PROXY_PORT" --admin off --workers 2 \
    --upstream "127.0.0.1:$BACKEND_PORT" --idle-timeout-ms 600000 --log-level warn &
  proxy=$!
  pids+=("$proxy")
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break
    sleep 0.1
  done
  result=$(python3 bench/connections.py "127.0.0.1:$PROXY_PORT" "$proxy" "$N")
  echo "run $run: $result"
  results+=("$result")
  kill "$proxy"
  wait "$proxy" 2>/dev/null || true
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
runs = [json.loads(line) for line in sys.stdin]
def summary(values):
    return f"{statistics.median(values):g} ({min(values):g}-{max(values):g})"
print("connections:", runs[0]["connections"], " repeats:", len(runs), " medians (min-max)")
print("  KiB per idle connection:", summary([r["kib_per_connection"] for r in runs]))
print("  RSS idle / with connections (MiB):",
      summary([round(r["rss_before_kib"] / 1024, 1) for r in runs]), "/",
      summary([round(r["rss_after_kib"] / 1024, 1) for r in runs]))
for p in ("median", "p90", "p99"):
    print(f"  call on an idle connection, {p} (us):", summary([r["latency_us"][p] for r in runs]))
print("  failed calls:", sum(r["failed"] for r in runs))
'
