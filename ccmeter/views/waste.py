"""``ccmeter waste`` at run time: money lost to cache re-writes and writes never read.

Reads :mod:`ccmeter.wastereport` and hands the rows to :mod:`ccmeter.render`. No Typer here:
the options are declared in :mod:`ccmeter.commands.waste`.
"""

from __future__ import annotations

import time
from typing import Any

from ccmeter import config
from ccmeter.render import plural
from ccmeter.statusline import _local
from ccmeter.views.common import (
    check_format,
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

_GROUP_HEADERS = {"cause": "Cause", "project": "Project", "session": "Session", "day": "Day"}


def _columns(group_by: str | None, fmt: str) -> list[Any]:
    from ccmeter.render import Column

    if group_by is None:  # one session, turn by turn
        columns = [Column("started_at", "Time", "datetime"), Column("model", "Model")]
        if fmt != "table":
            columns = [columns[0], Column("call_uid", "Call"), Column("session", "Session"),
                       Column("project", "Project"), Column("agent_id", "Agent"), columns[1],
                       Column("kind", "Kind"), Column("cause", "Cause", whole=True),
                       Column("message_index", "Message", "int"),
                       Column("idle_minutes", "Idle min", "int"),
                       Column("tokens", "Tokens", "int"), Column("tokens_5m", "5m", "int"),
                       Column("tokens_1h", "1h", "int"), Column("waste", "Waste", "usd")]
            return columns
        return [*columns, Column("cause", "Cause", whole=True), Column("detail", "Why"),
                Column("tokens", "Tokens", "int"), Column("waste", "Waste", "usd")]
    return [Column(group_by, _GROUP_HEADERS[group_by], whole=True),
            Column("calls", "Calls", "int"),
            Column("rewrite_tokens", "Re-written", "int"),
            Column("never_read_tokens", "Never read", "int"),
            Column("waste", "Waste", "usd")]


def _meta(rep: Any, now: float, fmt: str) -> dict[str, Any]:
    from ccmeter import money

    flt = rep.filters
    spend = rep.spend["cost_picousd"] or 0
    lost = rep.totals["waste"] or 0
    share = lost / spend if spend else None
    if fmt == "table":
        since = _local(flt.since) if flt.since is not None else "first call"
        caption = {"period": f"{since} → {_local(flt.until)} ({timezone_name()})",
                   "spend": f"{money.format_usd(spend)} in "
                            f"{plural(rep.spend['calls'], 'call')}, of which "
                            f"{money.format_usd(lost)} lost"
                            + (f" ({share:.1%})" if share is not None else "")}
        if rep.pending_tokens:
            caption["pending"] = (f"{rep.pending_tokens:,} tokens written recently and not read "
                                  "yet (waste only if their cache lifetime runs out)")
        if rep.totals.get("unpriced"):
            caption["unpriced"] = f"{rep.totals['unpriced']} losses of models without a price"
        return caption
    return {
        "group_by": rep.group_by,
        "since": iso(flt.since), "until": iso(flt.until),
        "project": flt.project, "session": flt.session_id,
        "spend_usd": money.usd_string(spend), "spend_picousd": spend,
        "spend_calls": rep.spend["calls"],
        "waste_share": share,
        "pending_tokens": rep.pending_tokens,
        "unpriced_losses": rep.totals.get("unpriced", 0),
        "timezone": timezone_name(),
        "catalog_version": rep.catalog_version,
        "generated_at": iso(now),
    }


def run(by: str | None, since: str | None, until: str | None, project: str | None,
        session: str | None, fmt: str) -> None:
    """The waste report for these options, written to stdout."""
    from ccmeter import render, sessions, wastereport

    fmt = check_format(fmt)
    now = time.time()
    cfg = config.load_config()
    catalog = load_catalog(cfg)
    db = open_db()
    fold_journals(db, catalog)
    try:
        if session is not None:
            try:
                session = sessions.resolve_session(db, session)
            except ValueError as exc:
                raise config.CCMeterError(str(exc)) from None
            group = by
        else:
            group = by or "cause"
        start, end = time_range(since, until, now) if session is None or since or until else (
            None, None)
        if session is None and start is None and since is None:
            from ccmeter import periods

            start = periods.parse_when("7d", now=now)  # the default period: a week
        flt = wastereport.WasteFilters(since=start, until=end, project=project,
                                       session_id=session)
        try:
            rep = wastereport.build(db, group, flt, catalog, now)
        except ValueError as exc:
            raise config.CCMeterError(str(exc)) from None
        empty = fmt == "table" and not rep.spend["calls"] and nothing_yet(db)
    finally:
        db.conn.close()
    if empty:
        return
    if session is not None and group is None:
        title = f"Cache waste of session {session}, turn by turn"
    else:
        title = f"Cache waste by {group}"
    columns = _columns(group, fmt)
    if fmt == "table" and not rep.rows:
        meta = _meta(rep, now, fmt)
        spent = rep.spend["cost_picousd"] or 0
        from ccmeter import money

        echo(f"No cache waste in this period: {meta['period']}.\n"
             f"Spent {money.format_usd(spent)} in {plural(rep.spend['calls'], 'call')}, "
             "none of it lost to cache re-writes or writes never read."
             + (f"\n{meta['pending']}." if "pending" in meta else ""))
        return
    rows = table_rows(rep.rows) if fmt == "table" else rep.rows
    render.emit(rows, columns, fmt, title=title, totals=rep.totals if group else
                {"tokens": sum(r["tokens"] for r in rep.rows), "waste": rep.totals["waste"]},
                meta=_meta(rep, now, fmt))
