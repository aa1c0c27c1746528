"""Replicas behind a round-robin balancer with no affinity, through the official MCP
Python SDK.

The test starts redis-server, several `mcpd serve --http` replicas on one shared config
directory, and HAProxy in front of them (round-robin, no stickiness; it names the
replica that answered in an `X-Mcpd-Replica` header). This script, through HAProxy:
1. opens one session per token and checks each session's requests were spread over
   every replica;
2. drops a tool file into the shared config dir: every session gets
   notifications/tools/list_changed, and every replica lists and runs the new tool;
3. runs keyed flag writes from every session at once, kills one replica (SIGKILL) a
   third of the way in, and retries a failed write with the same idempotency key (on a
   new session when the SDK ended the old one with the dead replica) until it completes
   or is reported in flight (the killed replica held it: its outcome is
   unknown and it must not be sent again). Writes after the kill are served by the
   others.

Environment: MCPD_URL (HAProxy's /mcp), MCPD_TOKENS (comma-separated, one client per
token), MCPD_CONFIG (the shared config dir), MCPD_REPLICAS (comma-separated NAME=PID),
MCPD_KILL (the NAME to kill), DEMO_API_URL. Prints `OUTCOMES <json>` (each write's
key and outcome) before its last line, and exits non-zero at the first failure.
"""
import asyncio
import contextlib
import json
import os
import pathlib
import signal
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from checks import CheckFailed, check, first_leaf, list_changed, main, text_of

WRITES = 8
CALL_TIMEOUT_S = 10


class Client:
    """One SDK session through the balancer, recording which replica answered what."""

    def __init__(self, url, token):
        self.url, self.token = url, token
        self.served = []  # replica names, in order
        self.posted = []  # the same, for POSTs (calls): a GET stream may be answered
        # by a replica just as it is killed
        self.streams = []  # GET and DELETE requests: method, status, replica
        self.changed, self.on_message = list_changed()

    async def open(self, stack):
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {self.token}"})

        async def record(response):
            name = response.headers.get("x-mcpd-replica")
            if name:
                self.served.append(name)
                if response.request.method == "POST":
                    self.posted.append(name)
            if response.request.method != "POST":
                self.streams.append(f"{response.request.method} {response.status_code} {name}")

        http.event_hooks["response"] = [record]
        await stack.enter_async_context(http)
        read, write = await stack.enter_async_context(
            streamable_http_client(self.url, http_client=http))
        self.session = await stack.enter_async_context(
            ClientSession(read, write, message_handler=self.on_message))
        self.init = await self.session.initialize()


