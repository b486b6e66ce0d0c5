"""``ccmeter report``, ``sessions``, ``session``, ``watch`` and ``statusline``: reading spend.

Each command resolves paths and options, calls :mod:`ccmeter.reports` and hands the rows to
:mod:`ccmeter.render`. Heavy imports happen inside the commands, so ``ccmeter statusline``
(run by Claude Code after every turn) starts quickly.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Annotated, Any

import typer

from ccmeter import config
from ccmeter.statusline import _ago, _caps, _local, plan_line, statusline_text  # noqa: F401

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


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(sessions)
    app.command()(session)
    app.command()(watch)
    app.command()(statusline)


# --- shared --------------------------------------------------------------------------------


def _check_format(fmt: str) -> str:
    from ccmeter.render import FORMATS

    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise config.CCMeterError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def _when(value: str | None, *, end: bool = False, now: float | None = None) -> float | None:
    from ccmeter import periods

    return None if value is None else periods.parse_when(value, now=now, end=end)


def _range(since: str | None, until: str | None, now: float) -> tuple[float | None, float | None]:
    """``--since`` / ``--until`` as Unix seconds; a range with nothing in it is a user error."""
    start, end = _when(since, now=now), _when(until, end=True, now=now)
    if start is not None and end is not None and start >= end:
        raise config.CCMeterError(f"--since {since} is not before --until {until}: nothing "
                                  "can fall between them; swap them or widen the range")
    return start, end


NO_CALLS_YET = ("No calls recorded yet. Run Claude Code through ccmeter: "
                "ccmeter run -- claude")


def _nothing_yet(db: Any) -> bool:
    """True, having said what to do next, when nothing was ever recorded: an empty
    database gets a next step, not a table of zeros."""
    from ccmeter.sessions import has_calls

    if has_calls(db):
        return False
    typer.echo(NO_CALLS_YET)
    return True


def _open_db() -> Any:
    from ccmeter import store

    paths = config.paths()
    try:
        return store.connect(paths.db_file)
    except Exception as exc:
        raise config.CCMeterError(f"cannot open {paths.db_file}: {exc}") from exc


def _fold_journals(db: Any, catalog: Any) -> None:
    """Calls of a proxy killed mid-call wait in its journal for the next proxy start; a
    report folds them in first, so that it never leaves out a billed call."""
    from ccmeter.journal import fold_dead, journal_dir

    fold_dead(journal_dir(config.paths()), db, catalog)


def _catalog(cfg: Mapping[str, Any]) -> Any:
    from ccmeter import reports

    try:
        return reports.current_catalog(cfg)
    except ValueError as exc:
        raise config.CCMeterError(f"[prices] in {config.paths().config_file}: {exc}") from None


def _iso(ts: float | None) -> str | None:
    from ccmeter.render import iso_datetime

    return iso_datetime(ts) if ts is not None else None


def _timezone_name() -> str:
    from datetime import datetime

    return datetime.now().astimezone().tzname() or "local"


# --- report --------------------------------------------------------------------------------

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
    if fmt == "table" and any(d in ("hour", "day", "week", "month") for d in dims):
        columns.append(Column("bar", "", "spark"))
    return columns


def _table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as a table shows them: short session ids, ``(no project)`` for a missing name."""
    from ccmeter.reports import missing_label
    from ccmeter.sessions import short_id

    shown = []
    for row in rows:
        copy = dict(row)
        for key in ("project", "model"):
            if key in copy and copy[key] is None:
                copy[key] = missing_label(key)
        if "session" in copy:
            copy["session"] = (short_id(copy["session"]) if copy["session"]
                               else missing_label("session"))
        shown.append(copy)
    return shown


def _report_meta(rep: Any, now: float) -> dict[str, Any]:
    flt = rep.filters
    return {
        "group_by": list(rep.dimensions),
        "since": _iso(flt.since),
        "until": _iso(flt.until),
        "project": flt.project,
        "model": flt.model,
        "timezone": _timezone_name(),
        "catalog_version": rep.catalog_version,
        "generated_at": _iso(now),
    }


