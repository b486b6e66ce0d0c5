"""``ccmeter waste``: what cache busts and writes never read cost, by cause, project,
session or day, or one session turn by turn.

The command declares the options and help; the work is :func:`ccmeter.views.waste.run`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ccmeter.commands.common import FormatOption, ProjectOption, SinceOption, UntilOption


def register(app: typer.Typer) -> None:
    app.command()(waste)


def waste(
    since: SinceOption = None,
    until: UntilOption = None,
    project: ProjectOption = None,
    session: Annotated[str | None, typer.Option(
        "--session", help="One session, turn by turn: its id, or enough of its start to be "
        "unique (as `ccmeter sessions` shows it).")] = None,
    by: Annotated[str | None, typer.Option(
        "--by", "-b", help="Group by cause (the default), project, session or day.")] = None,
    fmt: FormatOption = "table",
) -> None:
    """Money lost to the prompt cache: every re-write (a bust) and every write never read.

    A re-write is priced at what reading those tokens would have saved, a write never read at
    what sending them as plain input would have saved; causes are tools, system, message,
    model, ttl (idle too long), unknown and never_read. Waste is part of the metered spend
    (`ccmeter report --source wire`), never added to it. Without --since or --session: the
    last 7 days.

    Examples:
      ccmeter waste --since 7d
      ccmeter waste --by project --since 30d
      ccmeter waste --session 3f2a
      ccmeter waste --by day --format csv > waste.csv
    """
    from ccmeter.views.waste import run

    run(by, since, until, project, session, fmt)
