#!/usr/bin/env bash
# Capacity of `ringway-load run` against wrk: same target, same connections and threads, same
# pinning, alternating runs. Reports each generator's requests/s and its own CPU time per
# request (user + sys from /usr/bin/time), the figure that says how much headroom it has.
#
# Setup (as bench/e2e.sh): ringway --workers 1 pinned to CPU 0; the HTTP/2 backend
# (`ringway-load backend`) and the load generator pinned to CPU 1.
#
# Usage: bench/load-vs-wrk.sh [DURATION_S] [REPEATS] [CONNECTIONS]   (defaults 10 3 64)
# Needs: wrk, taskset, /usr/bin/time, release binaries (cargo build --release -p ringway -p ringway-load).
# Ports: 19080 (proxy), 19001 (backend).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
DURATION=${1:-10}
REPEATS=${2:-3}
CONNECTIONS=${3:-64}
OUT=$(mktemp -d /tmp/load-vs-wrk.XXXXXX)

taskset -c 1 "$BIN/ringway-load" backend --listen 127.0.0.1:19001 >"$OUT/backend.log" 2>&1 &
BACKEND=$!
taskset -c 0 "$BIN/ringway" --listen 127.0.0.1:19080 --upstream 127.0.0.1:19001 --workers 1 \
  >"$OUT/proxy.log" 2>&1 &
PROXY=$!
trap 'kill $PROXY $BACKEND 2>/dev/null || true' EXIT
sleep 1

# Warm-up, not recorded.
taskset -c 1 wrk -t 1 -c "$CONNECTIONS" -d 2s -s "$ROOT/bench/wrk-grpc-web.lua" \
  http://127.0.0.1:19080 >/dev/null

printf 'generator\trepeat\trps\tcpu_us_per_req\tp50_us\tp99_us\terrors\tloadavg_1m\n'
for repeat in $(seq 1 "$REPEATS"); do
  /usr/bin/time -f '%U %S' -o "$OUT/wrk.time" taskset -c 1 wrk -t 1 -c "$CONNECTIONS" \
    -d "${DURATION}s" -s "$ROOT/bench/wrk-grpc-web.lua" http://127.0.0.1:19080 >"$OUT/wrk.out"
  read -r user sys <"$OUT/wrk.time"
  line=$(grep '^RESULT' "$OUT/wrk.out")
  field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$line"; }
  requests=$(field requests)
  errors=$(($(field non_200) + $(field grpc_errors) + $(field socket_errors)))
  printf 'wrk\t%s\t%s\t%.2f\t%s\t%s\t%s\t%s\n' "$repeat" "$(field rps)" \
    "$(echo "($user + $sys) * 1000000 / $requests" | bc -l)" "$(field p50_us)" "$(field p99_us)" \
    "$errors" "$(cut -d' ' -f1 /proc/loadavg)"

  /usr/bin/time -f '%U %S' -o "$OUT/load.time" taskset -c 1 "$BIN/ringway-load" run \
    --target http://127.0.0.1:19080 --connections "$CONNECTIONS" --threads 1 \
    --duration "${DURATION}s" --json "$OUT/load.json" >"$OUT/load.out"
  read -r user sys <"$OUT/load.time"
  python3 - "$OUT/load.json" "$user" "$sys" "$repeat" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
user, sys_, repeat = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
calls = r["calls_ok"] + r["errors"]
load = open("/proc/loadavg").read().split()[0]
print(f'ringway-load\t{repeat}\t{r["requests_per_s"]:.1f}\t{(user + sys_) * 1e6 / max(calls, 1):.2f}'
      f'\t{r["latency_us"]["p50"]}\t{r["latency_us"]["p99"]}\t{r["errors"]}\t{load}')
EOF
done
