"""What the client scripts share: checks that print one line each, the demo API as
ground truth, and a main that runs scenarios and turns the first failure into a FAIL
line and a non-zero exit.

Environment: DEMO_API_URL (the demo API the shipped tools call), read by api_get.
"""
import asyncio
import json
import os
import sys
import traceback
import urllib.request

from mcp import types

API = os.environ.get("DEMO_API_URL", "").rstrip("/")
AUGUST = {"from": "2025-08-01", "to": "2025-08-31"}
TIMEOUT_S = 60


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    print(f"ok: {what}", flush=True)


def api_get(path):
    """Ground truth, straight from the demo API (not through mcpd)."""
    with urllib.request.urlopen(f"{API}{path}", timeout=10) as r:
        return json.load(r)


def text_of(result):
    return " ".join(c.text for c in result.content if c.type == "text")


def first_leaf(exc):
    """The first real exception inside (possibly nested) anyio exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def list_changed():
    """An event that notifications/tools/list_changed sets, and the session's message
    handler that sets it."""
    changed = asyncio.Event()

    async def on_message(message):
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    return changed, on_message


async def a_new_tool_file_is_announced_listed_and_callable(session, config, changed, over=""):
    """Drops tools.d/orders.recent.yaml into `config` under an initialized session."""
    before = {t.name for t in (await session.list_tools()).tools}
    source = (config / "tools.d" / "orders.export.yaml").read_text()
    (config / "tools.d" / "orders.recent.yaml").write_text(
        source.replace("name: orders.export", "name: orders.recent")
    )
    await asyncio.wait_for(changed.wait(), timeout=20)
    check(True, f"notifications/tools/list_changed received{over} after a file was added")
    after = {t.name for t in (await session.list_tools()).tools}
    check(after - before == {"orders_recent"}, f"tools/list gained {sorted(after - before)}")
    result = await session.call_tool("orders_recent", {"from": "2025-08-01", "to": "2025-08-03"})
    check(not result.is_error, "the new tool is callable at once")


def main(label, required, *scenarios):
    """Runs each scenario (a coroutine function) within TIMEOUT_S; returns the exit code."""
    for var in required:
        if not os.environ.get(var):
            print(f"FAIL: {var} is not set", flush=True)
            return 2
    try:
        for scenario in scenarios:
            asyncio.run(asyncio.wait_for(scenario(), timeout=TIMEOUT_S))
    except Exception as group:  # noqa: BLE001 - every failure becomes one FAIL line
        exc = first_leaf(group)
        if isinstance(exc, CheckFailed):
            print(f"FAIL: {exc}", flush=True)
        elif isinstance(exc, TimeoutError):
            print(f"FAIL: the scenario did not finish within {TIMEOUT_S} s", flush=True)
        else:
            traceback.print_exception(exc)
            print(f"FAIL: unexpected {type(exc).__name__}: {exc}", flush=True)
        return 1
    print(f"{label}: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit("checks.py is a module for the client scripts, not a script")
