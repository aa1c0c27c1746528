"""A result too large to send inline, driven by the official MCP Python SDK over
Streamable HTTP with two callers (tests/features.rs starts `mcpd serve --http`).

orders_big's upstream answers a multi-megabyte export (every row with an email and a
card number). Caller A gets a summary, the first rows and a resource_link instead of the
export; resources/read of the link returns the whole export to A, redacted exactly as
the inline result would be; caller B can neither read nor list it.

Environment: MCPD_URL, TOKEN_A, TOKEN_B, ROWS (the export's row count). Prints
"LINK <uri>" for the test to find the audit records.
"""
import json
import os
import sys

from mcp import MCPError

from checks import check, main, text_of
from session import open_session

ROWS = int(os.environ.get("ROWS", "0"))


async def scenario():
    os.environ["MCPD_TOKEN"] = os.environ["TOKEN_A"]
    # The whole export is one message of several MB: more than the SDK's default limit
    # for one SSE event (1 MiB), which a client reading kept results raises.
    async with open_session(sse_limit=None) as a:
        result = await a.call_tool("orders_big", {})
        check(not result.is_error, f"the export succeeds: {text_of(result)[:160]!r}")
        size = len(json.dumps(result.model_dump(mode="json", by_alias=True)))
        check(size < 100_000, f"what is sent inline is small: {size} bytes")
        links = [c for c in result.content if c.type == "resource_link"]
        check(len(links) == 1 and links[0].uri.startswith("mcpd://results/"), f"one resource_link: {links}")
        link = links[0].uri
        print(f"LINK {link}", flush=True)
        summary = result.content[0].text
        check(f"'orders' has {ROWS} rows; the first" in summary and "fields: " in summary and "email" in summary,
              f"the summary gives the row count and the fields: {summary!r}")
        rows = result.structured_content["orders"]
        check(0 < len(rows) <= 20 and all(r["email"].split("@")[0].endswith("***") for r in rows),
              f"structuredContent holds the first rows, masked: {len(rows)}")

        read = await a.read_resource(link)
        body = read.contents[0]
        check(body.mime_type == "application/json", f"the kept result is JSON: {body.mime_type}")
        data = json.loads(body.text)["orders"]
        check(len(data) == ROWS, f"resources/read returns every row to the caller: {len(data)} of {ROWS}")
        raw = [f"user{i}@example.com" for i in (0, ROWS // 2, ROWS - 1)]
        check(not any(e in body.text for e in raw) and all("***" in r["email"] for r in data),
              "every email in it is masked, as inline")
        check(all(r["card"].startswith("*") and r["card"][-4:].isdigit() for r in data),
              "every card number shows only its last four digits (policy's redact rule)")
        listed = [r.uri for r in (await a.list_resources()).resources]
        check(link in listed, "resources/list shows the caller's kept result")

    os.environ["MCPD_TOKEN"] = os.environ["TOKEN_B"]
    async with open_session() as b:
        try:
            await b.read_resource(link)
            check(False, "another caller cannot read it")
        except MCPError as e:
            check(f"no resource '{link}' for this caller" in str(e), f"another caller cannot read it: {e}")
        listed = [r.uri for r in (await b.list_resources()).resources]
        check(link not in listed, "nor see it listed")


if __name__ == "__main__":
    sys.exit(main("large results", ("MCPD_URL", "TOKEN_A", "TOKEN_B", "ROWS"), scenario))
