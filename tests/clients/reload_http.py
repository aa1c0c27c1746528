"""Hot reload seen over Streamable HTTP by the official MCP Python SDK.

The test starts `mcpd serve --http` (watching its config) and passes MCPD_URL,
MCPD_TOKEN and MCPD_CONFIG (a scratch config dir this script writes into). A tool file
dropped into tools.d reaches the SDK as notifications/tools/list_changed on the
session's stream, and the new tool is listed and callable. Exits non-zero at the first
failure.
"""
import asyncio
import os
import pathlib
import sys

from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


async def main():
    config = pathlib.Path(os.environ["MCPD_CONFIG"])
    changed = asyncio.Event()

    async def on_message(message):
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    client = create_mcp_http_client(headers={"Authorization": f"Bearer {os.environ['MCPD_TOKEN']}"})
    async with client, streamable_http_client(os.environ["MCPD_URL"], http_client=client) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            before = {t.name for t in (await session.list_tools()).tools}
            source = (config / "tools.d" / "orders.export.yaml").read_text()
            (config / "tools.d" / "orders.recent.yaml").write_text(
                source.replace("name: orders.export", "name: orders.recent")
            )
            await asyncio.wait_for(changed.wait(), timeout=20)
            check(True, "notifications/tools/list_changed received over HTTP after a file was added")
            after = {t.name for t in (await session.list_tools()).tools}
            check(after - before == {"orders_recent"}, f"tools/list gained {sorted(after - before)}")
            result = await session.call_tool("orders_recent", {"from": "2025-08-01", "to": "2025-08-03"})
            check(not result.is_error, "the new tool is callable at once")
    print("reload http: all checks passed", flush=True)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), timeout=60))
