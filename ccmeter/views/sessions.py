"""``ccmeter sessions`` at run time: recent sessions, most recently active first.

Reads :mod:`ccmeter.sessions` and hands the rows to :mod:`ccmeter.render`. No Typer here: the
options are declared in :mod:`ccmeter.commands.sessions`.
"""

from __future__ import annotations

import time
from typing import Any

from ccmeter.statusline import _local
from ccmeter.views.common import (
    check_format,
    check_source,
    echo,
    iso,
    nothing_yet,
    open_db,
    parse_time,
    table_rows,
)


def run(since: str | None, until: str | None, project: str | None, model: str | None,
        limit: int, fmt: str, source: str = "all") -> None:
    """The session list for these options, written to stdout."""
    from ccmeter import render, reports
    from ccmeter.sessions import list_sessions

    fmt = check_format(fmt)
    source = check_source(source)
    now = time.time()
    filters = reports.Filters(since=parse_time(since, now=now),
                              until=parse_time(until, end=True, now=now),
                              project=project, model=model, source=source)
    db = open_db()
    try:
        found = list_sessions(db, filters, limit)
        if not found and fmt == "table" and nothing_yet(db):
            return
    finally:
        db.conn.close()
    if not found and fmt == "table":
        when = f" since {_local(filters.since)}" if filters.since is not None else ""
        echo(f"No sessions{when}; a wider --since may find some (e.g. --since 30d).")
        return
    columns = [
        render.Column("session", "Session"),
        render.Column("started", "Started", "datetime"),
        render.Column("last_call", "Last call", "datetime"),
        render.Column("project", "Project"),
        render.Column("projects", "Projects", "int"),  # null project: none, or several
        render.Column("models", "Models"),
        render.Column("calls", "Calls", "int"),
        render.Column("subagent_calls", "Subagent", "int"),
        render.Column("cost", "Cost", "usd"),
        render.Column("unpriced_calls", "Unpriced", "int"),
        render.Column("source", "Source"),
        render.Column("transcript_calls", "Imported", "int"),
    ]
    rows = [s.as_row() for s in found]
    if fmt == "table":
        if not any(r["unpriced_calls"] for r in rows):
            columns = [c for c in columns if c.key != "unpriced_calls"]
        columns = [c for c in columns if c.key != "transcript_calls"]
        if not any(r["transcript_calls"] for r in rows):
            columns = [c for c in columns if c.key != "source"]
        # on a narrow terminal the times stay and the models go first (`session ID` has them)
        columns = [render.Column("session", "Session", whole=True),
                   render.Column("started", "Started", "datetime", keep=True),
                   render.Column("last_clock", "Last call", keep=True),
                   *(c.replace(drop=1) if c.key == "models" else
                     c.replace(drop=2) if c.key == "subagent_calls" else c
                     for c in columns[3:] if c.key != "projects")]
        rows = [{**row, "last_clock": _last_clock(row["started"], row["last_call"])}
                for row in table_rows(rows)]
        caption = {"since": _local(filters.since), "hint": "details: ccmeter session <id>"}
        imported = sum(r["transcript_calls"] for r in rows)
        if imported:
            from ccmeter.views.report import IMPORTED_NOTE

            caption["imported"] = f"{render.plural(imported, 'call')} {IMPORTED_NOTE}"
        render.emit(rows, columns, fmt, title=f"Sessions ({len(rows)} shown)", meta=caption)
    else:
        meta = {"since": iso(filters.since), "until": iso(filters.until), "project": project,
                "model": model, "source": source, "limit": limit, "generated_at": iso(now)}
        render.emit(rows, columns, fmt, title="Sessions", meta=meta)


def _last_clock(started: Any, last: Any) -> str:
    """A session's last call as ``HH:MM`` on the day it started, else date and time."""
    from ccmeter.render import to_datetime

    first, end = to_datetime(started), to_datetime(last)
    if end is None:
        return ""
    if first is not None and first.date() == end.date():
        return end.strftime("%H:%M")
    return end.strftime("%Y-%m-%d %H:%M")
