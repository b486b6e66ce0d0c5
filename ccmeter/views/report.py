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


#: What ``report --format`` takes beyond the formats every command has.
REPORT_EXTRA_FORMATS = ("html",)


def _emit_html(title: str, sections: Sequence[tuple[str, Any, dict[str, Any]]]) -> None:
    """The report as one self-contained HTML page on stdout (:mod:`ccmeter.dashboard.export`)."""
    from ccmeter.dashboard.export import Section, report_html

    parts = [Section(name, rep, {k: str(v) for k, v in caption.items()})
             for name, rep, caption in sections]
    sys.stdout.write(report_html(title, parts, lambda rep: report_columns(
        rep.dimensions, "table", rep.rows)))
    sys.stdout.write("\n")
    sys.stdout.flush()


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
        caption["unpriced"] = (f"{unpriced} without a price: a model the catalog lacks "
                               "(`ccmeter prices`) or an answer without usage (`ccmeter "
                               "session ID` shows each call's note)")
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


def _title(title: str, assumption: Any, plan: str | None = None) -> str:
    title = f"{title}, {assumption.describe()}" if assumption.active else title
    return f"{title}, vs plan {plan}" if plan else title


def check_plan(catalog: Any, plan: str | None) -> str | None:
    """``--vs-plan``: a plan whose fee the catalog or the config knows, else a user error."""
    if plan is None:
        return None
    name = plan.strip().lower()
    if name in catalog.plan_fees:
        return name
    known = ", ".join(sorted(catalog.plan_fees)) or "none"
    raise config.CCMeterError(
        f"no monthly fee known for plan {plan!r} (plans with a fee: {known}; the bundled "
        f"catalog {catalog.version} has no sourced plan fees); give what you pay in "
        f'config.toml: [prices.plans."{name}"] monthly_usd = "..."')


def _comparison(catalog: Any, plan: str, rep: Any, now: float) -> Any:
    from ccmeter.planfees import compare

    flt = rep.filters
    since = flt.since if flt.since is not None else rep.totals.get("first_call")
    until = flt.until if flt.until is not None else now
    return compare(catalog.plan_fees, plan, rep.totals["cost"],
                   now if since is None else since, until)


def _plan_meta(cmp: Any) -> dict[str, Any]:
    from ccmeter.money import usd_string

    def money(name: str, value: int | None) -> dict[str, Any]:
        return {f"{name}_usd": usd_string(value), f"{name}_picousd": value}

    return {"plan": cmp.plan, "since": iso(cmp.since), "until": iso(cmp.until),
            **money("monthly_fee", cmp.monthly_fee), **money("fee", cmp.fee),
            **money("list_price", cmp.list_price), **money("difference", cmp.difference),
            "ratio": cmp.ratio}


def _plan_caption(cmp: Any) -> str:
    from ccmeter.money import format_usd

    text = (f"{cmp.plan} at {format_usd(cmp.monthly_fee)}/month costs {format_usd(cmp.fee)} "
            f"over this period; the list-price equivalent is {format_usd(cmp.list_price)}")
    if cmp.ratio is not None:
        more = cmp.difference >= 0
        text += (f", {cmp.ratio:.2f}× the fee ({format_usd(abs(cmp.difference))} "
                 f"{'more' if more else 'less'})")
    return text


def run(by: list[str] | None, since: str | None, until: str | None, project: str | None,
        model: str | None, fmt: str, source: str = "all", as_model: str | None = None,
        cache_ttl: str | None = None, vs_plan: str | None = None) -> None:
    """The report for these options, written to stdout."""
    from ccmeter import render, reports
    from ccmeter.whatif import check_assumption

    fmt = check_format(fmt, REPORT_EXTRA_FORMATS)
    source = check_source(source)
    now = time.time()
    cfg = config.load_config()
    catalog = load_catalog(cfg)
    try:
        assumption = check_assumption(catalog, as_model, cache_ttl)
    except ValueError as exc:
        raise config.CCMeterError(str(exc)) from None
    plan = check_plan(catalog, vs_plan)
    db = open_db()
    fold_journals(db, catalog)
    try:
        if not by and since is None and until is None:
            _default_report(db, catalog, fmt, now, project, model, source, assumption, plan)
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
    title = _title("Spend by " + " and ".join(rep.dimensions), assumption, plan)
    if empty:
        return
    cmp = _comparison(catalog, plan, rep, now) if plan else None
    if fmt == "html":
        caption = _caption(rep, now, assumption)
        if cmp is not None:
            caption["vs plan"] = _plan_caption(cmp)
        _emit_html(title, [(title, rep, caption)])
        return
    if fmt == "table" and not rep.totals["calls"]:
        only = "".join(f" of {name} {value}" for name, value in
                       (("project", project), ("model", model)) if value)
        echo(f"No calls{only} in this period: {_caption(rep, now)['period']}.\n"
                   "A wider --since may find some.")
    elif fmt == "table":
        caption = _caption(rep, now, assumption)
        if cmp is not None:
            caption["vs plan"] = _plan_caption(cmp)
        render.emit(table_rows(rep.rows), report_columns(rep.dimensions, fmt, rep.rows),
                    fmt, title=title, totals=rep.totals, meta=caption)
    else:
        meta = _report_meta(rep, now, assumption)
        if cmp is not None:
            meta["vs_plan"] = _plan_meta(cmp)
        render.emit(rep.rows, report_columns(rep.dimensions, fmt, rep.rows), fmt, title=title,
                    totals=rep.totals, meta=meta)


def _default_report(db: Any, catalog: Any, fmt: str, now: float, project: str | None,
                    model: str | None, source: str, assumption: Any, plan: str | None) -> None:
    from ccmeter import periods, render, reports

    views = []
    for period, since in (("today", periods.local_midnight(now)),
                          ("this week", periods.week_start(now))):
        filters = reports.Filters(since=since, project=project, model=model, source=source)
        views.append((period, reports.build_report(db, ["project"], filters, catalog,
                                                   assumption=assumption)))
    if fmt == "html":
        sections = []
        for period, rep in views:
            caption = _caption(rep, now, assumption)
            if plan:
                caption["vs plan"] = _plan_caption(_comparison(catalog, plan, rep, now))
            sections.append((_title(f"{period.capitalize()} by project", assumption, plan), rep,
                             caption))
        _emit_html(_title("Today and this week by project", assumption, plan), sections)
        return
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
            caption = _caption(rep, now, assumption)
            if plan:
                caption["vs plan"] = _plan_caption(_comparison(catalog, plan, rep, now))
            render.emit(table_rows(rep.rows), report_columns(rep.dimensions, fmt, rep.rows),
                        fmt, title=_title(f"{period.capitalize()} by project", assumption, plan),
                        totals=rep.totals, meta=caption)
        return
    rows = [{"period": period, **row} for period, rep in views for row in rep.rows]
    week = views[1][1]
    meta = _report_meta(week, now, assumption)
    meta["periods"] = {period: {"since": iso(rep.filters.since),
                                "totals": render.machine_row(
                                    rep.totals, report_columns(["project"], "json", [])),
                                **({"vs_plan": _plan_meta(_comparison(catalog, plan, rep, now))}
                                   if plan else {})}
                       for period, rep in views}
    if plan:
        meta["vs_plan"] = meta["periods"]["this week"]["vs_plan"]
    render.emit(rows, report_columns(["project"], fmt, rows, period=True), fmt,
                title=_title("Today and this week by project", assumption, plan),
                totals=week.totals,
                meta=meta)
