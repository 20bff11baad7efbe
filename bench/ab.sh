#!/usr/bin/env bash
# A/B two ringway builds (or one build with two sets of flags) under the e2e latency load:
# alternating runs, proxy CPU per request (schedstat, all threads), its user/kernel split,
# requests/s and p99, then the medians. The way the io_uring flags, the h2 adapters and the
# allocator settings in docs/benchmarks.md were compared.
#
# Usage: bench/ab.sh BINARY_A BINARY_B [REPEATS] [DURATION_S] [CONNECTIONS] [WORKERS]
#        (defaults 3 8 64 1). Extra ringway flags per side: RINGWAY_AB_FLAGS_A / _B; an
#        environment prefix per side (e.g. "env MIMALLOC_VERBOSE=1"): RINGWAY_AB_ENV_A / _B.
# Pinning as bench/e2e.sh: the proxy on CPU 0, backend (target/release/ringway-load) and wrk
# on CPU 1. Only 127.0.0.1; every process started is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 2 ] || [ "$1" = -h ] || [ "$1" = --help ]; then sed -n '2,11p' "$0"; exit 2; fi
A=$1; B=$2; REPEATS=${3:-3}; DURATION=${4:-8}; CONNS=${5:-64}; WORKERS=${6:-1}
PROXY_PORT=18380; BACKEND_PORT=18381
LOAD="$ROOT/target/release/ringway-load"
for tool in wrk taskset; do command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }; done
[ -x "$LOAD" ] || { echo "build ringway-load first: cargo build --release -p ringway-load" >&2; exit 1; }
ulimit -n $((CONNS * 4 + 1024)) 2>/dev/null || true

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wrk_run() { # seconds -> wrk's RESULT line
  taskset -c 1 wrk -t 1 -c "$CONNS" -d "${1}s" -s "$ROOT/bench/wrk-grpc-web.lua" \
    "http://127.0.0.1:$PROXY_PORT/ringway.test.Echo/Unary" | grep '^RESULT' || true
}
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f", s }'; }
ticks() { awk '{ print $14, $15 }' /proc/"$1"/stat; }

one_run() { # side binary flags env -> one result row
  local side=$1 binary=$2 flags=$3 envp=$4
  taskset -c 1 "$LOAD" backend --listen "127.0.0.1:$BACKEND_PORT" --name pod-1 --threads 1 \
    >/dev/null 2>&1 &
  local backend=$!; pids+=("$backend")
  # shellcheck disable=SC2086 # flags and env prefix are word lists on purpose
  $envp taskset -c 0 "$binary" --listen "127.0.0.1:$PROXY_PORT" \
    --upstream "127.0.0.1:$BACKEND_PORT" --workers "$WORKERS" --admin off --log-level warn \
    $flags >/dev/null 2>&1 &
  local proxy=$!; pids+=("$proxy")
  sleep 1
  wrk_run 2 >/dev/null
  local cpu_a ticks_a cpu_b ticks_b result
  cpu_a=$(cpu_ns "$proxy"); ticks_a=$(ticks "$proxy")
  result=$(wrk_run "$DURATION")
  cpu_b=$(cpu_ns "$proxy"); ticks_b=$(ticks "$proxy")
  kill "$proxy" "$backend"; wait "$proxy" "$backend" 2>/dev/null || true
  echo "$result $cpu_a $cpu_b $ticks_a $ticks_b" | awk -v side="$side" -v hz="$(getconf CLK_TCK)" '{
    # RESULT and 8 key=value fields, then cpu_a cpu_b, utime_a stime_a, utime_b stime_b.
    for (i = 2; i <= 9; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    n = v["requests"]; if (n == 0) { print side, "FAILED"; exit }
    printf "%s\t%.0f\t%d\t%.2f\t%.2f\t%.2f\n", side, v["rps"], v["p99_us"], ($11 - $10) / 1000 / n,
      ($14 - $12) * 1e6 / hz / n, ($15 - $13) * 1e6 / hz / n }'
}

rows=$(mktemp)
printf 'side\treq/s\tp99_us\tcpu_us_per_req\tuser_us\tkernel_us\n'
for run in $(seq "$REPEATS"); do
  one_run A "$A" "${RINGWAY_AB_FLAGS_A:-}" "${RINGWAY_AB_ENV_A:-}" | tee -a "$rows"
  one_run B "$B" "${RINGWAY_AB_FLAGS_B:-}" "${RINGWAY_AB_ENV_B:-}" | tee -a "$rows"
done
echo "medians:"
for side in A B; do
  awk -v side="$side" '$1 == side' "$rows" | python3 -c '
import statistics, sys
rows = [l.split("\t") for l in sys.stdin if "FAILED" not in l]
if rows:
    cols = list(zip(*rows))[1:]
    print(sys.argv[1], *("%g" % statistics.median(map(float, c)) for c in cols), sep="\t")
' "$side"
done
rm -f "$rows"
