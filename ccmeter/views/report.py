"""``ccmeter report`` at run time: what calls cost, grouped by project, session, model or time.

Reads :mod:`ccmeter.reports` and hands the rows to :mod:`ccmeter.render`. No Typer here: the
options are declared in :mod:`ccmeter.commands.report`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ccmeter import config
from ccmeter.statusline import _local
from ccmeter.views.common import (
    check_format,
    check_source,
    echo,
    fold_journals,
    iso,
    load_catalog,
    nothing_yet,
    open_db,
    table_rows,
    time_range,
    timezone_name,
)

_DIM_HEADERS = {"project": "Project", "session": "Session", "model": "Model",
                "provider": "Provider", "hour": "Hour", "day": "Day", "week": "Week of",
                "month": "Month"}


def report_columns(dims: Sequence[str], fmt: str, rows: Sequence[Mapping[str, Any]],
                   *, period: bool = False) -> list[Any]:
    """The columns of a report in ``fmt``: tables merge cache writes and drop empty extras."""
    from ccmeter.render import Column

    columns = [Column("period", "Period")] if period else []
    # what the rows are grouped by is never shortened (six rows of "claude-opus-4…" say
    # nothing); counts are hidden first when a terminal is narrow
    columns += [Column(d, _DIM_HEADERS[d], whole=True) for d in dims]
    if "session" in dims:
        if "project" not in dims:
            columns.append(Column("project", "Project"))
            if fmt != "table":  # null project: none, or several (how many here)
                columns.append(Column("projects", "Projects", "int"))
        columns.append(Column("first_call", "Started", "datetime"))
        if fmt != "table":
            columns.append(Column("last_call", "Last call", "datetime"))
    columns.append(Column("calls", "Calls", "int"))
    columns.append(Column("input_tokens", "Input", "int"))
    if fmt == "table":
        columns.append(Column("cache_write_tokens", "Cache write", "int"))
    else:
        columns += [Column("cache_write_5m_tokens", "Cache write 5m", "int"),
                    Column("cache_write_1h_tokens", "Cache write 1h", "int")]
    columns += [Column("cache_read_tokens", "Cache read", "int"),
                Column("output_tokens", "Output", "int"),
                Column("cost", "Cost", "usd")]
    if fmt != "table" or any(r.get("unpriced_calls") for r in rows):
        columns.append(Column("unpriced_calls", "Unpriced", "int"))
    columns.append(Column("cache_savings", "Cache saved", "usd"))
    if fmt != "table":
        columns += [Column("source", "Source"), Column("transcript_calls", "Imported", "int")]
    elif any(r.get("transcript_calls") for r in rows):
        columns.append(Column("source", "Source"))
    if fmt == "table" and any(d in ("hour", "day", "week", "month") for d in dims):
        columns.append(Column("bar", "", "spark"))
    return columns


IMPORTED_NOTE = ("from Claude Code's transcripts (`ccmeter import`): estimates, output "
                 "tokens are often undercounted there")


def imported_caption(totals: Mapping[str, Any]) -> dict[str, str]:
    """The table caption's line saying figures include imported estimates (when they do)."""
    from ccmeter.render import plural

    count = totals.get("transcript_calls") or 0
    if not count:
        return {}
    return {"imported": f"{count} of {plural(totals['calls'], 'call')} {IMPORTED_NOTE}"}


def _report_meta(rep: Any, now: float, assumption: Any = None) -> dict[str, Any]:
    flt = rep.filters
    meta = {
        "group_by": list(rep.dimensions),
        "since": iso(flt.since),
        "until": iso(flt.until),
        "project": flt.project,
        "model": flt.model,
        "source": flt.source,
        "timezone": timezone_name(),
        "catalog_version": rep.catalog_version,
        "generated_at": iso(now),
    }
    if assumption is not None and assumption.active:
        meta["what_if"] = assumption.as_meta()
    return meta


