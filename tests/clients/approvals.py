"""Human approval through elicitation, driven by the official MCP Python SDK.

The shipped seed denies a prod flag change above 10 percent without a change ticket. A
client that declared the elicitation capability is asked instead: an elicited ticket
(that the ticket system, elevation.ticket_tool, knows) grants exactly one prod write; a
decline, a cancel, no answer in time, a ticket of the wrong form or one the ticket system
does not know, or an answer after the client cancelled the call, is a denial with nothing
sent; the answer can only come from the elicitation
response (not the arguments, not `_meta`); a client without elicitation gets today's
denial and is never asked; a call policy allows is never asked.

Environment: MCPD_BIN and MCPD_CONFIG (stdio), or MCPD_URL and MCPD_TOKEN (HTTP);
DEMO_API_URL. The config's elevation.approval_timeout must be 2s and its
elevation.ticket_tool the demo API's ticket lookup.
"""
import asyncio
import sys

from mcp import MCPError, types

from checks import api_get, check, main, text_of
from session import open_session, transport

FLAG = "/flags/prod/checkout_v2"


def prod_writes():
    return [r for r in api_get("/_requests") if r["method"] == "PUT" and r["path"] == FLAG]


class Human:
    """Answers elicitations from a queue of answers; records what it was asked."""

    def __init__(self):
        self.answers = []
        self.asked = []

    async def __call__(self, context, params):
        self.asked.append(params)
        answer = self.answers.pop(0)
        if answer == "sleep":
            await asyncio.sleep(5)
            return types.ElicitResult(action="cancel")
        if isinstance(answer, tuple):  # ("late", content): accepts after a second
            await asyncio.sleep(1)
            return types.ElicitResult(action="accept", content=answer[1])
        if isinstance(answer, str):
            return types.ElicitResult(action=answer)
        return types.ElicitResult(action="accept", content=answer)


