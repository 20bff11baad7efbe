#!/usr/bin/env bash
# The scaling measurements of docs/scaling.md: `ringway-load scenario scale` for ringway and for
# Envoy's strict_dns cluster, same pods, same load, same timeline, alternating proxies.
#
# Usage: scripts/scaling.sh [repeats] [extra scenario flags…]
# Results go to scenario-out/scaling-<UTC timestamp>/<proxy>-<n>/ (report.txt, scenario.json,
# load.json, chart.svg, the proxy's log and config); a one-line summary per run to stdout.
# Ports: ringway 28080 (DNS 28053, pods 29000), Envoy 38080 (admin 38081, DNS 38053, pods 39000).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
shift || true
OUT="scenario-out/scaling-$(date -u +%Y%m%dT%H%M%SZ)"
BIN=target/release/ringway-load
[ -x "$BIN" ] && [ -x target/release/ringway ] || cargo build --release --bins
for n in $(seq "$REPEATS"); do
  for proxy in ringway envoy; do
    if [ "$proxy" = ringway ]; then
      ports=(--listen 127.0.0.1:28080 --dns-listen 127.0.0.1:28053 --pod-port 29000)
    else
      ports=(--listen 127.0.0.1:38080 --admin-port 38081 --dns-listen 127.0.0.1:38053 --pod-port 39000)
    fi
    dir="$OUT/$proxy-$n"
    mkdir -p "$dir"
    set +e
    "$BIN" scenario scale --proxy "$proxy" --ringway-bin target/release/ringway \
      "${ports[@]}" --out "$dir" "$@" > "$dir/stdout.txt" 2>&1
    code=$?
    set -e
    python3 - "$dir/scenario.json" "$proxy" "$n" "$code" <<'PY'
import json, sys
path, proxy, n, code = sys.argv[1:]
try:
    s = json.load(open(path))
except OSError:
    print(f"{proxy} #{n}: no result (exit {code})"); sys.exit()
steps = s["steps"]
fmt = lambda v: "-" if v is None else f"{v:.2f}s"
cols = " | ".join(
    f"step {st['step']} ({len(st['pods'])} pods): DNS asked {fmt(st['dns_query_after_s'])}, "
    f"fair {fmt(st['fair_after_s'])}, failed {st['errors']}, to removed {st['calls_to_removed_after_visible']}"
    for st in steps)
print(f"{proxy} #{n}: exit {code}, passed {s['passed']}, calls {s['calls_ok']}, failed {s['errors']} | {cols}")
PY
  done
done
