"""What each dashboard page shows, as plain dicts: the CLI's own report functions, called
with the page's filters. No SQL and no HTML here.

Every figure comes from the library the commands use (:func:`ccmeter.reports.build_report`
for ``report``, :func:`ccmeter.sessions.session_detail` for ``session``,
:func:`ccmeter.caps.guard.cap_statuses` for ``caps``, :func:`ccmeter.views.plan.load_windows`
for ``plan``, :func:`ccmeter.wastereport.build` for ``waste``), so a page's totals are the
CLI's to the picodollar: there is no second copy of a query to drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ccmeter import config, periods, reports
from ccmeter.record import Record

STACKS = ("project", "model")
DEFAULT_SINCE = "30d"
TOP = 10


class PageFilters(Record):
    """A page's filters as the user typed them (the form's fields) and as a report takes them."""

    since_text: str | None
    until_text: str | None
    project: str | None
    model: str | None
    stack: str
    report: reports.Filters

    def query(self, **changes: str | None) -> str:
        """These filters as a query string, with ``changes`` applied (None drops a field)."""
        from urllib.parse import urlencode

        fields = {"since": self.since_text, "until": self.until_text, "project": self.project,
                  "model": self.model, "stack": None if self.stack == "project" else self.stack}
        fields.update(changes)
        kept = {k: v for k, v in fields.items() if v}
        return ("?" + urlencode(kept)) if kept else ""


def parse_filters(params: Mapping[str, Sequence[str]], now: float, *,
                  project: str | None = None, default_since: str = DEFAULT_SINCE
                  ) -> PageFilters:
    """The filters of a page's query string (the CLI's forms: ``--since 30d`` is
    ``?since=30d``). A bad value raises :class:`ccmeter.config.CCMeterError`."""
    from ccmeter.views.common import time_range

    def one(name: str) -> str | None:
        values = params.get(name) or ()
        value = values[-1].strip() if values else ""
        return value or None

    since = one("since")
    until = one("until")
    if since is None and until is None and "since" not in params:
        since = default_since
    if since == "all":
        since = None
    stack = (one("stack") or "project").lower()
    if stack not in STACKS:
        raise config.CCMeterError(f"cannot stack by {stack!r}; use project or model")
    start, end = time_range(since, until, now)  # a bad field: periods.PeriodError, ours
    project = project if project is not None else one("project")
    model = one("model")
    flt = reports.Filters(since=start, until=end, project=project, model=model)
    return PageFilters(since or ("all" if "since" in params else None), until, project, model,
                       stack, flt)


def time_unit(flt: reports.Filters, first_call: float | None, now: float) -> str:
    """The chart's bar: an hour for two days or less, a day up to ~3 months, a week up to
    a year and a half, else a month."""
    start = flt.since if flt.since is not None else (first_call or now)
    span = (flt.until if flt.until is not None else now) - start
    if span <= 2 * 86400:
        return "hour"
    if span <= 95 * 86400:
        return "day"
    return "week" if span <= 550 * 86400 else "month"


def period_starts(now: float) -> list[tuple[str, float, str | None]]:
    """(label, start, the calendar cap it is held against) for today, this week, this month."""
    today = datetime.fromtimestamp(now).date()
    return [("today", periods.local_midnight(now), "daily"),
            ("this week", periods.week_start(now), "weekly"),
            ("this month", periods.month_start(today), "monthly")]


def periods_against_caps(db: Any, cfg: Mapping[str, Any], catalog: Any, now: float,
                         project: str | None, model: str | None) -> list[dict[str, Any]]:
    """Today, this week and this month: spend (``report --since today|week|month``) and the
    global cap of that name, if one is set."""
    from ccmeter.caps.guard import cap_statuses

    statuses = {s.name: s for s in cap_statuses(db, cfg, now) if s.scope == "global"}
    out = []
    for label, start, cap in period_starts(now):
        flt = reports.Filters(since=start, project=project, model=model)
        rep = reports.build_report(db, ["project"], flt, catalog)
        status = statuses.get(cap) if cap else None
        out.append({"label": label, "since": start, "totals": rep.totals, "cap": status})
    return out


def spend_over_time(db: Any, flt: reports.Filters, stack: str, catalog: Any, now: float,
                    also: Sequence[Sequence[str]] = ()) -> dict[str, Any]:
    """The period's spend by time bucket (``report --by day``, idle days included), each
    bucket split by ``stack`` (``report --by project --by day``): chart series in
    picodollars; with ``report --by STACK`` and the ``also`` groupings, all from one read."""
    from ccmeter.sessions import first_call

    unit = time_unit(flt, first_call(db) if flt.since is None else None, now)
    timeline, split, by_stack, *more = reports.build_reports(
        db, [[unit], [stack, unit], [stack], *also], flt, catalog)
    labels = [row[unit] for row in timeline.rows]
    index = {label: i for i, label in enumerate(labels)}
    series: dict[str, list[float]] = {}
    for row in split.rows:
        name = row[stack] or reports.missing_label(stack)
        values = series.setdefault(name, [0.0] * len(labels))
        position = index.get(row[unit])
        if position is not None:
            values[position] += row["cost"] or 0
    return {"unit": unit, "labels": labels, "series": series, "totals": timeline.totals,
            "by_stack": by_stack.rows, "also": [rep.rows for rep in more]}


def overview(db: Any, cfg: Mapping[str, Any], catalog: Any, pf: PageFilters,
             now: float) -> dict[str, Any]:
    """The overview page: the periods against the caps, the range's spend over time, and
    what dominates it (models, projects, sessions)."""
    from ccmeter.sessions import has_calls

    flt = pf.report
    other = "model" if pf.stack == "project" else "project"
    chart = spend_over_time(db, flt, pf.stack, catalog, now, also=[[other], ["session"]])
    return {
        "empty": not chart["totals"]["calls"] and not has_calls(db),
        "periods": periods_against_caps(db, cfg, catalog, now, pf.project, pf.model),
        "chart": chart,
        "totals": chart["totals"],
        "breakdown": {pf.stack: chart["by_stack"], other: chart["also"][0]},
        "sessions": chart["also"][1][:TOP],
    }


def project_page(db: Any, catalog: Any, pf: PageFilters, now: float) -> dict[str, Any]:
    """One project: its spend over time by model, its models and its sessions."""
    flt = pf.report
    chart = spend_over_time(db, flt, "model", catalog, now, also=[["session"]])
    return {"chart": chart, "totals": chart["totals"], "models": chart["by_stack"],
            "sessions": chart["also"][0]}


def session_page(db: Any, catalog: Any, session_prefix: str) -> dict[str, Any]:
    """One session, call by call (``ccmeter session ID``), and what caching saved it (as
    ``report --by session`` counts it). ValueError: no such session."""
    from ccmeter import sessions

    sid = sessions.resolve_session(db, session_prefix)
    detail = sessions.session_detail(db, sid)
    saved = reports.build_report(db, ["session"], reports.Filters(session=sid),
                                 catalog).totals["cache_savings"]
    refused = sum(1 for call in detail.calls if call["status"].startswith("blocked"))
    failed = sum(1 for call in detail.calls
                 if call["status"] not in ("ok",) and not call["status"].startswith("blocked"))
    return {"session_id": sid, "calls": detail.calls, "agents": detail.agents,
            "totals": {**detail.totals, "cache_savings": saved}, "refused": refused,
            "failed": failed}


def caps_page(db: Any, cfg: Mapping[str, Any], now: float) -> dict[str, Any]:
    """Every cap (``ccmeter caps``) and the plan windows with each session's share
    (``ccmeter plan``)."""
    from ccmeter.caps.guard import cap_statuses
    from ccmeter.caps.policy import parse_policy
    from ccmeter.views.plan import load_windows

    policy = parse_policy(cfg)
    calls, windows = load_windows(db, now, "session")
    return {"caps": cap_statuses(db, cfg, now), "policy": policy,
            "paused_until": policy.paused_until if policy.paused(now) else None,
            "plan_calls": len(calls), "windows": windows}


def waste_page(db: Any, catalog: Any, pf: PageFilters, now: float) -> dict[str, Any]:
    """What cache busts and unread writes cost in the range (``ccmeter waste --by cause``),
    and by project."""
    from ccmeter import wastereport

    wf = wastereport.WasteFilters(since=pf.report.since, until=pf.report.until,
                                  project=pf.project)
    by_cause, by_session = wastereport.build_many(db, ["cause", "session"], wf, catalog, now)
    return {"by_cause": by_cause.rows, "by_session": by_session.rows[:TOP],
            "totals": by_cause.totals, "spend": by_cause.spend}
