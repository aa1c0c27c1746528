// Replicas behind a round-robin balancer with no affinity, through the official MCP
// TypeScript SDK (@modelcontextprotocol/sdk, run by Node).
//
// The test starts redis-server, replicas of `mcpd serve --http` on one shared config
// directory and HAProxy in front (it names the replica that answered in an
// `X-Mcpd-Replica` header). Through HAProxy, one SDK session: the golden flow (tools
// listed, orders_export with every email masked, flag_set changing the demo API), its
// requests answered by every replica; a tool file dropped into the shared config dir
// reaches the session as notifications/tools/list_changed and every replica lists and
// runs the new tool.
//
// Environment: MCPD_URL, MCPD_TOKEN, MCPD_CONFIG, MCPD_REPLICAS (comma-separated names),
// DEMO_API_URL, MCPD_TS_SDK (the node_modules directory holding the SDK). Prints one line
// per check; exits non-zero at the first failure.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const sdk = (p) => import(pathToFileURL(join(process.env.MCPD_TS_SDK, "@modelcontextprotocol/sdk/dist/esm", p)).href);
const { Client } = await sdk("client/index.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");
const { ToolListChangedNotificationSchema } = await sdk("types.js");

function check(cond, what) {
  if (!cond) {
    console.log(`FAIL: ${what}`);
    process.exit(1);
  }
  console.log(`ok: ${what}`);
}

async function apiGet(path) {
  const r = await fetch(`${process.env.DEMO_API_URL.replace(/\/$/, "")}${path}`);
  return r.json();
}

const replicas = process.env.MCPD_REPLICAS.split(",");
const served = [];
const recording = async (url, init) => {
  const r = await fetch(url, init);
  const name = r.headers.get("x-mcpd-replica");
  if (name) served.push(name);
  return r;
};
const transport = new StreamableHTTPClientTransport(new URL(process.env.MCPD_URL), {
  requestInit: { headers: { Authorization: `Bearer ${process.env.MCPD_TOKEN}` } },
  fetch: recording,
});
const client = new Client({ name: "balancer-ts", version: "0" });
let changed;
const gotChanged = new Promise((resolve) => (changed = resolve));
client.setNotificationHandler(ToolListChangedNotificationSchema, () => changed());

const deadline = setTimeout(() => {
  console.log("FAIL: the scenario did not finish within 60 s");
  process.exit(1);
}, 60_000);

await client.connect(transport);
check(client.getServerVersion()?.name === "mcpd", `initialize through the balancer: ${client.getServerVersion()?.name}`);

// The golden flow, each step on whichever replica the balancer picks.
for (let i = 0; i < replicas.length; i++) {
  const names = (await client.listTools()).tools.map((t) => t.name).sort();
  check(JSON.stringify(names) === '["flag_set","orders_export"]', `tools/list has ${names}`);
}
const truth = await apiGet("/orders?from=2025-08-01&to=2025-08-31");
const exported = await client.callTool({ name: "orders_export", arguments: { from: "2025-08-01", to: "2025-08-31" } });
check(!exported.isError, "orders_export succeeded");
const listed = Object.values(exported.structuredContent ?? {})[0] ?? [];
check(listed.length === truth.count, `orders_export returned ${listed.length} orders, as the API has`);
const leaked = truth.orders.map((o) => o.email).filter((e) => JSON.stringify(exported).includes(e));
check(leaked.length === 0, `no raw email in the result (leaked: ${leaked.slice(0, 3)})`);
const set = await client.callTool({ name: "flag_set", arguments: { env: "staging", name: "ts_flag", percent: 30 } });
check(!set.isError, "flag_set succeeded");
const flag = await apiGet("/flags/staging/ts_flag");
check(flag.percent === 30, `the demo API has ts_flag at 30: ${JSON.stringify(flag)}`);
check(replicas.every((r) => served.includes(r)), `the session's requests were served by every replica: ${[...new Set(served)].sort()}`);

// A tool file in the shared config dir: list_changed, and every replica has the tool.
const config = process.env.MCPD_CONFIG;
const source = readFileSync(join(config, "tools.d", "orders.export.yaml"), "utf8");
writeFileSync(join(config, "tools.d", "orders.ts.yaml"), source.replace("name: orders.export", "name: orders.ts"));
await Promise.race([gotChanged, new Promise((_, no) => setTimeout(() => no(new Error("no list_changed within 20 s")), 20_000))]).catch((e) => check(false, e.message));
check(true, "notifications/tools/list_changed received after a file was added");
const start = served.length;
for (let i = 0; i < 2 * replicas.length; i++) {
  const names = (await client.listTools()).tools.map((t) => t.name);
  check(names.includes("orders_ts"), "tools/list has orders_ts");
  const r = await client.callTool({ name: "orders_ts", arguments: { from: "2025-08-01", to: "2025-08-03" } });
  check(!r.isError, "orders_ts runs");
}
const after = new Set(served.slice(start));
check(replicas.every((r) => after.has(r)), `every replica listed and ran the new tool: ${[...after].sort()}`);

await client.close();
clearTimeout(deadline);
console.log("typescript balancer: all checks passed");
// Node would wait for the idle keep-alive connections to time out.
process.exit(0);
