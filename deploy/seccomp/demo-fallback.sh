#!/usr/bin/env bash
# Shows ringway's io driver under seccomp, on this machine, without root or kernel changes:
#
#   1. no filter                          -> io_uring
#   2. io_uring_* denied (EPERM), auto    -> one warning line, epoll, calls still served
#   3. io_uring_* denied, --io-driver uring -> refuses to start (exit 1)
#   4. deploy/seccomp/ringway-io-uring.json -> io_uring, calls served (profile is sufficient)
#   5. the same profile without io_uring_* (= RuntimeDefault for a container with no
#      capabilities) -> one warning line, epoll, calls served
#
# Case 2 and 3 use deny-io-uring.c (plain prctl(PR_SET_SECCOMP), needs only gcc). Cases 4 and 5
# apply the JSON profile as runc would, with run-with-profile.py, which needs libseccomp's
# Python binding (`apt-get install python3-seccomp`); without it they are skipped.
# ringway resolves its upstream by DNS as in a pod (a headless Service name, served by
# `ringway-load dns` on loopback), so the discovery thread runs under the filter too.
# Everything listens on 127.0.0.1 (ports from RINGWAY_DEMO_BASE_PORT, default 19400).
# Exit status: 0 when every case ran showed what it should.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

BASE_PORT=${RINGWAY_DEMO_BASE_PORT:-19400}
PROXY_PORT=$BASE_PORT
BACKEND_PORT=$((BASE_PORT + 1))
DNS_PORT=$((BASE_PORT + 2))
NAME=user-service.default.svc.cluster.local.
BIN=$ROOT/target/release
WORK=$(mktemp -d)
PIDS=()
FAILED=0

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

if [ ! -x "$BIN/ringway" ] || [ ! -x "$BIN/ringway-load" ]; then
  say "building release binaries"
  cargo build --release -p ringway -p ringway-load
fi
gcc -O2 -Wall -o "$WORK/deny-io-uring" "$HERE/deny-io-uring.c"
printf '\x00\x00\x00\x00\x03abc' > "$WORK/msg.bin"

"$BIN/ringway-load" dns --listen "127.0.0.1:$DNS_PORT" --zone cluster.local \
  --record "user-service.default.svc.cluster.local=127.0.0.1" >"$WORK/dns.log" 2>&1 &
PIDS+=($!)
"$BIN/ringway-load" backend --listen "127.0.0.1:$BACKEND_PORT" --name demo-pod \
  >"$WORK/backend.log" 2>&1 &
PIDS+=($!)
sleep 0.5

# run_case TITLE EXPECT(uring|epoll|refuse) [LAUNCHER...] ::: [RINGWAY_ARGS...]
run_case() {
  local title=$1 expect=$2; shift 2
  local launcher=()
  while [ "$1" != ":::" ]; do launcher+=("$1"); shift; done
  shift
  local raw="$WORK/case.raw" log="$WORK/case.log" pid rc uring_fds=0 reply="" seccomp="" i
  say "$title"
  echo "\$ ${launcher[*]} ringway ... $*" | sed "s|$ROOT/||g; s|$WORK/||g"
  : >"$raw" # truncated here, not in the child, so the wait below never reads the last case
  "${launcher[@]}" "$BIN/ringway" --listen "127.0.0.1:$PROXY_PORT" \
    --upstream "$NAME:$BACKEND_PORT" --dns-server "127.0.0.1:$DNS_PORT" --workers 2 \
    --log-format text "$@" >"$raw" 2>&1 &
  pid=$!
  for i in $(seq 50); do
    grep -q "ringway serving" "$raw" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    seccomp=$(awk '/^Seccomp:/ {print $2}' "/proc/$pid/status")
    uring_fds=$(ls -l "/proc/$pid/fd" 2>/dev/null | grep -c 'io_uring' || true)
    reply=$(curl -sS --max-time 5 --http1.1 -X POST "http://127.0.0.1:$PROXY_PORT/demo.Echo/Unary" \
      -H 'content-type: application/grpc-web+proto' -H 'x-grpc-web: 1' \
      --data-binary @"$WORK/msg.bin" -o - | tr -d '\0' | tr -c '[:print:]' ' ' || true)
    kill -TERM "$pid"
  fi
  rc=0; wait "$pid" || rc=$?
  # The log without colour codes.
  sed 's/\x1b\[[0-9;]*m//g' "$raw" >"$log"
  sed 's/^/  | /' "$log"
  echo "  seccomp mode ${seccomp:-?} (2 = filter), io_uring fds ${uring_fds}, exit ${rc}"
  [ -n "$reply" ] && echo "  gRPC-Web reply: $reply"
  local ok=1
  case "$expect" in
    uring)
      grep -q "io_driver=Uring" "$log" || ok=0
      [ "$uring_fds" -ge 2 ] || ok=0
      [[ "$reply" == *"grpc-status:0"* ]] || ok=0 ;;
    epoll)
      [ "$(grep -c 'io_uring is not available (kernel, sysctl or seccomp profile); falling back to epoll' "$log")" = 1 ] || ok=0
      grep -q "io_driver=Epoll" "$log" || ok=0
      [ "$uring_fds" = 0 ] || ok=0
      [[ "$reply" == *"grpc-status:0"* ]] || ok=0 ;;
    refuse)
      [ "$rc" != 0 ] || ok=0
      grep -q "io_uring is not available" "$log" || ok=0 ;;
  esac
  [ "$rc" = 0 ] || [ "$expect" = refuse ] || ok=0
  if [ $ok = 1 ]; then echo "  => as expected ($expect)"; else echo "  => UNEXPECTED (wanted $expect)"; FAILED=1; fi
}

run_case "1. no seccomp filter" uring :::
run_case "2. io_uring denied with EPERM (as RuntimeDefault), --io-driver auto" epoll \
  "$WORK/deny-io-uring" :::
run_case "3. io_uring denied, --io-driver uring" refuse \
  "$WORK/deny-io-uring" ::: --io-driver uring
if /usr/bin/python3 -c 'import seccomp' 2>/dev/null; then
  run_case "4. the shipped profile deploy/seccomp/ringway-io-uring.json" uring \
    /usr/bin/python3 "$HERE/run-with-profile.py" "$HERE/ringway-io-uring.json" -- :::
  run_case "5. the same profile without io_uring_* (RuntimeDefault, no capabilities)" epoll \
    /usr/bin/python3 "$HERE/run-with-profile.py" --without-io-uring "$HERE/ringway-io-uring.json" -- :::
else
  say "4, 5 skipped: no libseccomp Python binding (apt-get install python3-seccomp)"
fi

say "result"
if [ $FAILED = 0 ]; then echo "every case behaved as expected"; else echo "some case did not behave as expected"; fi
exit $FAILED
