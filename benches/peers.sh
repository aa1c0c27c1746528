#!/usr/bin/env bash
# mcpd against the servers a team would hand-write, in one run on one machine.
#
#   benches/peers.sh KIT [N] [RUNS]
#
# KIT is the peer benchmark kit (mock_api.py, fastmcp_peer.py, ts/, upstream/; the team
# keeps it beside the repository as shared/bench). Everything is built under
# target/peers: the kit's Rust upstream, a venv with fastmcp and httpx, the TypeScript
# SDK peer's node_modules. Every server gets the same tool (orders_export: GET /orders
# on the same upstream, emails masked) and the same load driver (benches/load.rs: raw
# JSON-RPC over stdio, written in Rust so the driver is not the ceiling); `direct` is
# the same requests straight to the upstream, `rmcp-floor` the smallest rmcp server
# doing the same (benches/rmcp_floor.rs), and `mcpd-ping` a bare `ping` round trip
# through mcpd. So each cost is attributed: transport (ping), rmcp (floor - direct),
# pipeline (mcpd - floor). Each row runs RUNS times (default 3); the summary uses the
# medians, and prints the load average beside them. With BASE=path/to/an/older/mcpd, that
# binary runs the same rows beside this one's (A/B in one run, interleaved).
set -euo pipefail
kit=$(cd "${1:?usage: benches/peers.sh KIT [N] [RUNS]}" && pwd)
n=${2:-2000}
runs=${3:-3}
cd "$(dirname "$0")/.."
repo=$(pwd)
out=target/peers
mkdir -p "$out"

