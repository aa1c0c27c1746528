"""Opening a session for the client scripts of issue 16's features: over stdio (the SDK
starts `$MCPD_BIN serve --config $MCPD_CONFIG`) or over Streamable HTTP (MCPD_URL, with
MCPD_TOKEN as the bearer token when set), with whatever callbacks the scenario passes
(elicitation, logging, messages).
"""
import contextlib
import json
import os

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def transport():
    """`http` when MCPD_URL is set, else `stdio`."""
    return "http" if os.environ.get("MCPD_URL") else "stdio"


@contextlib.asynccontextmanager
async def open_session(sse_limit=1024 * 1024, answers=None, **callbacks):
    """An initialized ClientSession on the transport the environment names; over HTTP,
    `sse_limit` is the largest SSE event the SDK accepts (None: no limit), and `answers`,
    a list, gets `(tool, content type)` for the response to each `tools/call` POST."""
    async with contextlib.AsyncExitStack() as stack:
        if transport() == "http":
            token = os.environ.get("MCPD_TOKEN")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            client = await stack.enter_async_context(create_mcp_http_client(headers=headers))
            if answers is not None:
                async def seen(response):
                    if response.request.method != "POST":
                        return
                    try:
                        message = json.loads(response.request.content)
                    except ValueError:
                        return
                    if isinstance(message, dict) and message.get("method") == "tools/call":
                        answers.append((message["params"]["name"],
                                        response.headers.get("content-type", "")))
                client.event_hooks = {"request": [], "response": [seen]}
            read, write = await stack.enter_async_context(
                streamable_http_client(os.environ["MCPD_URL"], http_client=client,
                                       max_sse_event_size=sse_limit))
        else:
            server = StdioServerParameters(
                command=os.environ["MCPD_BIN"],
                args=["serve", "--config", os.environ["MCPD_CONFIG"]],
                env=dict(os.environ),
            )
            read, write = await stack.enter_async_context(stdio_client(server))
        session = await stack.enter_async_context(ClientSession(read, write, **callbacks))
        await session.initialize()
        yield session
