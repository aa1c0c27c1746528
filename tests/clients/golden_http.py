"""Golden flow over Streamable HTTP through the official MCP Python SDK.

The test starts `mcpd serve --http` itself and passes its endpoint in MCPD_URL and a
bearer token from `mcpd token issue` in MCPD_TOKEN. The SDK's streamable HTTP client
sends the token on every request and plays the shipped demo tools: tools/list shows the
wire names; orders_export returns every order the demo API has, every email masked;
flag_set changes the flag in the demo API; bad arguments are isError results naming the
field; an unknown tool is a JSON-RPC error. Without the token the SDK cannot connect.

Environment: MCPD_URL, MCPD_TOKEN, DEMO_API_URL. Prints one line per check and exits
non-zero with a FAIL line at the first failure.
"""
import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from checks import AUGUST, api_get, check, first_leaf, main, text_of


async def scenario(url, token):
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with client, streamable_http_client(url, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        init = await session.initialize()
        check(init.server_info.name == "mcpd",
              f"initialize over HTTP: {init.server_info.name}, protocol {init.protocol_version}")

        tools = {t.name: t for t in (await session.list_tools()).tools}
        check(sorted(tools) == ["flag_set", "orders_export"], f"tools/list has exactly {sorted(tools)}")

        truth = api_get("/orders?from=2025-08-01&to=2025-08-31")
        count, raw_emails = truth["count"], [o["email"] for o in truth["orders"]]
        result = await session.call_tool("orders_export", AUGUST)
        check(not result.is_error, f"orders_export succeeded {text_of(result)[:200]!r}")
        listed = next(iter((result.structured_content or {}).values()), [])
        check(len(listed) == count, f"orders_export returned {len(listed)} orders, as the API has")
        dump = json.dumps(result.model_dump(mode="json", by_alias=True))
        leaked = [e for e in raw_emails if e in dump]
        check(not leaked, f"no raw email anywhere in the result (leaked: {leaked[:3]})")

        result = await session.call_tool("flag_set", {"env": "staging", "name": "checkout_v2", "percent": 20})
        check(not result.is_error, f"flag_set succeeded {text_of(result)[:200]!r}")
        flag = api_get("/flags/staging/checkout_v2")
        check(flag.get("percent") == 20, f"the demo API has checkout_v2 at 20 in staging: {flag}")

        result = await session.call_tool("flag_set", {"env": "staging", "name": "checkout_v2", "percent": 150})
        check(result.is_error and "percent" in text_of(result), f"percent 150 is refused: {text_of(result)!r}")

        try:
            result = await session.call_tool("no_such_tool", {})
        except MCPError as e:
            check(True, f"an unknown tool is a JSON-RPC error: code {e.code}")
        else:
            check(False, "an unknown tool is a JSON-RPC error, not a result")


async def without_token(url):
    """No Authorization header: the server answers 401 and the SDK cannot initialize."""
    try:
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            await asyncio.wait_for(session.initialize(), timeout=10)
    except Exception as group:  # noqa: BLE001 - any refusal is the expected outcome
        exc = first_leaf(group)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        # The SDK reports the 401 as an error response; the Rust test checks the 401 itself.
        check(status == 401 or "401" in str(exc) or isinstance(exc, MCPError),
              f"without a token the SDK is refused: {type(exc).__name__} {str(exc)[:120]!r}")
        return
    check(False, "without a token the SDK is refused")


if __name__ == "__main__":
    url, token = os.environ.get("MCPD_URL"), os.environ.get("MCPD_TOKEN")
    sys.exit(main("golden http", ("MCPD_URL", "MCPD_TOKEN", "DEMO_API_URL"),
                  lambda: scenario(url, token), lambda: without_token(url)))
