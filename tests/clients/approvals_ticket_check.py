"""A ticket a human gives when asked in-band is checked by elevation.ticket_check, as
`mcpd elevate`'s are, for the call's environment: one the ticket system has not approved
(CHG-1300) or approved for another environment (INC-77, staging) is a denial naming why,
with nothing sent; an approved one (CHG-1234) grants the prod write.

Environment: MCPD_BIN and MCPD_CONFIG (stdio); DEMO_API_URL. The config's
elevation.ticket_check must be the demo API's ticket system.
"""
import sys

from approvals import Human, prod_writes
from checks import check, main, text_of
from session import open_session

PROD_50 = {"env": "prod", "name": "checkout_v2", "percent": 50}


async def with_elicitation():
    human = Human()
    async with open_session(elicitation_callback=human) as session:
        before = len(prod_writes())
        for ticket, why in [
            ("CHG-1300", "ticket 'CHG-1300' is not approved: $.status is \"pending\", not \"approved\""),
            ("INC-77", "ticket 'INC-77' is for environment 'staging', not 'prod'"),
        ]:
            human.answers.append({"ticket": ticket})
            result = await session.call_tool("flag_set", PROD_50)
            check(result.is_error and why in text_of(result), f"an elicited {ticket} is refused: {text_of(result)!r}")
            check(len(prod_writes()) == before, f"after {ticket} nothing was sent")
        human.answers.append({"ticket": "CHG-1234"})
        result = await session.call_tool("flag_set", PROD_50)
        check(not result.is_error, f"an elicited CHG-1234 grants the write: {text_of(result)[:160]!r}")
        check(len(prod_writes()) == before + 1, "exactly one prod write was sent")


if __name__ == "__main__":
    sys.exit(main("approvals with ticket_check", ("DEMO_API_URL",), with_elicitation))