def _caption(rep: Any, now: float) -> dict[str, Any]:
    flt = rep.filters
    since = _local(flt.since) if flt.since is not None else "first call"
    caption: dict[str, Any] = {"period": f"{since} → {_local(flt.until)} ({_timezone_name()})"}
    if rep.totals.get("unpriced_calls"):
        caption["unpriced"] = (f"{rep.totals['unpriced_calls']:,} calls of models without a "
                               "price (see `ccmeter prices`)")
    caption["cache saved"] = f"vs. plain input at catalog {rep.catalog_version} rates"
    return caption


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
    fmt: FormatOption = "table",
) -> None:
    """What Claude calls cost, grouped, with tokens, cache savings and totals.

    Without --by or --since: today and this week, by project. Hours, days, weeks and
    months are local time (weeks start on Monday).

    Examples:
      ccmeter report
      ccmeter report --by project --since 30d
      ccmeter report --by session --project api-server
      ccmeter report --by model --by day --since 2w --format csv > spend.csv
    """
    from ccmeter import render, reports

    fmt = _check_format(fmt)
    now = time.time()
    cfg = config.load_config()
    catalog = _catalog(cfg)
    db = _open_db()
    _fold_journals(db, catalog)
    try:
        if not by and since is None and until is None:
            _default_report(db, catalog, fmt, now, project, model)
            return
        dims = by or ["project"]
        start, end = _range(since, until, now)
        filters = reports.Filters(since=start, until=end, project=project, model=model)
        try:
            rep = reports.build_report(db, dims, filters, catalog)
        except ValueError as exc:
            raise config.CCMeterError(str(exc)) from None
        empty = fmt == "table" and not rep.totals["calls"] and _nothing_yet(db)
    finally:
        db.conn.close()
    title = "Spend by " + " and ".join(rep.dimensions)
    if empty:
        return
    if fmt == "table" and not rep.totals["calls"]:
        only = "".join(f" of {name} {value}" for name, value in
                       (("project", project), ("model", model)) if value)
        typer.echo(f"No calls{only} in this period: {_caption(rep, now)['period']}.\n"
                   "A wider --since may find some.")
    elif fmt == "table":
        render.emit(_table_rows(rep.rows), report_columns(rep.dimensions, fmt, rep.rows),
                    fmt, title=title, totals=rep.totals, meta=_caption(rep, now))
    else:
        render.emit(rep.rows, report_columns(rep.dimensions, fmt, rep.rows), fmt, title=title,
                    totals=rep.totals, meta=_report_meta(rep, now))


def _default_report(db: Any, catalog: Any, fmt: str, now: float, project: str | None,
                    model: str | None) -> None:
    from ccmeter import periods, render, reports

    views = []
    for period, since in (("today", periods.local_midnight(now)),
                          ("this week", periods.week_start(now))):
        filters = reports.Filters(since=since, project=project, model=model)
        views.append((period, reports.build_report(db, ["project"], filters, catalog)))
    if fmt == "table":
        if not views[1][1].totals["calls"] and _nothing_yet(db):
            return
        for index, (period, rep) in enumerate(views):
            if index:
                sys.stdout.write("\n")
            if not rep.totals["calls"]:
                only = "".join(f" of {name} {value}" for name, value in
                               (("project", project), ("model", model)) if value)
                typer.echo(f"{period.capitalize()}: no calls{only} yet.")
                continue
            render.emit(_table_rows(rep.rows), report_columns(rep.dimensions, fmt, rep.rows),
                        fmt, title=f"{period.capitalize()} by project", totals=rep.totals,
                        meta=_caption(rep, now))
        return
    rows = [{"period": period, **row} for period, rep in views for row in rep.rows]
    week = views[1][1]
    meta = _report_meta(week, now)
    meta["periods"] = {period: {"since": _iso(rep.filters.since),
                                "totals": render.machine_row(
                                    rep.totals, report_columns(["project"], "json", []))}
                       for period, rep in views}
    render.emit(rows, report_columns(["project"], fmt, rows, period=True), fmt,
                title="Today and this week by project", totals=week.totals, meta=meta)


# --- sessions ------------------------------------------------------------------------------


