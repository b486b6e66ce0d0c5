"""``ccmeter plan``: a subscription's 5-hour and 7-day windows, and who used them.

The command declares the options and help; the work is :func:`ccmeter.views.plan.run`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ccmeter.commands.common import FormatOption


def register(app: typer.Typer) -> None:
    app.command()(plan)


def plan(
    by: Annotated[str, typer.Option(
        "--by", "-b", help="Share each window by session (the default) or project; or show "
        "each window's utilization hour by hour (hour).")] = "session",
    fmt: FormatOption = "table",
) -> None:
    """Pro/Max plan windows (5 hours, 7 days): used %, reset, rate, when it runs out, and each
    session's share.

    From the plan-usage headers of the subscription answers ccmeter metered (API-key calls
    have none). A session's share is the rise in utilization its calls' answers reported.

    Examples:
      ccmeter plan
      ccmeter plan --by project
      ccmeter plan --by hour
      ccmeter plan --format json
    """
    from ccmeter.views.plan import run

    run(by, fmt)
