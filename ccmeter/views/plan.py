"""``ccmeter plan`` at run time: a subscription's 5-hour and 7-day windows as the proxy saw
them, and each session's (or project's) share. The figures are :mod:`ccmeter.planwindows`;
the options are declared in :mod:`ccmeter.commands.plan`.
"""

from __future__ import annotations

import time
from typing import Any

from ccmeter import config
from ccmeter.views.common import check_format, echo, iso, nothing_yet, open_db, table_rows

BY = ("session", "project", "hour")
NO_PLAN = ("No plan usage seen yet: the 5-hour and 7-day windows come from the headers of a "
           "subscription's (Pro/Max) answers, and no metered call carried them. API-key calls "
           "have no plan windows (see `ccmeter report`).")


def _until(seconds: float) -> str:
    """``2h 10m``, ``3d 4h``, ``12m``: how long from now, for people."""
    minutes = max(0, int(seconds // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {mins:02d}m" if hours else f"{mins}m"


def _window_row(w: Any, now: float) -> dict[str, Any]:
    """One window as the table shows it."""
    from ccmeter.render import format_datetime

    if w.reset_passed:
        runs_out = "(reset since the last call)"
    elif w.runs_out_at is not None:
        runs_out = format_datetime(w.runs_out_at)
    else:
        runs_out = "not before the reset" if w.rate_per_hour is not None else "(too few calls)"
    resets = ""
    if w.resets_at is not None:
        resets = format_datetime(w.resets_at) + (
            f" (in {_until(w.resets_at - now)})" if w.resets_at > now else " (passed)")
    return {"window": w.name, "used": w.utilization, "resets_at": resets, "calls": w.calls,
            "rate_per_hour": w.rate_per_hour, "runs_out_at": runs_out,
            "binding": "yes" if w.binding else ""}


def _window_columns() -> list[Any]:
    from ccmeter.render import Column

    return [Column("window", "Window", whole=True), Column("used", "Used", "percent"),
            Column("resets_at", "Resets"), Column("calls", "Calls", "int"),
            Column("rate_per_hour", "Rate /h", "percent"), Column("runs_out_at", "Runs out"),
            Column("binding", "Binding")]


def _window_meta(w: Any) -> dict[str, Any]:
    """One window as JSON carries it (``meta.windows``)."""
    return {"window": w.name, "utilization": w.utilization, "resets_at": iso(w.resets_at),
            "reset_passed": w.reset_passed, "observed_at": iso(w.observed_at),
            "calls": w.calls, "rate_per_hour": w.rate_per_hour,
            "runs_out_at": iso(w.runs_out_at), "binding": w.binding}


def _share_rows(windows: list[Any], by: str) -> list[dict[str, Any]]:
    """One row per session (or project): calls and share in each window."""
    rows: dict[Any, dict[str, Any]] = {}
    for w in windows:
        for share in w.shares:
            row = rows.setdefault(share.key, {by: share.key, "project": share.project})
            row[f"calls_{w.name}"] = share.calls
            row[f"share_{w.name}"] = share.share
            if row.get("project") is None and by == "session":
                row["project"] = share.project
    ordered = sorted(rows.values(), key=lambda r: (-(r.get("share_5h") or 0),
                                                  -(r.get("share_7d") or 0), str(r[by])))
    for row in ordered:
        for name in ("5h", "7d"):
            row.setdefault(f"calls_{name}", 0)
            row.setdefault(f"share_{name}", 0.0)
        if by == "project":
            row.pop("project", None)
    return ordered


def _share_columns(by: str) -> list[Any]:
    from ccmeter.render import Column

    columns = [Column(by, by.capitalize(), whole=True)]
    if by == "session":
        columns.append(Column("project", "Project"))
    columns += [Column("calls_5h", "Calls 5h", "int"), Column("share_5h", "Share 5h", "percent"),
                Column("calls_7d", "Calls 7d", "int"), Column("share_7d", "Share 7d", "percent")]
    return columns


def load_calls(db: Any, now: float) -> list[Any]:
    """The calls with plan headers, two of the longest window back."""
    from ccmeter import store
    from ccmeter.planwindows import WINDOWS, from_rows

    longest = max(length for length, _span in WINDOWS.values())
    return from_rows(store.plan_calls(db, now - 2 * longest))


def load_windows(db: Any, now: float, by: str = "session") -> tuple[list[Any], list[Any]]:
    """The calls with plan headers and the windows they give: what ``ccmeter plan`` and
    the dashboard's plan page both show."""
    from ccmeter.planwindows import plan_windows

    calls = load_calls(db, now)
    return calls, plan_windows(calls, now, by=by)


def run(by: str, fmt: str) -> None:
    """The plan windows and shares, written to stdout."""
    from ccmeter import render
    from ccmeter.planwindows import plan_windows

    fmt = check_format(fmt)
    by = by.strip().lower()
    if by not in BY:
        raise config.CCMeterError(f"cannot show the plan by {by!r}; use session, project "
                                  "or hour")
    now = time.time()
    db = open_db()
    try:
        calls = load_calls(db, now)
        empty = fmt == "table" and not calls and nothing_yet(db)
    finally:
        db.conn.close()
    if empty:
        return
    if fmt == "table" and not calls:
        echo(NO_PLAN)
        return
    if by == "hour":
        _hours(calls, now, fmt)
        return
    windows = plan_windows(calls, now, by=by)
    shares = _share_rows(windows, by)
    if fmt == "table":
        render.emit([_window_row(w, now) for w in windows], _window_columns(), fmt,
                    title="Plan windows", meta={
                        "from": "the anthropic-ratelimit-unified-* headers of the newest "
                                "metered answers",
                        "rate": "utilization gained in the last hour (5h) or day (7d) of "
                                "calls; runs out: at that rate"})
        if shares:
            echo("")
            render.emit(table_rows(shares), _share_columns(by), fmt,
                        title=f"Share of each window by {by}", meta={
                            "share": "the rise in utilization each call's answer reported; "
                                     "use ccmeter did not see counts toward the next call"})
        return
    machine = [{"window": w.name, **row} for w in windows for row in (
        {by: s.key, **({"project": s.project} if by == "session" else {}),
         "calls": s.calls, "share": s.share} for s in w.shares)]
    from ccmeter.render import Column

    columns = [Column("window", "Window"), Column(by, by.capitalize())]
    if by == "session":
        columns.append(Column("project", "Project"))
    columns += [Column("calls", "Calls", "int"), Column("share", "Share", "percent")]
    meta = {"by": by, "generated_at": iso(now), "windows": [_window_meta(w) for w in windows]}
    render.emit(machine, columns, fmt, title="Plan windows", meta=meta)


def _hours(calls: list[Any], now: float, fmt: str) -> None:
    """``--by hour``: each window's utilization over the last 7 days, hour by hour."""
    from ccmeter import render
    from ccmeter.planwindows import by_hour

    hours = by_hour(calls, now - 7 * 86400)
    rows = [{"hour": iso(h.start) if fmt != "table" else render.format_datetime(h.start),
             "calls": h.calls, "used_5h": h.util_5h, "used_7d": h.util_7d,
             **({"note": ", ".join(f"{n} reset" for n, r in (("5h", h.reset_5h),
                                                            ("7d", h.reset_7d)) if r)}
                if fmt == "table" else {"reset_5h": h.reset_5h, "reset_7d": h.reset_7d})}
            for h in hours]
    columns = [render.Column("hour", "Hour"), render.Column("calls", "Calls", "int"),
               render.Column("used_5h", "5h used", "percent"),
               render.Column("used_7d", "7d used", "percent")]
    columns.append(render.Column("note", "") if fmt == "table" else render.Column(
        "reset_5h", "5h reset"))
    if fmt != "table":
        columns.append(render.Column("reset_7d", "7d reset"))
    render.emit(rows, columns, fmt, title="Plan windows by hour (the last 7 days)", meta={
        "used": "the highest utilization any call of the hour reported"})