def sessions(
    since: SinceOption = "7d",
    until: UntilOption = None,
    project: ProjectOption = None,
    model: ModelOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0,
                     help="Show at most this many sessions (0 = all).")] = 20,
    fmt: FormatOption = "table",
) -> None:
    """Recent Claude Code sessions, most recently active first: models, calls, cost.

    Examples:
      ccmeter sessions
      ccmeter sessions --since 30d --project api-server --limit 50
    """
    from ccmeter import render, reports
    from ccmeter.sessions import list_sessions

    fmt = _check_format(fmt)
    now = time.time()
    filters = reports.Filters(since=_when(since, now=now), until=_when(until, end=True, now=now),
                              project=project, model=model)
    db = _open_db()
    try:
        found = list_sessions(db, filters, limit)
        if not found and fmt == "table" and _nothing_yet(db):
            return
    finally:
        db.conn.close()
    if not found and fmt == "table":
        when = f" since {_local(filters.since)}" if filters.since is not None else ""
        typer.echo(f"No sessions{when}; a wider --since may find some (e.g. --since 30d).")
        return
    columns = [
        render.Column("session", "Session"),
        render.Column("started", "Started", "datetime"),
        render.Column("last_call", "Last call", "datetime"),
        render.Column("project", "Project"),
        render.Column("models", "Models"),
        render.Column("calls", "Calls", "int"),
        render.Column("subagent_calls", "Subagent", "int"),
        render.Column("cost", "Cost", "usd"),
        render.Column("unpriced_calls", "Unpriced", "int"),
    ]
    rows = [s.as_row() for s in found]
    if fmt == "table":
        if not any(r["unpriced_calls"] for r in rows):
            columns = [c for c in columns if c.key != "unpriced_calls"]
        # on a narrow terminal the times stay and the models go first (`session ID` has them)
        columns = [render.Column("session", "Session", whole=True),
                   render.Column("started", "Started", "datetime", keep=True),
                   render.Column("last_clock", "Last call", keep=True),
                   *(replace(c, drop=1) if c.key == "models" else
                     replace(c, drop=2) if c.key == "subagent_calls" else c
                     for c in columns[3:])]
        rows = [{**row, "last_clock": _last_clock(row["started"], row["last_call"])}
                for row in _table_rows(rows)]
        caption = {"since": _local(filters.since), "hint": "details: ccmeter session <id>"}
        render.emit(rows, columns, fmt, title=f"Sessions ({len(rows)} shown)", meta=caption)
    else:
        meta = {"since": _iso(filters.since), "until": _iso(filters.until), "project": project,
                "model": model, "limit": limit, "generated_at": _iso(now)}
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


