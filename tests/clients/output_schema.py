"""Output schemas as the official MCP Python SDK checks them (issue 15, item 1).

The SDK validates every successful `structuredContent` against the `outputSchema` that
tools/list advertised, and raises when it does not match. The test gives mcpd the
shipped tools (both declare `output:`: orders.export a list, flag.set an object) plus
`orders.strict`, a copy of orders.export whose output schema requires a field the demo
API never sends. Over stdio: orders_export's advertised schema is the list wrapped under
`orders`; every call of both seed tools passes the SDK's own check, again and again (it
broke on every call); orders_strict is an isError result that names where the reply
missed the schema and does not dump the reply.

Environment: MCPD_BIN, MCPD_CONFIG, DEMO_API_URL.
"""
import os
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client

from checks import AUGUST, check, main, text_of


async def scenario():
    server = StdioServerParameters(
        command=os.environ["MCPD_BIN"],
        args=["serve", "--no-watch", "--config", os.environ["MCPD_CONFIG"]],
        env=dict(os.environ),
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        out = tools["orders_export"].output_schema or {}
        check(out.get("type") == "object" and out.get("required") == ["orders"]
              and out["properties"]["orders"].get("type") == "array",
              f"orders_export advertises its list wrapped under 'orders': {str(out)[:120]}")
        flag_out = tools["flag_set"].output_schema or {}
        check(flag_out.get("type") == "object" and "percent" in flag_out.get("properties", {}),
              "flag_set advertises its object result as is")

        for attempt in range(3):
            result = await session.call_tool("orders_export", AUGUST)
            check(not result.is_error and len(result.structured_content["orders"]) > 0,
                  f"call {attempt + 1}: orders_export passes the SDK's output-schema check")
        for percent in (5, 6):
            result = await session.call_tool(
                "flag_set", {"env": "staging", "name": "checkout_v2", "percent": percent})
            check(not result.is_error and result.structured_content["percent"] == percent,
                  f"flag_set to {percent} passes the SDK's output-schema check")

        result = await session.call_tool("orders_strict", AUGUST)
        text = text_of(result)
        check(result.is_error, f"a reply that misses the output schema is a tool error: {text[:160]!r}")
        check("'/orders/0': \"total\" is a required property" in text,
              "the error names the JSON pointer inside structuredContent")
        check("(arguments)" not in text and "ord-1001" not in text and "@example.com" not in text,
              "the error neither blames the arguments nor dumps the reply")
        check(len(text) < 400, f"the error is short ({len(text)} characters)")


if __name__ == "__main__":
    sys.exit(main("output schema", ("MCPD_BIN", "MCPD_CONFIG", "DEMO_API_URL"), scenario))