echo "== building mcpd (release) and the kit's upstream" >&2
cargo build --release --quiet
cargo build --release --quiet --example rmcp_floor
driver=$(cargo bench --bench load --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("executable") and m.get("target", {}).get("name") == "load": print(m["executable"])')
cargo build --release --quiet --manifest-path "$kit/upstream/Cargo.toml" --target-dir "$out/upstream-target"
if [ ! -x "$out/venv/bin/python" ]; then
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet fastmcp httpx
fi
if [ ! -d "$out/ts/node_modules" ]; then
  mkdir -p "$out/ts" && cp "$kit/ts/package.json" "$kit/ts/peer_b_tssdk.mjs" "$out/ts/"
  (cd "$out/ts" && npm install --silent --no-audit --no-fund)
fi

# A free port, and proof that the upstream answering on it is the one started here (a
# fixed port once measured another server that held it).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$out/upstream-target/release/upstream" "$port" > "$out/upstream.log" 2>&1 &
up_pid=$!
trap 'kill $up_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening on 127.0.0.1:$port" "$out/upstream.log" && break
  kill -0 $up_pid 2>/dev/null || { echo "the upstream exited: $(cat "$out/upstream.log")" >&2; exit 1; }
  sleep 0.05
done
curl -sf "http://127.0.0.1:$port/orders?from=a" | grep -q '"orders"' ||
  { echo "nothing answers /orders on port $port" >&2; exit 1; }
kill -0 $up_pid 2>/dev/null || { echo "the upstream exited: $(cat "$out/upstream.log")" >&2; exit 1; }
export UPSTREAM="http://127.0.0.1:$port"

# mcpd's config for the same tool: no limits, state in memory, the default actor.
cfg=$(mktemp -d)
trap 'kill $up_pid 2>/dev/null || true; rm -rf "$cfg"' EXIT
mkdir "$cfg/tools.d"
cat > "$cfg/mcpd.yaml" <<YAML
upstreams:
  orders: { url: "$UPSTREAM" }
state: "memory:"
default_actor: { subject: "user:bench", scopes: ["*"] }
YAML
cat > "$cfg/policies.yaml" <<'YAML'
default: allow
egress: [127.0.0.1]
YAML
cat > "$cfg/tools.d/orders.yaml" <<'YAML'
name: orders_export
description: Export orders in a date range with emails masked.
input:
  type: object
  required: [start, end]
  properties: { start: { type: string }, end: { type: string } }
request:
  upstream: orders
  method: GET
  path: /orders
  query: { from: "{{ args.start }}", to: "{{ args.end }}" }
response:
  select: "$.orders"
  mask: ["$[*].email"]
YAML

args='{"start":"2025-08-25","end":"2025-08-31"}'
results=$out/results.txt
: > "$results"
mcpd=("$repo/target/release/mcpd" serve --no-watch --config "$cfg")
for k in 1 16; do
  for _ in $(seq "$runs"); do
    "$driver" --n "$n" --k $k --direct "$UPSTREAM/orders?from=2025-08-25&to=2025-08-31" --label direct | tee -a "$results"
    "$driver" --n "$n" --k $k --ping --label mcpd-ping -- "${mcpd[@]}" | tee -a "$results"
    "$driver" --n "$n" --k $k --tool orders_export --args "$args" --label mcpd -- "${mcpd[@]}" | tee -a "$results"
    if [ -n "${BASE:-}" ]; then
      "$driver" --n "$n" --k $k --ping --label base-ping -- "$BASE" "${mcpd[@]:1}" | tee -a "$results"
      "$driver" --n "$n" --k $k --tool orders_export --args "$args" --label base -- "$BASE" "${mcpd[@]:1}" |
        tee -a "$results"
    fi
    "$driver" --n "$n" --k $k --tool orders_export --args "$args" --label rmcp-floor -- \
      "$repo/target/release/examples/rmcp_floor" | tee -a "$results"
    "$driver" --n "$n" --k $k --tool orders_export --args "$args" --label fastmcp -- \
      "$out/venv/bin/python" "$kit/fastmcp_peer.py" | tee -a "$results"
    "$driver" --n "$n" --k $k --tool orders_export \
      --args '{"from_":"2025-08-25","to":"2025-08-31"}' --label ts-sdk -- \
      node "$out/ts/peer_b_tssdk.mjs" | tee -a "$results"
  done
done

python3 - "$results" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=") for kv in line.split()[1:])
    runs.setdefault((line.split()[0], f["k"]), []).append({k: float(v) for k, v in f.items()})
def med(label, k):
    rs = sorted(runs[(label, k)], key=lambda r: r["calls/s"])
    return rs[len(rs) // 2]
print(f"medians of {len(runs[('direct', '1')])} runs; load average at the end {sys.argv[2]}")
for k in ("1", "16"):
    d, m, p, fl = med("direct", k), med("mcpd", k), med("mcpd-ping", k), med("rmcp-floor", k)
    peers = {q: med(q, k) for q in ("fastmcp", "ts-sdk")}
    best = max(peers, key=lambda q: peers[q]["calls/s"])
    print(f"k={k}: mcpd {m['calls/s']:.0f}/s, adds {(m['p50_ms'] - d['p50_ms']) * 1000:.0f} us p50 over direct "
          f"(a bare ping round trip: {p['p50_ms'] * 1000:.0f} us), {m['cpu_us_per_call']:.0f} us CPU per call; "
          f"{m['calls/s'] / peers[best]['calls/s']:.1f}x the best peer ({best}); "
          f"rmcp floor {fl['calls/s']:.0f}/s, adds {(fl['p50_ms'] - d['p50_ms']) * 1000:.0f} us, {fl['cpu_us_per_call']:.0f} us CPU; "
          + ", ".join(f"{q} {v['calls/s']:.0f}/s, {v['rss_mb']:.0f} MB" for q, v in peers.items())
          + f"; mcpd {m['rss_mb']:.0f} MB, cold start {m['cold_ms']:.0f} ms")
    if ("base", k) in runs:
        b, bp = med("base", k), med("base-ping", k)
        print(f"k={k}: BASE {b['calls/s']:.0f}/s, adds {(b['p50_ms'] - d['p50_ms']) * 1000:.0f} us p50 over direct "
              f"(its bare ping: {bp['p50_ms'] * 1000:.0f} us), {b['cpu_us_per_call']:.0f} us CPU per call; "
              f"mcpd is {m['calls/s'] / b['calls/s']:.2f}x BASE in calls/s, "
              f"{m['cpu_us_per_call'] / b['cpu_us_per_call']:.2f}x its CPU per call")
PY
