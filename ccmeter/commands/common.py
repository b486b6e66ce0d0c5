"""What the commands that read spend share: their options, the database, the catalog, times.

``report``, ``sessions``, ``session``, ``watch``, ``prices`` and ``share`` take the same
``--format``, ``--since``, ``--until``, ``--project`` and ``--model`` options and open the
database the same way; this module declares each option once. The run-time helpers live in
:mod:`ccmeter.views.common` (no Typer there, so the fast path can use them) and are
re-exported here.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ccmeter.views.common import (  # noqa: F401  (re-exported)
    NO_CALLS_YET,
    check_format,
    check_source,
    fold_journals,
    iso,
    load_catalog,
    nothing_yet,
    open_db,
    parse_time,
    table_rows,
    time_range,
    timezone_name,
)

FormatOption = Annotated[
    str,
    typer.Option("--format", "-f", help="Output format: table (for people), json or csv "
                 "(for machines: money as exact dollars and integer picodollars, times in "
                 "ISO 8601 with the UTC offset)."),
]
SinceOption = Annotated[
    str | None,
    typer.Option("--since", "-s", help="Only calls from this time on: a date (2026-11-01, "
                 "local midnight), a month (2026-11), a date and time, a time back from now "
                 "(30m, 12h, 7d, 2w, 3mo, 1y: m is minutes, mo months), or "
                 "today / yesterday / week / month."),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", "-u", help="Only calls before this time (same forms as --since; "
                 "a bare date includes that whole day)."),
]
ProjectOption = Annotated[
    str | None, typer.Option("--project", "-p", help="Only this project (exact name).")
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Only models whose id contains this text, e.g. opus "
                 "or claude-sonnet-5."),
]
SourceOption = Annotated[
    str,
    typer.Option("--source", help="Which calls: wire (metered by ccmeter), transcript "
                 "(imported from Claude Code's transcripts by `ccmeter import`, and never seen "
                 "on the wire) or all (both; a call seen both ways counts once, from the wire)."),
]
