#!/usr/bin/env bash
# mcpd against the servers a team would hand-write, in one run on one machine.
#
#   benches/peers.sh KIT [N]
#
# KIT is the peer benchmark kit (mock_api.py, mcp_load.py, fastmcp_peer.py, ts/,
# upstream/; the team keeps it beside the repository as shared/bench). Everything is
# built under target/peers: the kit's Rust upstream, a venv with fastmcp and httpx, the
# TypeScript SDK peer's node_modules. Every server gets the same tool (orders_export:
# GET /orders on the same upstream, emails masked) and the same load driver
# (mcp_load.py, raw JSON-RPC over stdio); `direct` is the same requests straight to the
# upstream. Prints one line per server and concurrency, then mcpd's ratios.
set -euo pipefail
kit=$(cd "${1:?usage: benches/peers.sh KIT [N]}" && pwd)
n=${2:-2000}
cd "$(dirname "$0")/.."
repo=$(pwd)
out=target/peers
mkdir -p "$out"

echo "== building mcpd (release) and the kit's upstream" >&2
cargo build --release --quiet
cargo build --release --quiet --manifest-path "$kit/upstream/Cargo.toml" --target-dir "$out/upstream-target"
if [ ! -x "$out/venv/bin/python" ]; then
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install --quiet fastmcp httpx
fi
if [ ! -d "$out/ts/node_modules" ]; then
  mkdir -p "$out/ts" && cp "$kit/ts/package.json" "$kit/ts/peer_b_tssdk.mjs" "$out/ts/"
  (cd "$out/ts" && npm install --silent --no-audit --no-fund)
fi

port=18080
"$out/upstream-target/release/upstream" $port > "$out/upstream.log" 2>&1 &
up_pid=$!
trap 'kill $up_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/orders?from=a" > /dev/null && break; sleep 0.1; done
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

load="$kit/mcp_load.py"
args='{"start":"2025-08-25","end":"2025-08-31"}'
results=$out/results.txt
: > "$results"
for k in 1 16; do
  python3 "$load" --n "$n" --k $k --direct "$UPSTREAM/orders?from=2025-08-25&to=2025-08-31" --label direct | tee -a "$results"
  python3 "$load" --n "$n" --k $k --tool orders_export --args "$args" --label mcpd -- \
    "$repo/target/release/mcpd" serve --no-watch --config "$cfg" | tee -a "$results"
  python3 "$load" --n "$n" --k $k --tool orders_export --args "$args" --label fastmcp -- \
    "$out/venv/bin/python" "$kit/fastmcp_peer.py" | tee -a "$results"
  python3 "$load" --n "$n" --k $k --tool orders_export \
    --args '{"from_":"2025-08-25","to":"2025-08-31"}' --label ts-sdk -- \
    node "$out/ts/peer_b_tssdk.mjs" | tee -a "$results"
done

python3 - "$results" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=") for kv in line.split()[1:])
    rows[(line.split()[0], f["k"])] = {k: float(v) for k, v in f.items()}
for k in ("1", "16"):
    d, m = rows[("direct", k)], rows[("mcpd", k)]
    peers = {p: rows[(p, k)] for p in ("fastmcp", "ts-sdk")}
    best = max(peers, key=lambda p: peers[p]["calls/s"])
    print(f"k={k}: mcpd adds {m['p50_ms'] - d['p50_ms']:.3f} ms p50 over direct; "
          f"throughput {m['calls/s'] / peers[best]['calls/s']:.1f}x the best peer ({best}); "
          + ", ".join(f"{p} adds {v['p50_ms'] - d['p50_ms']:.3f} ms, {v['rss_mb']:.0f} MB" for p, v in peers.items())
          + f"; mcpd {m['rss_mb']:.0f} MB")
PY