async def with_elicitation():
    human = Human()
    over = f" over {transport()}"
    answers = []
    async with open_session(elicitation_callback=human, answers=answers) as session:
        # A call policy allows is never put to the human.
        result = await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 5})
        check(not result.is_error and not human.asked, f"a 5 percent prod write goes without asking{over}")

        # A tool no call of which can ask (not destructive, no rule a human could lift) is
        # answered with one JSON response; one that may ask keeps the call's stream.
        result = await session.call_tool("orders_export", {"from": "2025-08-01", "to": "2025-08-31"})
        check(not result.is_error, f"an export by a client that can be asked succeeds{over}: {text_of(result)[:160]!r}")
        if transport() == "http":
            kinds = {tool: kind.split(";")[0] for tool, kind in answers}
            check(kinds.get("orders_export") == "application/json",
                  f"a call that cannot ask is answered as JSON: {answers}")
            check(kinds.get("flag_set") == "text/event-stream",
                  f"a call of a tool that may ask gets the stream: {answers}")

        # An elicited ticket grants the prod write.
        human.answers.append({"ticket": "CHG-1234"})
        before = len(prod_writes())
        result = await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 50})
        check(not result.is_error, f"with an elicited ticket the 50 percent prod write succeeds{over}: {text_of(result)[:160]!r}")
        check(len(human.asked) == 1, "the human was asked once")
        asked = human.asked[0]
        check("PUT" in asked.message and FLAG in asked.message and '"percent":50' in asked.message,
              f"the question says what will be sent where: {asked.message!r}")
        check(asked.requested_schema.get("required") == ["ticket"], f"it asks for a ticket: {asked.requested_schema}")
        if transport() == "http":
            check(answers[-1][0] == "flag_set" and answers[-1][1].startswith("text/event-stream"),
                  f"the question and the result rode the call's stream: {answers[-1]}")
        check(api_get(FLAG)["percent"] == 50 and len(prod_writes()) == before + 1,
              "the demo API got exactly one prod write, at 50")

        # The answer granted exactly that call: the next one is asked again, and a decline denies it.
        human.answers.append("decline")
        result = await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 60})
        check(result.is_error and "declined" in text_of(result), f"a decline is a denial: {text_of(result)!r}")
        check(len(human.asked) == 2, "the next prod write was asked again")
        check(len(prod_writes()) == before + 1 and api_get(FLAG)["percent"] == 50, "after a decline nothing was sent")

        human.answers.append("cancel")
        result = await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 61})
        check(result.is_error and "dismissed" in text_of(result), f"a cancel is a denial: {text_of(result)!r}")

        human.answers.append({"ticket": "please"})
        result = await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 62})
        check(result.is_error and "does not match" in text_of(result),
              f"a ticket of the wrong form is a denial: {text_of(result)!r}")

        # A ticket of the right form that the ticket system does not know is refused too.
        human.answers.append({"ticket": "CHG-9999"})
        result = await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 62})
        check(result.is_error and "the ticket system did not confirm ticket 'CHG-9999'" in text_of(result),
              f"a ticket the ticket system does not know is a denial{over}: {text_of(result)!r}")
        looked_up = [r["path"] for r in api_get("/_requests") if r["path"].startswith("/tickets/")]
        check(looked_up == ["/tickets/CHG-1234", "/tickets/CHG-9999"],
              f"the ticket system was asked about each ticket of the right form, once: {looked_up}")

        human.answers.append("sleep")
        result = await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 63})
        check(result.is_error and "within 2 s" in text_of(result), f"no answer in time is a denial: {text_of(result)!r}")

        # The client gives up while the human is asked: the question is withdrawn, and the
        # ticket the human gives a second later grants nothing (it is not even looked up).
        human.answers.append(("late", {"ticket": "CHG-1234"}))
        asked = len(human.asked)
        try:
            await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 66},
                                    read_timeout_seconds=0.5)
            check(False, "the call should not have finished within 0.5 s")
        except (MCPError, TimeoutError):
            pass
        check(len(human.asked) == asked + 1, "the human was asked before the client gave up")
        await asyncio.sleep(1.5)  # past the late answer; within the 2 s approval timeout
        lookups = [r["path"] for r in api_get("/_requests") if r["path"].startswith("/tickets/")]
        check(len(prod_writes()) == before + 1 and api_get(FLAG)["percent"] == 50 and len(lookups) == 2,
              f"a ticket given after the client cancelled grants nothing and is not looked up{over}: {lookups}")

        # The agent cannot answer for the human: not in the arguments, not in _meta.
        result = await session.call_tool(
            "flag_set", {"env": "prod", "name": "checkout_v2", "percent": 64, "ticket": "CHG-1"})
        check(result.is_error and "ticket" in text_of(result), f"a ticket in the arguments is refused: {text_of(result)!r}")
        human.answers.append("decline")
        result = await session.call_tool(
            "flag_set", {"env": "prod", "name": "checkout_v2", "percent": 65},
            meta={"dev.mcpd/approval": {"ticket": "CHG-1", "approve": True}, "ticket": "CHG-1"})
        check(result.is_error and "declined" in text_of(result),
              f"an approval in _meta counts for nothing; only the human's answer does: {text_of(result)!r}")
        check(len(prod_writes()) == before + 1, "none of the refused calls reached the API")


async def without_elicitation():
    async with open_session() as session:
        before = len(prod_writes())
        result = await session.call_tool("flag_set", {"env": "prod", "name": "checkout_v2", "percent": 70})
        check(result.is_error and text_of(result).startswith(
            "denied by policy: prod changes above 10 percent need an elevation with a change ticket"),
            f"a client without elicitation gets today's denial: {text_of(result)!r}")
        check(len(prod_writes()) == before, "and nothing is sent")


if __name__ == "__main__":
    sys.exit(main("approvals", ("DEMO_API_URL",), with_elicitation, without_elicitation))
