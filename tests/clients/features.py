"""Issue 16's MCP features, driven by the official MCP Python SDK against the shipped
config plus tests/fixtures/features (see tests/features.rs). One group per run:

  logging    logging/setLevel filters what a session is sent; a shadow rule, a retry, a
             budget at 80 % and a reload that kept the last good file reach the client;
             messages are redacted;
             a second session keeps its own level
  progress   progress notifications during retries and a heartbeat past one second,
             increasing; none without a progressToken
  confirm    a require: { approval: true } rule and a destructiveHint tool ask for an
             explicit yes; a yes grants the one call, a no denies it; a client without
             elicitation gets the rule's denial and the destructive call as before
  resources  declared resources and templates: listed, read under policy (a denied read
             says why), redacted; a resource-only tool is not a tool
  content    image, audio, text and embedded resource content; response.text
  prompts    prompts/list, prompts/get (text, an embedded resource, an image),
             completion from values, from a tool lookup and from a template's enum; a new
             prompt file is announced and listed

Environment: MCPD_BIN and MCPD_CONFIG (stdio) or MCPD_URL (HTTP); DEMO_API_URL.
"""
import asyncio
import base64
import json
import os
import pathlib
import sys

from mcp import MCPError, types

from checks import api_get, check, main, text_of
from session import open_session, transport

OVER = f" over {transport()}"


class Log:
    """Collects notifications/message."""

    def __init__(self):
        self.messages = []

    async def __call__(self, params):
        self.messages.append(params)

    def texts(self, level=None):
        return [str(m.data) for m in self.messages if level is None or m.level == level]

    async def wait_for(self, needle, timeout=10):
        for _ in range(int(timeout * 20)):
            if any(needle in t for t in self.texts()):
                return True
            await asyncio.sleep(0.05)
        return False


async def logging_group():
    log = Log()
    async with open_session(logging_callback=log) as session:
        await session.call_tool("orders_export", {"from": "2025-08-01", "to": "2025-08-02"})
        await asyncio.sleep(0.3)
        check(not log.texts("debug"), f"at the default level (info) no debug message is sent{OVER}: {log.texts()}")

        await session.set_logging_level("debug")
        await session.call_tool("orders_search", {"email": "ann.silva@example.com"})
        check(await log.wait_for("sending GET"), f"after setLevel debug a call's steps are sent{OVER}")
        sent = [t for t in log.texts("debug") if "sending GET" in t]
        check(sent and "a***@example.com" in sent[0] and "ann.silva@example.com" not in json.dumps(log.texts()),
              f"a message with an email in it is redacted: {sent[:1]}")

        await session.call_tool("orders_export", {"from": "2025-08-01", "to": "2025-09-30"})
        check(await log.wait_for("shadow rule 'no-bulk-exports' would have denied this call"),
              "a shadow rule that would have denied the call is told at notice")

        await session.call_tool("orders_flaky", {"id": f"log-{transport()}", "fail": 1})
        check(await log.wait_for("attempt 1 of 4: upstream 'orders' answered HTTP 503; retrying in"),
              "a retry is told at info")

        # A budget of 5 calls: the 4th call takes it to 80 % and is told, once.
        for i in range(3):
            await session.call_tool("assets_chime", {})
        check(not [t for t in log.texts() if "budget 'chime-calls'" in t],
              f"a budget under 80 % is not told: {log.texts('warning')}")
        await session.call_tool("assets_chime", {})
        check(await log.wait_for("budget 'chime-calls' is 80 % spent: 1 of 5 calls left in this window for"),
              f"the call that takes a budget to 80 % is told at warning{OVER}: {log.texts('warning')}")
        await session.call_tool("assets_chime", {})
        await asyncio.sleep(0.3)
        told = [m for m in log.messages if "budget 'chime-calls'" in str(m.data)]
        check(len(told) == 1 and told[0].level == "warning",
              f"once, by the call that crosses the line: {[(m.level, m.data) for m in told]}")

        await session.set_logging_level("error")
        before = len(log.messages)
        await session.call_tool("orders_export", {"from": "2025-08-01", "to": "2025-09-30"})
        await session.call_tool("orders_flaky", {"id": f"log2-{transport()}", "fail": 1})
        await asyncio.sleep(0.5)
        check(len(log.messages) == before, f"at error, notices and retries are not sent: {log.texts()[before:]}")

        # Another session keeps its own level: this one's setLevel does not reach it.
        other = Log()
        async with open_session(logging_callback=other) as second:
            await second.call_tool("orders_export", {"from": "2025-08-01", "to": "2025-09-30"})
            check(await other.wait_for("shadow rule"), "a second session hears at its own level (info)")
            check(not other.texts("debug"), "and gets none of the first session's debug messages")

        # A broken tool file: the reload keeps the last good version and says why.
        await session.set_logging_level("warning")
        if transport() == "stdio":
            config = pathlib.Path(os.environ["MCPD_CONFIG"])
            path = config / "tools.d" / "features.yaml"
            good = path.read_text()
            path.write_text(good.replace("name: runbooks.get", "name: runbooks.get\nbogus: 1", 1))
            check(await log.wait_for("reload kept the last good version", timeout=20),
                  f"a reload that kept the last good file says so: {log.texts('warning')[-2:]}")
            check(any("config problem" in t and "bogus" in t for t in log.texts("error")),
                  "and names the problem, with its place")
            path.write_text(good)


