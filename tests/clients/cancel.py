"""Cancellation as the official MCP Python SDK sends it (issue 15, item 7).

The SDK gives up on a request after its read timeout and sends
`notifications/cancelled`. The test serves the shipped config plus two tools over the
demo API's `/slow` endpoint: `slow.read` (GET, concurrency 1), and `slow.write` and
`slow.write.short` (POST, keyed by `args.n`; timeouts 10 s and 400 ms). Over stdio:

- a cancelled slow read is aborted at the upstream (the demo API counts it as dropped,
  not answered) and frees its concurrency slot at once: the next call is not refused;
- a cancelled keyed write is settled at once (its key is not left in flight until the
  claim lapses, 10 s on), and as a timed-out one is: its retry is sent again, or
  refused, exactly as the retry of a write that timed out (whatever that rule is).

The same over Streamable HTTP when MCPD_URL and MCPD_TOKEN name a running
`mcpd serve --http` (a call without progress is answered there on the direct path,
which must cancel it the same way).

Environment: MCPD_BIN, MCPD_CONFIG, DEMO_API_URL; or MCPD_URL, MCPD_TOKEN, DEMO_API_URL.
"""
import asyncio
import os
import sys
import time

from contextlib import asynccontextmanager

from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from checks import api_get, check, main, text_of


async def poll(what, cond, deadline_s=10):
    end = time.monotonic() + deadline_s
    while True:
        value = what()
        if cond(value):
            return value
        if time.monotonic() > end:
            return value
        await asyncio.sleep(0.05)


def writes_seen(n):
    return sum(1 for r in api_get("/_requests")
               if r["method"] == "POST" and r["path"] == "/slow" and f"n={n}" in r["query"])


async def abandon(session, name, args, timeout_s):
    """Calls a tool and gives up after `timeout_s`: the SDK then cancels the request."""
    try:
        await session.call_tool(name, args, read_timeout_seconds=timeout_s)
    except (MCPError, TimeoutError) as e:
        return str(e)
    check(False, f"{name} should not have finished within {timeout_s} s")


async def retry_outcome(session, tool, args):
    """Retries a write until its key is no longer in flight (for at most 3 s, far less
    than the claim's lapse); says whether it was sent again and whether it was refused."""
    n = args["n"]
    before = writes_seen(n)
    end = time.monotonic() + 3
    while True:
        result = await session.call_tool(tool, args, read_timeout_seconds=20)
        text = text_of(result)
        if "in flight" not in text or time.monotonic() > end:
            break
        await asyncio.sleep(0.1)
    check("in flight" not in text, f"the key of write {n} is settled, not left in flight: {text[:120]!r}")
    sent_again = writes_seen(n) > before
    refused = result.is_error and not sent_again
    return sent_again, refused


@asynccontextmanager
async def connect():
    """The streams to mcpd: over HTTP when MCPD_URL is set, else over stdio."""
    if os.environ.get("MCPD_URL"):
        client = create_mcp_http_client(
            headers={"Authorization": f"Bearer {os.environ['MCPD_TOKEN']}"})
        async with client, streamable_http_client(os.environ["MCPD_URL"], http_client=client) \
                as (read, write, *_):
            yield read, write
        return
    server = StdioServerParameters(
        command=os.environ["MCPD_BIN"],
        args=["serve", "--no-watch", "--config", os.environ["MCPD_CONFIG"]],
        env=dict(os.environ),
    )
    async with stdio_client(server) as (read, write):
        yield read, write


async def scenario():
    async with connect() as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        # 1. A slow read, cancelled: aborted upstream, its slot free at once.
        stats = api_get("/_slow")
        started = time.monotonic()
        await abandon(session, "slow_read", {"ms": 5000, "n": 0}, 0.5)
        check(True, "the SDK gave up on slow_read after 0.5 s and cancelled it")
        result = await session.call_tool("slow_read", {"ms": 10, "n": 0}, read_timeout_seconds=20)
        check(not result.is_error,
              f"the next call gets the concurrency slot (cap 1) at once: {text_of(result)[:120]!r}")
        after = await poll(lambda: api_get("/_slow"),
                           lambda s: s["started"] - stats["started"] == 2
                           and s["answered"] - stats["answered"] == 1)
        check(after["started"] - stats["started"] == 2 and after["answered"] - stats["answered"] == 1,
              f"the cancelled request was dropped at the upstream, not answered: {after} (before {stats})")
        check(time.monotonic() - started < 4.5, "all of it well before the cancelled call would have ended")

        # 2. A keyed write cancelled vs one that timed out: their retries fare the same.
        await abandon(session, "slow_write", {"ms": 1500, "n": 1}, 0.2)
        check(await poll(lambda: writes_seen(1), lambda w: w == 1) == 1,
              "the cancelled write had reached the upstream once")
        cancelled = await retry_outcome(session, "slow_write", {"ms": 1500, "n": 1})
        timed_out = await session.call_tool("slow_write_short", {"ms": 600, "n": 2}, read_timeout_seconds=20)
        check(timed_out.is_error and "did not answer within 400ms" in text_of(timed_out),
              f"a write slower than its 400 ms timeout times out: {text_of(timed_out)[:120]!r}")
        timeout = await retry_outcome(session, "slow_write_short", {"ms": 600, "n": 2})
        check(cancelled == timeout,
              f"the retry of a cancelled write fares as that of a timed-out one "
              f"(sent again, refused): {cancelled} vs {timeout}")


if __name__ == "__main__":
    over_http = bool(os.environ.get("MCPD_URL"))
    required = ("MCPD_URL", "MCPD_TOKEN", "DEMO_API_URL") if over_http \
        else ("MCPD_BIN", "MCPD_CONFIG", "DEMO_API_URL")
    sys.exit(main("cancel http" if over_http else "cancel", required, scenario))