async def scenario():
    url = os.environ["MCPD_URL"]
    tokens = os.environ["MCPD_TOKENS"].split(",")
    config = pathlib.Path(os.environ["MCPD_CONFIG"])
    replicas = dict(r.split("=") for r in os.environ["MCPD_REPLICAS"].split(","))
    victim = os.environ["MCPD_KILL"]

    clients = [Client(url, t) for t in tokens]
    async with contextlib.AsyncExitStack() as stack:
        for c in clients:
            await c.open(stack)
        check(all(c.init.server_info.name == "mcpd" for c in clients),
              f"{len(clients)} sessions through the balancer, protocol {clients[0].init.protocol_version}")

        # 1. Any replica serves any request of a session.
        for c in clients:
            for _ in range(len(replicas)):
                listed = {t.name for t in (await c.session.list_tools()).tools}
                check(listed == {"flag_set", "orders_export"}, f"tools/list has {sorted(listed)}")
        for c in clients:
            check(set(c.served) == set(replicas),
                  f"one session's requests were served by every replica: {sorted(set(c.served))}")

        # 2. A tool file in the shared config dir reaches every replica and every client.
        source = (config / "tools.d" / "orders.export.yaml").read_text()
        (config / "tools.d" / "orders.recent.yaml").write_text(
            source.replace("name: orders.export", "name: orders.recent"))
        for i, c in enumerate(clients):
            try:
                await asyncio.wait_for(c.changed.wait(), timeout=20)
            except TimeoutError:
                check(False, f"client {i} got notifications/tools/list_changed (its streams: {c.streams})")
            check(True, f"client {i} got notifications/tools/list_changed")
        c = clients[0]
        start = len(c.served)
        for _ in range(2 * len(replicas)):
            listed = {t.name for t in (await c.session.list_tools()).tools}
            check("orders_recent" in listed, "tools/list has orders_recent")
            result = await c.session.call_tool(
                "orders_recent", {"from": "2025-08-01", "to": "2025-08-03"})
            check(not result.is_error, f"orders_recent runs: {text_of(result)[:80]!r}")
        check(set(c.served[start:]) == set(replicas),
              f"every replica listed and ran the new tool: {sorted(set(c.served[start:]))}")

        # 3. Keyed writes from every client at once; one replica dies a third of the way.
        outcomes = {}
        done = asyncio.Event()
        after_kill = []

        async def writes(i, c):
            # Each writer has a session of its own for this phase. The Python SDK ends a
            # session when a replica dies under one of its POSTs (the balancer closes the
            # connection without a response and the SDK's task group fails): a client then
            # opens a new session through the balancer and retries with the same key.
            j, attempts = 0, 0
            while j < WRITES:
                try:
                    async with contextlib.AsyncExitStack() as own:
                        w = Client(c.url, c.token)
                        await w.open(own)
                        while j < WRITES:
                            key = f"lb-{i}-{j}"
                            args = {"env": "staging", "name": f"lb_{i}", "percent": j}
                            attempts += 1
                            check(attempts <= 50 * WRITES, f"write {key} never completed")
                            killed = done.is_set()
                            mark = len(w.posted)
                            try:
                                r = await w.session.call_tool(
                                    "flag_set", args, read_timeout_seconds=CALL_TIMEOUT_S,
                                    meta={"dev.mcpd/idempotencyKey": key})
                            except Exception as e:  # noqa: BLE001 - a dead replica, retried
                                print(f"retrying {key}: {type(e).__name__} {str(e)[:100]}",
                                      flush=True)
                                await asyncio.sleep(0.05)
                                continue
                            if r.is_error and "in flight" in text_of(r):
                                outcomes[key] = "in_flight"
                                j += 1
                                continue
                            check(not r.is_error, f"{key}: {text_of(r)[:200]}")
                            outcomes[key] = "done"
                            if killed:
                                after_kill.extend(w.posted[mark:])
                            j += 1
                except Exception as e:  # noqa: BLE001 - the session died with its replica
                    leaf = first_leaf(e)
                    if isinstance(leaf, CheckFailed):
                        raise leaf from None
                    attempts += 1
                    check(attempts <= 50 * WRITES, f"client {i} could not open a session: {leaf}")
                    print(f"client {i} opens a new session: {type(leaf).__name__} "
                          f"{str(leaf)[:100]}", flush=True)
                    await asyncio.sleep(0.05)

        async def killer():
            total = WRITES * len(clients)
            while len(outcomes) < total // 3:
                await asyncio.sleep(0.005)
            os.kill(int(replicas[victim]), signal.SIGKILL)
            done.set()
            print(f"killed {victim} after {len(outcomes)} writes", flush=True)

        await asyncio.gather(killer(), *(writes(i, c) for i, c in enumerate(clients)))
        print("OUTCOMES " + json.dumps(outcomes), flush=True)
        alive = set(replicas) - {victim}
        check(alive <= set(after_kill),
              f"after the kill, writes were served by the others: {sorted(set(after_kill))}")
        check(victim not in after_kill, f"{victim} served nothing after it died")


if __name__ == "__main__":
    sys.exit(main("balancer", ("MCPD_URL", "MCPD_TOKENS", "MCPD_CONFIG", "MCPD_REPLICAS",
                               "MCPD_KILL", "DEMO_API_URL"), scenario))
