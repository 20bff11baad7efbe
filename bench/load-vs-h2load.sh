#!/usr/bin/env bash
# Capacity of `ringway-load run --http2` against h2load (nghttp2): the same backend, the same
# connections, streams and thread, the same pinning, alternating runs. Reports each generator's
# requests/s and its own CPU time per request (user + sys from /usr/bin/time), the figure that
# says how much headroom it has.
#
# Setup: no proxy (ringway has no HTTP/2 downstream yet): the HTTP/2 test backend
# (`ringway-load backend`, one thread) pinned to CPU 0, the load generator to CPU 1. Native gRPC
# unary calls, 16-byte messages, CONNECTIONS connections × STREAMS concurrent streams.
#
# With RINGWAY_BENCH_TLS=1 both generators speak HTTPS (HTTP/2 over TLS, ALPN h2) to ringway
# (target/release/ringway, --tls-listen, one worker) in front of the backend, both on CPU 0:
# the TLS client's capacity. The certificate is made here with openssl (ECDSA P-256); the
# handshakes happen once per connection, so the figures are the record layer's and HTTP/2's.
#
# Usage: bench/load-vs-h2load.sh [DURATION_S] [REPEATS] [CONNECTIONS] [STREAMS]  (defaults 10 3 8 8)
# Needs: h2load (Debian package nghttp2-client), taskset, /usr/bin/time, python3, the release
# binary (cargo build --release -p ringway-load). Port: 19002 (backend).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
DURATION=${1:-10}
REPEATS=${2:-3}
CONNECTIONS=${3:-8}
STREAMS=${4:-8}
TARGET=127.0.0.1:19002
METHOD=/ringway.test.Echo/Unary
OUT=$(mktemp -d /tmp/load-vs-h2load.XXXXXX)
TLS=${RINGWAY_BENCH_TLS:-0}
URL=http://$TARGET
LOAD_TLS=()

command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
# The request body: one uncompressed gRPC message of 16 bytes (pattern i % 251, as ringway-load).
python3 -c 'import sys; sys.stdout.buffer.write(bytes([0, 0, 0, 0, 16]) + bytes(range(16)))' \
  >"$OUT/body.bin"

taskset -c 0 "$BIN/ringway-load" backend --listen "$TARGET" >"$OUT/backend.log" 2>&1 &
BACKEND=$!
PROXY=""
trap 'kill $BACKEND $PROXY 2>/dev/null || true' EXIT
if [ "$TLS" = 1 ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$OUT/ca.sec1" 2>/dev/null
  openssl req -x509 -new -key "$OUT/ca.sec1" -days 1 -subj "/CN=bench CA" \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign" \
    -out "$OUT/ca.pem" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "$OUT/key.sec1" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$OUT/key.sec1" -out "$OUT/key.pem"
  openssl req -new -key "$OUT/key.pem" -subj "/CN=ringway.test" -out "$OUT/csr.pem" 2>/dev/null
  printf 'subjectAltName=DNS:ringway.test,IP:127.0.0.1\n' >"$OUT/ext.cnf"
  openssl x509 -req -in "$OUT/csr.pem" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.sec1" -CAcreateserial \
    -days 1 -extfile "$OUT/ext.cnf" -out "$OUT/cert.pem" 2>/dev/null
  taskset -c 0 "$BIN/ringway" --tls-listen 127.0.0.1:19003 --tls-cert-file "$OUT/cert.pem" \
    --tls-key-file "$OUT/key.pem" --upstream "$TARGET" --workers 1 --admin off \
    --log-level warn >"$OUT/ringway.log" 2>&1 &
  PROXY=$!
  URL=https://127.0.0.1:19003
  LOAD_TLS=(--ca-file "$OUT/ca.pem" --server-name ringway.test --tls-key-exchange x25519)
fi
sleep 1

H2LOAD=(taskset -c 1 h2load -t 1 -c "$CONNECTIONS" -m "$STREAMS" -d "$OUT/body.bin"
  -H 'content-type: application/grpc' -H 'te: trailers' "$URL$METHOD")
# Warm-up, not recorded.
"${H2LOAD[@]}" -D 2 >/dev/null

printf 'generator\trepeat\trps\tcpu_us_per_req\tp50_us\tp99_us\terrors\tloadavg_1m\n'
for repeat in $(seq 1 "$REPEATS"); do
  /usr/bin/time -f '%U %S' -o "$OUT/h2load.time" "${H2LOAD[@]}" -D "$DURATION" >"$OUT/h2load.out"
  read -r user sys <"$OUT/h2load.time"
  python3 - "$OUT/h2load.out" "$user" "$sys" "$repeat" "$DURATION" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
user, sys_, repeat, duration = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", text).group(1))
ok = int(re.search(r"status codes: (\d+) 2xx", text).group(1))
# h2load prints no percentiles; its "time for request" line has min, max, mean, sd.
mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", text).group(1)
load = open("/proc/loadavg").read().split()[0]
print(f"h2load\t{repeat}\t{done / duration:.1f}\t{(user + sys_) * 1e6 / max(done, 1):.2f}"
      f"\tmean {mean}\t-\t{done - ok}\t{load}")
PY

  /usr/bin/time -f '%U %S' -o "$OUT/load.time" taskset -c 1 "$BIN/ringway-load" run \
    --target "$URL" "${LOAD_TLS[@]}" --http2 --protocol grpc --connections "$CONNECTIONS" \
    --streams "$STREAMS" --threads 1 --duration "${DURATION}s" --json "$OUT/load.json" >"$OUT/load.out"
  read -r user sys <"$OUT/load.time"
  python3 - "$OUT/load.json" "$user" "$sys" "$repeat" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
user, sys_, repeat = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
calls = r["calls_ok"] + r["errors"]
load = open("/proc/loadavg").read().split()[0]
print(f'ringway-load\t{repeat}\t{r["requests_per_s"]:.1f}\t{(user + sys_) * 1e6 / max(calls, 1):.2f}'
      f'\t{r["latency_us"]["p50"]}\t{r["latency_us"]["p99"]}\t{r["errors"]}\t{load}')
PY
done