def session(
    session_id: Annotated[str, typer.Argument(help="The session id, or enough of its start "
                                              "to be unique (see `ccmeter sessions`).")],
    fmt: FormatOption = "table",
) -> None:
    """Every call of one session, in order: agent, model, tokens, cost, latency, status.

    Subagent calls are marked with their agent (└ agent id) and subtotalled per agent.

    Examples:
      ccmeter session 72292d5c
      ccmeter session 72292d5c --format json
    """
    from ccmeter import render, reports
    from ccmeter.sessions import resolve_session, session_detail, short_model

    fmt = _check_format(fmt)
    db = _open_db()
    try:
        try:
            full = resolve_session(db, session_id)
        except ValueError as exc:
            raise config.CCMeterError(str(exc)) from None
        detail = session_detail(db, full)
    finally:
        db.conn.close()
    machine = fmt != "table"
    columns = [
        render.Column("time", "Time", "datetime") if machine else render.Column("clock", "Time"),
        render.Column("agent", "Agent"),
        render.Column("model", "Model"),
        render.Column("status", "Status"),
        render.Column("input_tokens", "Input", "int"),
    ]
    if machine:
        columns[1:1] = [render.Column("call_uid", "Call")]
        columns += [render.Column("agent_id", "Agent id"),
                    render.Column("parent_agent_id", "Parent agent"),
                    render.Column("call_kind", "Kind"),
                    render.Column("cache_write_5m_tokens", "Cache write 5m", "int"),
                    render.Column("cache_write_1h_tokens", "Cache write 1h", "int")]
    else:
        columns.append(render.Column("cache_write_tokens", "Cache write", "int"))
    columns += [
        render.Column("cache_read_tokens", "Cache read", "int"),
        render.Column("output_tokens", "Output", "int"),
        render.Column("cost", "Cost", "usd"),
        render.Column("ttfb_ms", "TTFB ms", "int"),
        render.Column("duration_ms", "Duration ms", "int"),
    ]
    agent_columns = [
        render.Column("agent", "Agent"), render.Column("kind", "Kind"),
        render.Column("parent_agent_id", "Parent"), render.Column("calls", "Calls", "int"),
        render.Column("output_tokens", "Output", "int"), render.Column("cost", "Cost", "usd"),
        render.Column("unpriced_calls", "Unpriced", "int"),
    ]
    totals = detail.totals
    if machine:
        meta = {
            "session_id": detail.session_id,
            "project": totals.get("project"),
            "first_call": _iso(totals.get("first_call")),
            "last_call": _iso(totals.get("last_call")),
            "agents": [render.machine_row(a, agent_columns) for a in detail.agents],
        }
        render.emit(detail.calls, columns, fmt, title=f"Session {detail.session_id}",
                    totals=totals, meta=meta)
        return
    rows = []
    for call in detail.calls:
        rows.append({**call, "clock": _local(call["time"], "%H:%M:%S"),
                     "model": short_model(call["model"])})
    # the model is read whole; a status column is worth its width only when a call failed
    drops = {"cache_write_tokens": 2, "cache_read_tokens": 1}  # before output tokens
    columns = [replace(c, whole=True) if c.key == "model"
               else replace(c, keep=True) if c.key == "status"
               else replace(c, drop=drops[c.key]) if c.key in drops else c
               for c in columns
               if c.key != "status" or any(r.get("status") != "ok" for r in rows)]
    first = _local(totals.get("first_call"))
    title = (f"Session {detail.session_id} · {totals.get('project') or reports.NO_PROJECT} · "
             f"{first} · {totals['calls']:,} calls · "
             f"{render.format_usd(totals['cost'])}")
    render.emit(rows, columns, fmt, title=title, totals=totals)
    if len(detail.agents) > 1 or any(a["kind"] != "main" for a in detail.agents):
        sys.stdout.write("\n")
        render.emit(detail.agents, agent_columns, fmt, title="By agent")


# --- watch ---------------------------------------------------------------------------------


def _eta(status: Any, burn: dict[str | None, int], now: float) -> str:
    """When a cap is reached at the last hour's pace, or why not."""
    if status.spent_picousd >= status.limit_picousd:
        return "reached"
    if status.scope == "global":
        per_hour = sum(burn.values())
    elif status.scope.startswith("project:"):
        per_hour = burn.get(status.scope.removeprefix("project:"), 0)
    else:
        return "—"
    if per_hour <= 0:
        return "—"
    at = now + (status.limit_picousd - status.spent_picousd) / per_hour * 3600
    if status.resets_at is not None and at >= status.resets_at:
        return "not before reset"
    return _local(at, "%H:%M" if at - now < 86400 else "%a %H:%M")


def _fitted_table(title: str, headers: Sequence[tuple[str, str]],
                  rows: Sequence[tuple[Sequence[str], str | None]], width: int,
                  shrink: int) -> Any:
    """A borderless rich table one line per row: every column as wide as its widest cell
    except column ``shrink`` (a name), which takes what is left and ends in an ellipsis."""
    from rich.table import Table
    from rich.text import Text

    from ccmeter.untrusted import printable

    # names (projects, session and agent ids) come from headers: shown as text, never as
    # escape sequences or rich markup
    rows = [([printable(cell) for cell in cells], style) for cells, style in rows]
    sizes = [max([len(h), *(len(cells[i]) for cells, _ in rows)])
             for i, (h, _) in enumerate(headers)]
    rest = width - sum(sizes) + sizes[shrink] - 2 * (len(sizes) - 1)
    sizes[shrink] = max(min(sizes[shrink], rest), len(headers[shrink][0]), 8)
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for (header, justify), size in zip(headers, sizes, strict=True):
        table.add_column(header, justify=justify, no_wrap=True,  # type: ignore[arg-type]
                         overflow="ellipsis", width=size)
    for cells, style in rows:
        table.add_row(*(Text(cell) for cell in cells), style=style)
    return table


