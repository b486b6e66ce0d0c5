"""What the commands that read spend share at run time: the database, the catalog, times.

No Typer and no rich here (see :mod:`ccmeter.views`); the options themselves are declared
once in :mod:`ccmeter.commands.common`. Heavy imports happen inside the functions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ccmeter import config


def echo(text: str) -> None:
    """One line to stdout, flushed (as ``typer.echo`` writes it)."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def check_format(fmt: str, extra: Sequence[str] = ()) -> str:
    """``--format``: table, json, csv, and the ``extra`` formats of one command (html)."""
    from ccmeter.render import FORMATS

    fmt = fmt.strip().lower()
    known = (*FORMATS, *extra)
    if fmt not in known:
        raise config.CCMeterError(f"unknown --format {fmt!r}; use one of {', '.join(known)}")
    return fmt


def check_source(source: str) -> str:
    """``--source``: all, wire or transcript (``reports.SOURCES``)."""
    from ccmeter.reports import SOURCES

    value = source.strip().lower()
    if value not in SOURCES:
        raise config.CCMeterError(f"unknown --source {source!r}; use one of "
                                  f"{', '.join(SOURCES)}")
    return value


def parse_time(value: str | None, *, end: bool = False, now: float | None = None) -> float | None:
    from ccmeter import periods

    return None if value is None else periods.parse_when(value, now=now, end=end)


def time_range(since: str | None, until: str | None,
               now: float) -> tuple[float | None, float | None]:
    """``--since`` / ``--until`` as Unix seconds; a range with nothing in it is a user error."""
    start, end = parse_time(since, now=now), parse_time(until, end=True, now=now)
    if start is not None and end is not None and start >= end:
        raise config.CCMeterError(f"--since {since} is not before --until {until}: nothing "
                                  "can fall between them; swap them or widen the range")
    return start, end


NO_CALLS_YET = ("No calls recorded yet. Run Claude Code through ccmeter: "
                "ccmeter run -- claude")


def nothing_yet(db: Any) -> bool:
    """True, having said what to do next, when nothing was ever recorded: an empty
    database gets a next step, not a table of zeros."""
    from ccmeter.sessions import has_calls

    if has_calls(db):
        return False
    echo(NO_CALLS_YET)
    return True


def open_db() -> Any:
    from ccmeter import store

    paths = config.paths()
    try:
        return store.connect_migrated(paths.db_file)
    except Exception as exc:
        raise config.CCMeterError(f"cannot open {paths.db_file}: {exc}") from exc


def fold_journals(db: Any, catalog: Any) -> None:
    """Calls of a proxy killed mid-call wait in its journal for the next proxy start; a
    report folds them in first, so that it never leaves out a billed call."""
    where = config.paths().journal_dir
    try:
        if not any(name.endswith(".jsonl") for name in os.listdir(where)):
            return  # nothing to fold (the usual case): no need to import the journal code
    except OSError:
        return  # no journal folder yet: fold_dead would find nothing either
    from ccmeter.journal import fold_dead

    fold_dead(where, db, catalog)


def load_catalog(cfg: Mapping[str, Any]) -> Any:
    from ccmeter import reports

    try:
        return reports.current_catalog(cfg)
    except ValueError as exc:
        raise config.CCMeterError(f"[prices] in {config.paths().config_file}: {exc}") from None


def iso(ts: float | None) -> str | None:
    from ccmeter.render import iso_datetime

    return iso_datetime(ts) if ts is not None else None


def timezone_name() -> str:
    from datetime import datetime

    return datetime.now().astimezone().tzname() or "local"


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as a table shows them: short session ids, ``(no project)`` for a missing name,
    ``(several)`` for a row whose calls came from more than one project."""
    from ccmeter.reports import SEVERAL_PROJECTS, missing_label
    from ccmeter.sessions import short_id

    shown = []
    for row in rows:
        copy = dict(row)
        if copy.get("project") is None and (copy.get("projects") or 0) > 1:
            copy["project"] = SEVERAL_PROJECTS
        for key in ("project", "model"):
            if key in copy and copy[key] is None:
                copy[key] = missing_label(key)
        if "session" in copy:
            copy["session"] = (short_id(copy["session"]) if copy["session"]
                               else missing_label("session"))
        shown.append(copy)
    return shown
