"""Hot reload seen over Streamable HTTP by the official MCP Python SDK.

The test starts `mcpd serve --http` (watching its config) and passes MCPD_URL,
MCPD_TOKEN and MCPD_CONFIG (a scratch config dir this script writes into). A tool file
dropped into tools.d reaches the SDK as notifications/tools/list_changed on the
session's stream, and the new tool is listed and callable. Exits non-zero at the first
failure.
"""
import os
import pathlib
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from checks import a_new_tool_file_is_announced_listed_and_callable, list_changed, main


async def scenario():
    config = pathlib.Path(os.environ["MCPD_CONFIG"])
    changed, on_message = list_changed()
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {os.environ['MCPD_TOKEN']}"})
    async with client, streamable_http_client(os.environ["MCPD_URL"], http_client=client) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            await a_new_tool_file_is_announced_listed_and_callable(
                session, config, changed, over=" over HTTP")


if __name__ == "__main__":
    sys.exit(main("reload http", ("MCPD_URL", "MCPD_TOKEN", "MCPD_CONFIG"), scenario))
