"""``ccmeter report``: what calls cost, grouped by project, session, model or time.

The command declares the options and help; the work is :func:`ccmeter.views.report.run`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ccmeter.commands.common import (
    ModelOption,
    ProjectOption,
    SinceOption,
    SourceOption,
    UntilOption,
)


def register(app: typer.Typer) -> None:
    app.command()(report)


def report(
    by: Annotated[
        list[str] | None,
        typer.Option("--by", "-b", help="Group by project, session, model, provider, hour, "
                     "day, week or month; give it twice for two levels (--by model --by day)."),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    project: ProjectOption = None,
    model: ModelOption = None,
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", help="Output format: table (for people), json or csv "
                     "(for machines: money as exact dollars and integer picodollars, times in "
                     "ISO 8601 with the UTC offset), or html (one self-contained page with "
                     "charts, to share: > spend.html)."),
    ] = "table",
    source: SourceOption = "all",
    as_model: Annotated[
        str | None,
        typer.Option("--as-model", help="What if: price the same calls (the same tokens) as "
                     "this model, e.g. claude-sonnet-4-5; its long-context, fast and US-geo "
                     "rules apply as to a real call. Stored costs do not change."),
    ] = None,
    cache_ttl: Annotated[
        str | None,
        typer.Option("--cache-ttl", help="What if: price every cache write as a 5m "
                     "(5-minute) or 1h (1-hour) write. Combines with --as-model."),
    ] = None,
    vs_plan: Annotated[
        str | None,
        typer.Option("--vs-plan", help="Compare the period's list-price equivalent with a "
                     "subscription plan's fee over the same period (prorated by month), e.g. "
                     "max-5x; the fee is what you set in config.toml "
                     '([prices.plans."max-5x"] monthly_usd = "...").'),
    ] = None,
) -> None:
    """What Claude calls cost, grouped, with tokens, cache savings and totals.

    Without --by or --since: today and this week, by project. Hours, days, weeks and
    months are local time (weeks start on Monday).

    Examples:
      ccmeter report
      ccmeter report --by project --since 30d
      ccmeter report --by session --project api-server
      ccmeter report --by model --by day --since 2w --format csv > spend.csv
      ccmeter report --by month --source transcript
      ccmeter report --since 30d --as-model claude-sonnet-4-5
      ccmeter report --since 30d --cache-ttl 5m
      ccmeter report --since 30d --vs-plan max-5x
      ccmeter report --since 30d --format html > spend.html
    """
    from ccmeter.views.report import run

    run(by, since, until, project, model, fmt, source, as_model, cache_ttl, vs_plan)