def watch_renderables(db: Any, cfg: Mapping[str, Any], now: float | None = None,
                      active_minutes: int = 15, width: int = 100) -> list[Any]:
    """The parts of one ``watch`` frame (rich renderables), newest figures from ``db``,
    laid out for a terminal ``width`` columns wide."""
    from rich.text import Text

    from ccmeter import periods, render
    from ccmeter.sessions import active_agents, burn_by_project, has_calls, latest_plan, spend_since

    now = time.time() if now is None else now
    head = Text(f"ccmeter watch · {_local(now, '%Y-%m-%d %H:%M:%S')}\n", style="bold")
    parts: list[Any] = [head]
    burn = burn_by_project(db, now - 3600)
    if not has_calls(db):
        head.append(NO_CALLS_YET)
    else:
        today, unpriced_today = spend_since(db, periods.local_midnight(now))
        head.append(f"today {render.format_usd(today) if today is not None else '$0.00'}",
                    style="bold")
        if unpriced_today:
            head.append(f" (+{unpriced_today} unpriced calls)", style="yellow")
        head.append(f" · burn {render.format_usd(sum(burn.values()))}/h over the last hour")

    statuses, why = _caps(db, cfg, now)
    if statuses is None:
        parts.append(Text(why or "caps: unavailable", style="dim"))
    elif not statuses:
        parts.append(Text("no caps set (ccmeter caps set --daily 20)", style="dim"))
    else:
        parts.append(_caps_table(statuses, burn, now, width))

    agents = active_agents(db, now - active_minutes * 60)
    if agents:
        parts.append(_active_table(agents, now, active_minutes, width))
    else:
        parts.append(Text(f"no active sessions (no call in the last {active_minutes} min)",
                          style="dim"))

    plan = latest_plan(db)
    if plan is not None:
        parts.append(Text(plan_line(plan, now, long=True)))
    return parts


def _caps_table(statuses: Sequence[Any], burn: dict[str | None, int], now: float,
                width: int) -> Any:
    """Each cap's spend, limit, use, reset and pace; the bar only where there is room."""
    from ccmeter import render

    places = render.usd_places(a for s in statuses for a in (s.spent_picousd, s.limit_picousd))
    headers = [("Cap", "left"), ("Spent", "right"), ("Limit", "right"), ("Used", "right"),
               ("", "left"), ("Resets", "left"), ("At this pace", "left")]
    rows = []
    for status in statuses:
        style = "red" if status.fraction >= 1 else ("yellow" if status.fraction >= 0.8
                                                    else None)
        mark = "⛔ " if status.fraction >= 1 else ("⚠ " if status.fraction >= 0.8 else "")
        rows.append(([
            mark + getattr(status, "label", f"{status.name} {status.scope}"),
            render.format_usd(status.spent_picousd, places),
            render.format_usd(status.limit_picousd, places),
            render.format_percent(status.fraction),
            render.bar(status.fraction, 10),
            _local(status.resets_at, "%a %H:%M") if status.resets_at else "—",
            _eta(status, burn, now),
        ], style))
    if width < 100:  # the bar repeats Used; the cap's name needs the room more
        headers.pop(4)
        rows = [(cells[:4] + cells[5:], style) for cells, style in rows]
    return _fitted_table("Caps", headers, rows, width, shrink=0)


def _active_table(agents: Sequence[Mapping[str, Any]], now: float, minutes: int,
                  width: int = 100) -> Any:
    from ccmeter import render, reports
    from ccmeter.sessions import short_agent, short_id

    by_session: dict[str, list[Mapping[str, Any]]] = {}
    for row in agents:
        by_session.setdefault(row["session_id"], []).append(row)

    def total(rows: Sequence[Mapping[str, Any]]) -> tuple[int, int | None, float]:
        calls = sum(r["calls"] for r in rows)
        priced = sum(r["priced_calls"] for r in rows)
        cost = sum(int(r["cost_picousd"] or 0) for r in rows) if priced else None
        return calls, cost, max(r["last_ts"] for r in rows)

    lines: list[tuple[list[Any], str | None]] = []
    ordered = sorted(by_session.items(), key=lambda item: -total(item[1])[2])
    for sid, rows in ordered:
        calls, cost, last = total(rows)
        project = next((r["project"] for r in rows if r["project"]), reports.NO_PROJECT)
        lines.append(([short_id(sid), project, _ago(now - last), f"{calls:,}", cost], None))
        for row in sorted(rows, key=lambda r: -(r["cost_picousd"] or 0)):
            if row["call_kind"] != "subagent" and not row["agent_id"]:
                continue
            label = f"  └ {short_agent(row['agent_id']) or 'subagent'}"
            cost = row["cost_picousd"] if row["priced_calls"] else None
            lines.append(([label, "", _ago(now - row["last_ts"]), f"{row['calls']:,}", cost],
                          "dim"))
    places = render.usd_places(cells[4] for cells, _ in lines)
    for cells, _ in lines:
        cells[4] = render.format_usd(cells[4], places)
    headers = [("Session", "left"), ("Project", "left"), ("Last call", "left"),
               ("Calls", "right"), ("Cost", "right")]
    return _fitted_table(f"Active sessions (a call in the last {minutes} min)", headers,
                         lines, width, shrink=1)


