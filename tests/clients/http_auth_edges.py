"""What the official MCP Python SDK meets at the edges of `serve --http` (issue 15,
items 2, 3, 4 and 6), driven the way each was found.

The test starts `mcpd serve --http` on a token-only config and passes MCPD_URL, a token
scoped `orders.export` and `flag.set:staging` in MCPD_TOKEN, DEMO_API_URL, and MCPD_SSO:
the authorization server mcpd was configured with (empty for none).

- A scope miss is a tool result the model can read (it was an HTTP 403, whose reason the
  SDK loses), and nothing reaches the upstream; within its scopes the token works.
- Closing the session (the SDK sends DELETE) draws no "Session termination failed"
  warning from the SDK; a DELETE for a session that is gone, or never was, is 404.
- A 401 points at protected-resource metadata only when there is an authorization
  server to sign in with: without one the SDK's own discovery finds nothing to follow
  (no `resource_metadata`, every well-known URL 404) and the 401 says how to get a
  token; with one, the document the SDK reads names it.
- A bearer token that is a host's unexpanded placeholder is called that.
"""
import json
import logging
import os
import sys
import urllib.request

import httpx2
from mcp import ClientSession
from mcp.client.auth.utils import (
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    handle_protected_resource_response,
)
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from checks import check, main, text_of

URL, TOKEN = os.environ.get("MCPD_URL", ""), os.environ.get("MCPD_TOKEN", "")
SSO = os.environ.get("MCPD_SSO", "")
API = os.environ.get("DEMO_API_URL", "").rstrip("/")
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


def upstream_requests():
    with urllib.request.urlopen(f"{API}/_requests", timeout=10) as r:
        return len(json.load(r))


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


async def a_scope_miss_is_a_tool_result_with_the_reason():
    sessions, deletes = [], []

    async def on_response(response):
        if "mcp-session-id" in response.headers:
            sessions.append(response.headers["mcp-session-id"])
        if response.request.method == "DELETE":
            deletes.append(response.status_code)

    warnings = Warnings()
    logging.getLogger("mcp").addHandler(warnings)
    client = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    client.event_hooks = {"response": [on_response]}
    async with client, streamable_http_client(URL, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        before = upstream_requests()
        result = await session.call_tool(
            "flag_set", {"env": "prod", "name": "checkout_v2", "percent": 5})
        text = text_of(result)
        check(result.is_error, f"flag_set in prod outside the token's scopes is a tool result: {text!r}")
        check("lacks scope 'flag.set:prod'" in text and "flag.set:staging" in text,
              "its text names the missing scope and the scopes the token has")
        check(upstream_requests() == before, "nothing reached the upstream")
        result = await session.call_tool(
            "flag_set", {"env": "staging", "name": "checkout_v2", "percent": 5})
        check(not result.is_error, f"within its scopes the same token works: {text_of(result)[:80]!r}")

    # Leaving the block closed the session with DELETE.
    check(deletes and all(s in (200, 204) for s in deletes),
          f"the SDK's DELETE of its own session succeeds: {deletes}")
    failed = [m for m in warnings.messages if "termination failed" in m]
    check(not failed, f"the SDK logged no session-termination warning: {failed}")
    async with httpx2.AsyncClient() as raw:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        gone = await raw.delete(URL, headers={**auth, "Mcp-Session-Id": sessions[-1]})
        check(gone.status_code == 404, f"DELETE of the closed session is 404: {gone.status_code}")
        never = await raw.delete(URL, headers={**auth, "Mcp-Session-Id": "no-such-session"})
        check(never.status_code == 404 and "no session" in never.text,
              f"DELETE of a session that never was is 404: {never.status_code} {never.text!r}")


async def a_401_leads_somewhere_or_says_how_to_get_a_token():
    async with httpx2.AsyncClient() as raw:
        headers = {"Accept": "application/json, text/event-stream"}
        for token, label in ((None, "no token"), (f"{TOKEN}x", "a bad token")):
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            r = await raw.post(URL, json=INIT, headers={**headers, **auth})
            check(r.status_code == 401, f"{label}: 401")
            described = r.json().get("error_description", "")
            pointer = extract_resource_metadata_from_www_auth(r)
            if SSO:
                check(pointer is not None, f"{label}: the 401 points at the metadata ({pointer})")
                check(SSO in described, f"{label}: the 401 names the SSO to sign in with")
            else:
                check(pointer is None,
                      f"{label}: no resource_metadata in the 401 ({r.headers.get('www-authenticate')!r})")
                check("mcpd token issue" in described and "no OAuth sign-in" in described,
                      f"{label}: the 401 says how to get a token: {described[:160]!r}")

        found = []
        for url in build_protected_resource_metadata_discovery_urls(pointer, URL):
            metadata = await handle_protected_resource_response(await raw.get(url))
            if metadata is not None:
                found.append(metadata)
        if SSO:
            servers = [str(s).rstrip("/") for s in found[0].authorization_servers] if found else []
            check(servers == [SSO.rstrip("/")],
                  f"the SDK's discovery reads a document naming the SSO: {servers}")
        else:
            check(not found, "the SDK's discovery finds no protected-resource metadata to follow")

        r = await raw.post(URL, json=INIT, headers={**headers, "Authorization": "Bearer ${input:mcpd-token}"})
        described = r.json().get("error_description", "")
        check(r.status_code == 401 and "placeholder the host did not expand" in described,
              f"an unexpanded placeholder is called that: {described[:120]!r}")


if __name__ == "__main__":
    scenarios = [a_401_leads_somewhere_or_says_how_to_get_a_token]
    if not SSO:
        scenarios.insert(0, a_scope_miss_is_a_tool_result_with_the_reason)
    sys.exit(main("http auth edges", ("MCPD_URL", "MCPD_TOKEN", "DEMO_API_URL"), *scenarios))
