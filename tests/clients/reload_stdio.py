"""Hot reload seen by the official MCP Python SDK: a tool file dropped into tools.d.

Configured by environment: MCPD_BIN, MCPD_CONFIG (a scratch copy of the config that
this script may write into), DEMO_API_URL. Exits non-zero at the first failure.
"""
import os
import pathlib
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from checks import a_new_tool_file_is_announced_listed_and_callable, list_changed, main


async def scenario():
    config = pathlib.Path(os.environ["MCPD_CONFIG"])
    changed, on_message = list_changed()
    server = StdioServerParameters(
        command=os.environ["MCPD_BIN"],
        args=["serve", "--config", str(config)],
        env={"DEMO_API_URL": os.environ["DEMO_API_URL"], "MCPD_LOG": "warn"},
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            await a_new_tool_file_is_announced_listed_and_callable(session, config, changed)


if __name__ == "__main__":
    sys.exit(main("reload stdio", ("MCPD_BIN", "MCPD_CONFIG", "DEMO_API_URL"), scenario))