async def progress_group():
    async with open_session() as session:
        seen = []

        async def on_progress(progress, total, message):
            seen.append((progress, total, message))

        result = await session.call_tool("orders_flaky", {"id": f"progress-{transport()}", "fail": 2},
                                         progress_callback=on_progress)
        check(not result.is_error, f"the flaky call succeeds after its retries{OVER}")
        check(len(seen) == 2, f"two retries, two progress notifications: {seen}")
        check(seen[0][2].startswith("attempt 1 of 4: upstream 'orders' answered HTTP 503; retrying in")
              and seen[1][2].startswith("attempt 2 of 4"), f"each says the attempt and the backoff: {seen}")
        check([p for p, _, _ in seen] == sorted(p for p, _, _ in seen) and seen[0][0] < seen[1][0],
              "progress only increases")

        seen.clear()
        result = await session.call_tool("slow_wait", {"ms": 2300}, progress_callback=on_progress)
        check(not result.is_error and len(seen) == 2, f"a call of 2.3 s sends a heartbeat each second: {seen}")
        check("still running after 1 s" in seen[0][2] and "after 2 s" in seen[1][2], f"{seen}")

        quiet = []
        result = await session.call_tool("orders_flaky", {"id": f"quiet-{transport()}", "fail": 1})
        check(not result.is_error and not quiet, "without a progressToken nothing is reported")


class Yes:
    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    async def __call__(self, context, params):
        self.asked.append(params)
        if self.answer is None:
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"approve": self.answer})


def staging(name):
    return api_get(f"/flags/staging/{name}") if True else None


def flag_writes(name):
    return [r for r in api_get("/_requests") if r["method"] == "PUT" and r["path"] == f"/flags/staging/{name}"]


async def confirm_group():
    yes = Yes(True)
    async with open_session(elicitation_callback=yes) as session:
        result = await session.call_tool("flag_set", {"env": "staging", "name": "wide", "percent": 80})
        check(not result.is_error and api_get("/flags/staging/wide")["percent"] == 80,
              f"a yes approves the 80 percent staging rollout the rule guards{OVER}: {text_of(result)[:120]!r}")
        asked = yes.asked[0]
        check(asked.requested_schema.get("required") == ["approve"]
              and "staging rollouts above 50 percent need a human's approval" in asked.message,
              f"it asked for an explicit yes, saying why: {asked.message!r}")
        result = await session.call_tool("flag_set", {"env": "staging", "name": "wide", "percent": 20})
        check(not result.is_error and len(yes.asked) == 1, "a call the rule does not guard is not asked")
        result = await session.call_tool("flag_reset", {"name": "wide"})
        check(not result.is_error and len(yes.asked) == 2 and "destructive" in yes.asked[1].message,
              "a destructiveHint tool asks too, and a yes lets it go")

    no = Yes(False)
    async with open_session(elicitation_callback=no) as session:
        before = len(flag_writes("wide"))
        result = await session.call_tool("flag_set", {"env": "staging", "name": "wide", "percent": 90})
        check(result.is_error and "declined" in text_of(result), f"approve: false is a no: {text_of(result)!r}")
        result = await session.call_tool("flag_reset", {"name": "wide"})
        check(result.is_error and "declined" in text_of(result), "and a destructive call is denied")
        check(len(flag_writes("wide")) == before, "nothing was sent")

    async with open_session() as session:
        before = len(flag_writes("wide"))
        result = await session.call_tool("flag_set", {"env": "staging", "name": "wide", "percent": 95})
        check(result.is_error and "missing: a human's approval of this call" in text_of(result),
              f"without elicitation the require rule denies, saying what is missing: {text_of(result)!r}")
        check(len(flag_writes("wide")) == before, "nothing was sent")
        result = await session.call_tool("flag_reset", {"name": "wide"})
        check(not result.is_error, "a destructive tool goes as before when nobody can be asked")


