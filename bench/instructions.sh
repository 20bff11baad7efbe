#!/usr/bin/env bash
# Instructions per call of ringway builds, counted by callgrind: deterministic for a given
# binary and load, so it compares builds (before/after a change) where the busy 2-core machine
# makes CPU-time ratios noisy. Each binary runs under valgrind with one worker on the epoll
# driver (valgrind does not run io_uring), instrumentation switched on only for the measured
# load (after a warm-up): 8 keep-alive connections of binary gRPC-Web unary calls with
# `ringway-load run`, closed loop. Reported: instructions / calls that ended in grpc-status 0.
#
#   bench/instructions.sh BINARY...          e.g. bench/instructions.sh target/release/ringway old/ringway
#   RINGWAY_BENCH_DURATION_S (10)            length of the measured load
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${RINGWAY_BENCH_DURATION_S:-10}
PORT=${RINGWAY_BENCH_BASE_PORT:-47350}
LOAD=target/release/ringway-load
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
[ -x "$LOAD" ] || cargo build --release -p ringway-load
OUT=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$OUT"' EXIT
wait_port() { for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done; return 1; }

"$LOAD" backend --listen "127.0.0.1:$((PORT + 1))" --name pod >/dev/null 2>&1 &
pids+=($!)
wait_port $((PORT + 1))
printf '%-45s %14s %10s %12s\n' binary instructions calls "per call"
for binary in "$@"; do
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.out" \
    "$binary" --listen "127.0.0.1:$PORT" --admin off --workers 1 --io-driver epoll \
    --upstream "127.0.0.1:$((PORT + 1))" --log-level error >/dev/null 2>"$OUT/valgrind.log" &
  proxy=$!
  pids+=("$proxy")
  wait_port "$PORT"
  "$LOAD" run --target "http://127.0.0.1:$PORT" --connections 8 --duration 3s >/dev/null 2>&1 || true
  callgrind_control -i on "$proxy" >/dev/null
  "$LOAD" run --target "http://127.0.0.1:$PORT" --connections 8 --duration "${DURATION}s" \
    --json "$OUT/load.json" >/dev/null 2>&1 || true
  callgrind_control -i off "$proxy" >/dev/null
  callgrind_control -d "$proxy" >/dev/null
  kill "$proxy"; wait "$proxy" 2>/dev/null || true
  python3 - "$OUT" "$binary" <<'PY'
import glob, json, sys
out, binary = sys.argv[1:]
calls = json.load(open(f"{out}/load.json"))["calls_ok"]
ir = 0
for path in glob.glob(f"{out}/cg.out*"):
    for line in open(path):
        if line.startswith(("summary:", "totals:")):
            ir = max(ir, int(line.split()[1]))
print(f"{binary:45} {ir:14,} {calls:10,} {ir / max(calls, 1):12,.0f}")
PY
  rm -f "$OUT"/cg.out* "$OUT/load.json"
done
