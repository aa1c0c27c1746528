"""Hot reload seen by the official MCP Python SDK: a tool file dropped into tools.d.

Configured by environment: MCPD_BIN, MCPD_CONFIG (a scratch copy of the config that
this script may write into), DEMO_API_URL. Exits non-zero at the first failure.
"""
import asyncio
import os
import pathlib
import sys

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


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

    server = StdioServerParameters(
        command=os.environ["MCPD_BIN"],
        args=["serve", "--config", str(config)],
        env={"DEMO_API_URL": os.environ["DEMO_API_URL"], "MCPD_LOG": "warn"},
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            before = {t.name for t in (await session.list_tools()).tools}
            source = (config / "tools.d" / "orders.export.yaml").read_text()
            (config / "tools.d" / "orders.recent.yaml").write_text(
                source.replace("name: orders.export", "name: orders.recent")
            )
            await asyncio.wait_for(changed.wait(), timeout=20)
            check(True, "notifications/tools/list_changed received after a file was added")
            after = {t.name for t in (await session.list_tools()).tools}
            check(after - before == {"orders_recent"}, f"tools/list gained {sorted(after - before)}")
            result = await session.call_tool("orders_recent", {"from": "2025-08-01", "to": "2025-08-03"})
            check(not result.is_error, "the new tool is callable at once")
    print("reload stdio: all checks passed", flush=True)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), timeout=60))