def render_watch_frame(db: Any, cfg: Mapping[str, Any] | None = None, now: float | None = None,
                       *, active_minutes: int = 15, width: int = 100) -> str:
    """One ``watch`` frame as plain text (no escape codes): for ``--once`` and tests."""
    from rich.console import Group

    from ccmeter.render import make_console

    buffer = io.StringIO()
    console = make_console(buffer, width=width)
    console.print(Group(*watch_renderables(db, cfg or {}, now, active_minutes, width)))
    return buffer.getvalue()


def _minutes(text: str, option: str) -> int:
    """Whole minutes (at least 1) for a length in the one duration grammar; a bare number
    is minutes, as ``--active`` always took."""
    from ccmeter import periods

    value = text.strip()
    length = periods.parse_duration(value + "m" if value.isdigit() else value,
                                    what=f"length for {option}")
    return max(1, round(length.approx_seconds / 60))


def watch(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    active: Annotated[str, typer.Option(
        "--active", help="A session is active if it made a call within this long: 15m, 2h, "
        "1d (a bare number is minutes).")] = "15m",
    interval: Annotated[float, typer.Option(
        "--interval", min=0.2, help="Seconds between checks for new calls.")] = 1.0,
) -> None:
    """A live view: today's spend against each cap, burn rate, active sessions, plan usage.

    Refreshes as calls land (a cheap change check each --interval) and at least every 10
    seconds. Ctrl-C to quit.

    Examples:
      ccmeter watch
      ccmeter watch --once --active 1h
    """
    from rich.console import Group
    from rich.live import Live

    from ccmeter import store
    from ccmeter.render import make_console

    active_minutes = _minutes(active, "--active")
    cfg = config.load_config()
    db = _open_db()
    try:
        if once or not sys.stdout.isatty():
            console = make_console(sys.stdout)
            sys.stdout.write(render_watch_frame(db, cfg, active_minutes=active_minutes,
                                                width=console.width))
            return
        console = make_console(sys.stdout)
        frame = Group(*watch_renderables(db, cfg, None, active_minutes, console.width))
        version, drawn = store.data_version(db), time.monotonic()
        with Live(frame, console=console, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(interval)
                current = store.data_version(db)
                if current == version and time.monotonic() - drawn < 10:
                    continue
                version, drawn = current, time.monotonic()
                cfg = config.load_config()
                live.update(Group(*watch_renderables(db, cfg, None, active_minutes,
                                                     console.width)),
                            refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        db.conn.close()


# --- statusline ----------------------------------------------------------------------------
# The work is in ccmeter.statusline (no Typer there: it runs after every Claude Code turn).


def statusline() -> None:
    """Print one short line for Claude Code's status bar, from the JSON it sends on stdin.

    Shows this session's cost, today's spend against the daily cap (⚠ from 80 %), and for
    subscribers the 5-hour and 7-day plan usage last seen. It never fails: on any problem
    it prints a minimal line and exits 0. Set it up in ~/.claude/settings.json:
    {"statusLine": {"type": "command", "command": "ccmeter statusline"}}

    Example:
      echo '{"session_id": "72292d5c", "model": {"id": "claude-opus-4-8"}}' | ccmeter statusline
    """
    from ccmeter import statusline as line

    line.main()