async def resources_group():
    async with open_session() as session:
        tools = {t.name for t in (await session.list_tools()).tools}
        check("runbooks_get" not in tools and "orders_get" in tools,
              f"a resource-only tool is not a tool; a tool that is also a resource is both{OVER}")
        try:
            await session.call_tool("runbooks_get", {"name": "deploy"})
            check(False, "tools/call of a resource-only tool is refused")
        except MCPError as e:
            check("unknown tool" in str(e), f"tools/call of a resource-only tool is an unknown tool: {e}")
        listed = {r.uri for r in (await session.list_resources()).resources}
        check("pixel://one" in listed, f"a URI without parts is listed: {sorted(listed)}")
        templates = {t.uri_template: t for t in (await session.list_resource_templates()).resource_templates}
        check({"runbook://{name}", "order://{id}"} <= set(templates), f"templates are listed: {sorted(templates)}")

        read = await session.read_resource("runbook://deploy")
        body = read.contents[0]
        check(body.mime_type == "text/markdown" and body.text.startswith("# Deploy"),
              f"a runbook reads as markdown: {body.mime_type}")
        check("o***@example.com" in body.text and "oncall@example.com" not in body.text,
              "the runbook's email is redacted, as a call's result would be")
        try:
            await session.read_resource("runbook://rollback")
            check(False, "a read policy denies is refused")
        except MCPError as e:
            check("on-call engineers only" in str(e) and "no-rollback-runbook" in str(e),
                  f"a read policy denies is refused with the rule's reason: {e}")
        order = await session.read_resource("order://ord-1001")
        data = json.loads(order.contents[0].text)
        check(data["id"] == "ord-1001" and data["email"].startswith("a***@"),
              f"a template read calls the tool with the URI's part: {data['id']}, {data['email']}")
        try:
            await session.read_resource("nothing://here")
            check(False, "an unknown URI is an error")
        except MCPError as e:
            check("no resource 'nothing://here'" in str(e), f"an unknown URI is an error: {e}")


async def content_group():
    async with open_session() as session:
        r = await session.call_tool("assets_pixel", {})
        image = [c for c in r.content if c.type == "image"]
        check(image and image[0].mime_type == "image/png" and base64.b64decode(image[0].data)[:4] == b"\x89PNG",
              f"an image/png reply is image content{OVER}")
        r = await session.call_tool("assets_chime", {})
        audio = [c for c in r.content if c.type == "audio"]
        check(audio and audio[0].mime_type == "audio/wav" and base64.b64decode(audio[0].data)[:4] == b"RIFF",
              "an audio/wav reply is audio content")
        r = await session.call_tool("runbooks_embed", {})
        embedded = [c for c in r.content if c.type == "resource"]
        check(embedded and embedded[0].resource.uri == "runbook://deploy"
              and embedded[0].resource.text.startswith("# Deploy"), "response.resource embeds the reply")
        check(r.content[0].type == "text" and r.content[0].text.startswith("# Deploy"),
              "a text/* reply is sent as its text, not as JSON")
        r = await session.call_tool("orders_table", {"from": "2025-08-01", "to": "2025-08-31"})
        table = text_of(r)
        check(table.startswith("id|date|region|customer|email|card|amount_cents\nord-1001|"),
              f"response.text renders the result for the model: {table[:80]!r}")
        rows = r.structured_content["orders"]
        check(len(rows) == len(table.strip().splitlines()) - 1, "one line per order, and the JSON stays structured")
        check("@example.com" in table and "a***@example.com" in table and "ana.silva" not in table,
              "the rendering sees the masked result")


