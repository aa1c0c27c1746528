"""Golden flow through the official MCP Python SDK: mcpd serve over stdio.

Configured by environment: MCPD_BIN (the binary), MCPD_CONFIG (config dir),
DEMO_API_URL (the demo API the shipped tools call). Prints one line per check and
exits non-zero at the first failure.
"""
import asyncio
import json
import os
import sys
import urllib.request

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

API = os.environ["DEMO_API_URL"]
AUGUST = {"from": "2025-08-01", "to": "2025-08-31"}


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def get(path):
    with urllib.request.urlopen(f"{API}{path}", timeout=10) as r:
        return json.load(r)


def text_of(result):
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def main():
    server = StdioServerParameters(
        command=os.environ["MCPD_BIN"],
        args=["serve", "--config", os.environ["MCPD_CONFIG"]],
        # The SDK passes only a safe subset of the environment; mcpd needs DEMO_API_URL.
        env={"DEMO_API_URL": API, "MCPD_LOG": "warn"},
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(init.server_info.name == "mcpd", f"initialized with {init.server_info.name} {init.protocol_version}")

            tools = {t.name: t for t in (await session.list_tools()).tools}
            check(sorted(tools) == ["flag_set", "orders_export"], f"tools/list has wire names {sorted(tools)}")
            orders, flag = tools["orders_export"], tools["flag_set"]
            check(orders.input_schema["type"] == "object", "orders_export has an object input schema")
            check(sorted(orders.input_schema["required"]) == ["from", "to"], "orders_export requires from and to")
            props = flag.input_schema["properties"]
            check(props["env"]["enum"] == ["staging", "prod"], "flag_set env is staging|prod")
            check((props["percent"]["minimum"], props["percent"]["maximum"]) == (0, 100), "flag_set percent is 0..100")

            truth = get("/orders?from=2025-08-01&to=2025-08-31")
            result = await session.call_tool("orders_export", AUGUST)
            check(not result.is_error, "orders_export succeeded")
            listed = result.structured_content["orders"]
            check(len(listed) == truth["count"] > 0, f"orders_export returned {len(listed)} orders, as the API has")
            dump = json.dumps(result.model_dump(mode="json"))
            raw = [o["email"] for o in truth["orders"]] + [o["card"] for o in truth["orders"]]
            check(not any(r in dump for r in raw), "no raw email or card number anywhere in the result")
            check(all("***@" in o["email"] for o in listed), "every email is masked but keeps its domain")

            result = await session.call_tool("flag_set", {"env": "staging", "name": "checkout_v2", "percent": 10})
            check(not result.is_error, "flag_set succeeded")
            check(get("/flags/staging/checkout_v2")["percent"] == 10, "the demo API now has checkout_v2 at 10 in staging")

            result = await session.call_tool("orders.export", AUGUST)
            check(not result.is_error and len(result.structured_content["orders"]) == len(listed), "the dotted id works in tools/call")

            result = await session.call_tool("flag_set", {"env": "staging", "name": "checkout_v2", "percent": 150})
            check(result.is_error and "percent" in text_of(result), f"percent 150 refused: {text_of(result)}")
            result = await session.call_tool("orders_export", {"from": "2025-08-01"})
            check(result.is_error and "to" in text_of(result), f"missing 'to' refused: {text_of(result)}")

            try:
                await session.call_tool("no_such_tool", {})
                check(False, "an unknown tool raises a JSON-RPC error")
            except MCPError as e:
                check("no_such_tool" in str(e), f"an unknown tool is a JSON-RPC error: {e}")

    print("golden stdio: all checks passed", flush=True)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), timeout=60))
