"""Golden flow through a client we did not write: the official MCP Python SDK.

The SDK starts `$MCPD_BIN serve --config $MCPD_CONFIG` over stdio and plays the shipped
demo tools end to end: tools/list shows the wire names and their input schemas;
orders_export returns as many orders as the demo API holds, with every email masked;
flag_set changes the flag in the demo API; the dotted id works in tools/call; bad
arguments come back as isError results that name the field; an unknown tool is a
JSON-RPC error.

Environment: MCPD_BIN (the binary), MCPD_CONFIG (the config dir), DEMO_API_URL (the
demo API the shipped tools call). Prints one line per check and exits non-zero with a
FAIL line at the first failure.
"""
import json
import os
import sys

from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client

from checks import AUGUST, api_get, check, main, text_of


async def scenario():
    server = StdioServerParameters(
        command=os.environ["MCPD_BIN"],
        args=["serve", "--config", os.environ["MCPD_CONFIG"]],
        # The SDK's default child environment is only HOME/PATH/USER/...; mcpd's config
        # reads DEMO_API_URL, so pass the whole environment through.
        env=dict(os.environ),
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        check(init.server_info.name == "mcpd",
              f"initialize: {init.server_info.name} {init.server_info.version}, protocol {init.protocol_version}")

        # a. tools/list: wire names (dots become underscores) and input schemas
        tools = {t.name: t for t in (await session.list_tools()).tools}
        check(sorted(tools) == ["flag_set", "orders_export"], f"tools/list has exactly {sorted(tools)}")
        for name, tool in sorted(tools.items()):
            check(tool.input_schema.get("type") == "object", f"{name} has an object inputSchema")
        orders_schema, flag_schema = tools["orders_export"].input_schema, tools["flag_set"].input_schema
        check(sorted(orders_schema.get("required", [])) == ["from", "to"], "orders_export requires from and to")
        props = flag_schema.get("properties", {})
        check({"env", "name", "percent"} <= props.keys(), "flag_set has properties env, name, percent")
        check(sorted(props["env"].get("enum", [])) == ["prod", "staging"], "flag_set env is staging | prod")
        percent = props["percent"]
        check((percent.get("type"), percent.get("minimum"), percent.get("maximum")) == ("integer", 0, 100),
              "flag_set percent is an integer 0..100")

        # b. orders_export: every order the API has, no raw email anywhere
        truth = api_get("/orders?from=2025-08-01&to=2025-08-31")
        count, raw_emails = truth["count"], [o["email"] for o in truth["orders"]]
        check(count > 0 and len(raw_emails) == count, f"the demo API has {count} orders in August")
        result = await session.call_tool("orders_export", AUGUST)
        check(not result.is_error, f"orders_export succeeded {text_of(result)[:200]!r}")
        sc = result.structured_content
        check(isinstance(sc, dict) and len(sc) == 1 and isinstance(next(iter(sc.values())), list),
              f"structuredContent is one key holding a list: keys {list(sc) if isinstance(sc, dict) else sc!r}")
        listed = next(iter(sc.values()))
        check(len(listed) == count, f"orders_export returned {len(listed)} orders, as the API has")
        dump = json.dumps(result.model_dump(mode="json", by_alias=True))
        leaked = [e for e in raw_emails if e in dump]
        check(not leaked, f"no raw email anywhere in the result (leaked: {leaked[:3]})")
        emails = [o.get("email", "") for o in listed]
        check(all("@" in e and "***" in e for e in emails), f"every email is masked and keeps its @: {emails[:2]}")

        # c. flag_set changes the flag in the demo API
        result = await session.call_tool("flag_set", {"env": "staging", "name": "checkout_v2", "percent": 10})
        check(not result.is_error, f"flag_set succeeded {text_of(result)[:200]!r}")
        flag = api_get("/flags/staging/checkout_v2")
        check(flag.get("percent") == 10, f"the demo API has checkout_v2 at 10 in staging: {flag}")

        # d. tools/call accepts the dotted id too
        result = await session.call_tool("orders.export", AUGUST)
        dotted = result.structured_content or {}
        check(not result.is_error and [len(v) for v in dotted.values()] == [count],
              "the dotted id orders.export works in tools/call")

        # e. and f. bad arguments are isError results that name the field
        result = await session.call_tool("flag_set", {"env": "staging", "name": "checkout_v2", "percent": 150})
        check(result.is_error and "percent" in text_of(result), f"percent 150 is refused: {text_of(result)!r}")
        result = await session.call_tool("orders_export", {"from": "2025-08-01"})
        check(result.is_error and "to" in text_of(result), f"a missing 'to' is refused: {text_of(result)!r}")

        # g. an unknown tool is a JSON-RPC error, which the SDK raises as MCPError
        try:
            result = await session.call_tool("no_such_tool", {})
        except MCPError as e:
            check(True, f"an unknown tool is a JSON-RPC error: code {e.code}, {e.message!r}")
        else:
            check(False, f"an unknown tool is a JSON-RPC error, not a result (got isError={result.is_error})")


if __name__ == "__main__":
    sys.exit(main("golden stdio", ("MCPD_BIN", "MCPD_CONFIG", "DEMO_API_URL"), scenario))