def _caption(rep: Any, now: float, assumption: Any = None) -> dict[str, Any]:
    from ccmeter.render import plural

    flt = rep.filters
    since = _local(flt.since) if flt.since is not None else "first call"
    caption: dict[str, Any] = {"period": f"{since} → {_local(flt.until)} ({timezone_name()})"}
    if rep.totals.get("unpriced_calls"):
        unpriced = plural(rep.totals["unpriced_calls"], "call")
        caption["unpriced"] = f"{unpriced} of models without a price (see `ccmeter prices`)"
    if assumption is not None and assumption.active:
        caption["what if"] = (f"{assumption.describe()}: the same tokens priced again at "
                              f"catalog {rep.catalog_version} rates; stored costs unchanged")
    caption["cache saved"] = f"vs. plain input at catalog {rep.catalog_version} rates"
    caption.update(imported_caption(rep.totals))
    if flt.source != "all":
        caption["source"] = {"wire": "only calls metered on the wire (--source wire)",
                             "transcript": "only calls imported from transcripts and never "
                                           "seen on the wire (--source transcript)"}[flt.source]
    return caption


def _title(title: str, assumption: Any) -> str:
    return f"{title}, {assumption.describe()}" if assumption.active else title


def run(by: list[str] | None, since: str | None, until: str | None, project: str | None,
        model: str | None, fmt: str, source: str = "all", as_model: str | None = None,
        cache_ttl: str | None = None) -> None:
    """The report for these options, written to stdout."""
    from ccmeter import render, reports
    from ccmeter.whatif import check_assumption

    fmt = check_format(fmt)
    source = check_source(source)
    now = time.time()
    cfg = config.load_config()
    catalog = load_catalog(cfg)
    try:
        assumption = check_assumption(catalog, as_model, cache_ttl)
    except ValueError as exc:
        raise config.CCMeterError(str(exc)) from None
    db = open_db()
    fold_journals(db, catalog)
    try:
        if not by and since is None and until is None:
            _default_report(db, catalog, fmt, now, project, model, source, assumption)
            return
        dims = by or ["project"]
        start, end = time_range(since, until, now)
        filters = reports.Filters(since=start, until=end, project=project, model=model,
                                  source=source)
        try:
            rep = reports.build_report(db, dims, filters, catalog, assumption=assumption)
        except ValueError as exc:
            raise config.CCMeterError(str(exc)) from None
        empty = fmt == "table" and not rep.totals["calls"] and nothing_yet(db)
    finally:
        db.conn.close()
    title = _title("Spend by " + " and ".join(rep.dimensions), assumption)
    if empty:
        return
    if fmt == "table" and not rep.totals["calls"]:
        only = "".join(f" of {name} {value}" for name, value in
                       (("project", project), ("model", model)) if value)
        echo(f"No calls{only} in this period: {_caption(rep, now)['period']}.\n"
                   "A wider --since may find some.")
    elif fmt == "table":
        render.emit(table_rows(rep.rows), report_columns(rep.dimensions, fmt, rep.rows),
                    fmt, title=title, totals=rep.totals, meta=_caption(rep, now, assumption))
    else:
        render.emit(rep.rows, report_columns(rep.dimensions, fmt, rep.rows), fmt, title=title,
                    totals=rep.totals, meta=_report_meta(rep, now, assumption))


def _default_report(db: Any, catalog: Any, fmt: str, now: float, project: str | None,
                    model: str | None, source: str, assumption: Any) -> None:
    from ccmeter import periods, render, reports

    views = []
    for period, since in (("today", periods.local_midnight(now)),
                          ("this week", periods.week_start(now))):
        filters = reports.Filters(since=since, project=project, model=model, source=source)
        views.append((period, reports.build_report(db, ["project"], filters, catalog,
                                                   assumption=assumption)))
    if fmt == "table":
        if not views[1][1].totals["calls"] and nothing_yet(db):
            return
        for index, (period, rep) in enumerate(views):
            if index:
                sys.stdout.write("\n")
            if not rep.totals["calls"]:
                only = "".join(f" of {name} {value}" for name, value in
                               (("project", project), ("model", model)) if value)
                echo(f"{period.capitalize()}: no calls{only} yet.")
                continue
            render.emit(table_rows(rep.rows), report_columns(rep.dimensions, fmt, rep.rows),
                        fmt, title=_title(f"{period.capitalize()} by project", assumption),
                        totals=rep.totals, meta=_caption(rep, now, assumption))
        return
    rows = [{"period": period, **row} for period, rep in views for row in rep.rows]
    week = views[1][1]
    meta = _report_meta(week, now, assumption)
    meta["periods"] = {period: {"since": iso(rep.filters.since),
                                "totals": render.machine_row(
                                    rep.totals, report_columns(["project"], "json", []))}
                       for period, rep in views}
    render.emit(rows, report_columns(["project"], fmt, rows, period=True), fmt,
                title=_title("Today and this week by project", assumption), totals=week.totals,
                meta=meta)