async def prompts_group():
    changed = asyncio.Event()

    async def on_message(message):
        if isinstance(message, types.PromptListChangedNotification):
            changed.set()

    async with open_session(message_handler=on_message) as session:
        prompts = {p.name: p for p in (await session.list_prompts()).prompts}
        check({"orders_export-masked", "flags_set-staging", "orders_explain", "runbooks_follow"} <= set(prompts),
              f"prompts/list has the seed's and the fixture's prompts{OVER}: {sorted(prompts)}")
        seed = prompts["orders_export-masked"]
        check(seed.title == "Export orders with emails masked" and [a.name for a in seed.arguments] == ["from", "to"],
              "a prompt lists its title and arguments")
        got = await session.get_prompt("orders_export-masked", {"from": "2025-08-01", "to": "2025-08-31"})
        check("from 2025-08-01 to 2025-08-31 with the\norders_export tool" in got.messages[0].content.text
              or "from 2025-08-01 to 2025-08-31" in got.messages[0].content.text,
              f"prompts/get renders the arguments: {got.messages[0].content.text[:80]!r}")
        try:
            await session.get_prompt("orders_export-masked", {"from": "2025-08-01"})
            check(False, "a missing required argument is an error")
        except MCPError as e:
            check("needs argument(s) to" in str(e), f"a missing required argument is an error: {e}")

        got = await session.get_prompt("orders.explain", {"id": "ord-1002"})
        embedded = got.messages[1].content
        check(embedded.type == "resource" and json.loads(embedded.resource.text)["email"].startswith("b***@"),
              "a prompt embeds a resource, read under policy and redacted (the dotted id works too)")
        got = await session.get_prompt("runbooks_follow", {"name": "deploy"})
        kinds = [m.content.type for m in got.messages]
        check(kinds == ["resource", "image", "text"], f"a prompt embeds an image: {kinds}")
        try:
            await session.get_prompt("runbooks_follow", {"name": "rollback"})
            check(False, "a prompt cannot embed what policy denies")
        except MCPError as e:
            check("on-call engineers only" in str(e), f"a prompt cannot embed what policy denies: {e}")

        ref = types.PromptReference(type="ref/prompt", name="flags_set-staging")
        c = await session.complete(ref, {"name": "flag", "value": "ch"})
        check(c.completion.values == ["checkout_v2"], f"completion from a list: {c.completion.values}")
        ref = types.PromptReference(type="ref/prompt", name="orders_explain")
        c = await session.complete(ref, {"name": "id", "value": "ord-101"})
        check(c.completion.values and all(v.startswith("ord-101") for v in c.completion.values),
              f"completion from a tool lookup (orders.export): {c.completion.values}")
        tref = types.ResourceTemplateReference(type="ref/resource", uri="runbook://{name}")
        c = await session.complete(tref, {"name": "name", "value": "r"})
        check(c.completion.values == ["rollback"], f"completion of a template's part from its enum: {c.completion.values}")

        if transport() == "stdio":
            config = pathlib.Path(os.environ["MCPD_CONFIG"])
            (config / "prompts.d" / "new.yaml").write_text(
                "name: standup\ndescription: Standup notes.\nmessages:\n  - text: Write my standup notes.\n")
            await asyncio.wait_for(changed.wait(), timeout=20)
            names = {p.name for p in (await session.list_prompts()).prompts}
            check("standup" in names, "a new prompt file is announced (prompts/list_changed) and listed")


GROUPS = {
    "logging": logging_group,
    "progress": progress_group,
    "confirm": confirm_group,
    "resources": resources_group,
    "content": content_group,
    "prompts": prompts_group,
}

if __name__ == "__main__":
    group = sys.argv[1]
    sys.exit(main(f"features {group}", ("DEMO_API_URL",), GROUPS[group]))
