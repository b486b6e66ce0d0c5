"""Each dashboard page's body, from the dicts :mod:`ccmeter.dashboard.data` returns.

Numbers are shown as the CLI's tables show them (``format_usd``, ``(no project)``), and
each total also carries its exact picodollars in ``data-picousd``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from ccmeter.dashboard import svg
from ccmeter.dashboard.layout import (
    filter_form,
    num,
    percent,
    table,
    usd,
    usd_axis,
    when,
)
from ccmeter.money import usd_places
from ccmeter.reports import SEVERAL_PROJECTS, missing_label


def project_href(name: str | None) -> str | None:
    return None if not name else "/project/" + quote(name, safe="")


def session_href(sid: str | None) -> str | None:
    return None if not sid else "/session/" + quote(sid, safe="")


def _link(text: str, href: str | None) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>' if href else escape(text)


def _project_cell(row: Mapping[str, Any]) -> str:
    name = row.get("project")
    if name is None:
        return escape(SEVERAL_PROJECTS if (row.get("projects") or 0) > 1
                      else missing_label("project"))
    return _link(name, project_href(name))


def totals_cards(totals: Mapping[str, Any], label: str) -> str:
    """The range's totals: cost, calls, tokens, what caching saved."""
    cache_w = totals["cache_write_5m_tokens"] + totals["cache_write_1h_tokens"]
    unpriced = (f'<div class="sub">{num(totals["unpriced_calls"])} calls unpriced</div>'
                if totals.get("unpriced_calls") else "")
    if totals.get("transcript_calls"):  # as report's caption says it
        unpriced += (f'<div class="sub" id="imported">{num(totals["transcript_calls"])} '
                     "imported from transcripts (estimates)</div>")
    return (
        '<div class="cards" id="range-totals">'
        f'<div class="card"><div class="sub">{escape(label)}</div>'
        f'<div class="big">{usd(totals["cost"], id_="total-cost")}</div>{unpriced}</div>'
        f'<div class="card"><div class="sub">Calls</div><div class="big" id="total-calls">'
        f'{num(totals["calls"])}</div><div class="sub">{num(totals["input_tokens"])} input · '
        f'{num(totals["output_tokens"])} output tokens</div></div>'
        f'<div class="card"><div class="sub">Caching saved</div><div class="big">'
        f'{usd(totals["cache_savings"], id_="total-saved")}</div><div class="sub">'
        f'{num(totals["cache_read_tokens"])} read · {num(cache_w)} written</div></div></div>')


def period_cards(periods: Sequence[Mapping[str, Any]]) -> str:
    """Today, this week, this month: spend, and the cap of that name when set."""
    from ccmeter.money import cap_usd

    cards = []
    for item in periods:
        totals, cap = item["totals"], item["cap"]
        slug = item["label"].replace(" ", "-")
        if cap is not None:
            state = "reached" if cap.reached else ("warning" if cap.warning else "ok")
            against = (f'<div class="sub state-{state}">{percent(cap.fraction)} of the '
                       f"{escape(cap.name)} cap {escape(cap_usd(cap.limit_picousd))}</div>"
                       + svg.meter(cap.fraction, warn_at=_warn_at(cap),
                                   title=f"{cap.name} cap used"))
        else:
            against = '<div class="sub">no cap set</div>'
        cards.append(
            f'<div class="card" id="period-{slug}"><div class="sub">{escape(item["label"])}'
            f'</div><div class="big">{usd(totals["cost"])}</div><div class="sub">'
            f'{num(totals["calls"])} calls</div>{against}</div>')
    return f'<div class="cards" id="periods">{"".join(cards)}</div>'


def chart_block(chart: Mapping[str, Any], title: str) -> str:
    series = svg.top_series(chart["series"])
    labels = chart["labels"]
    if not labels or not chart["totals"]["calls"]:
        return "<p class=muted>No calls in this range.</p>"
    body = svg.stacked_bars(labels, series, value_text=usd_axis, title=title)
    return (f'<figure id="spend-chart" style="margin:0">{body}'
            f'{svg.legend(list(series))}<figcaption class="muted">{escape(title)}, by '
            f'{escape(chart["unit"])} (local time)</figcaption></figure>')


def group_table(rows: Sequence[Mapping[str, Any]], dim: str, *, id_: str,
                limit: int | None = None) -> str:
    """A report grouped by ``dim`` as a table (``report --by DIM``), with its bar chart."""
    shown = list(rows[:limit] if limit else rows)
    if not shown:
        return "<p class=muted>None in this range.</p>"
    places = usd_places(r["cost"] for r in shown)
    names = [r[dim] or missing_label(dim) for r in shown]
    hrefs = [project_href(r[dim]) if dim == "project" else None for r in shown]
    chart = svg.hbars([(n, float(r["cost"] or 0)) for n, r in zip(names, shown, strict=True)],
                      value_text=usd_axis, title=f"Spend by {dim}", hrefs=hrefs)
    body = [[_link(n, h), num(r["calls"]), num(r["input_tokens"]),
             num(r["cache_write_tokens"]), num(r["cache_read_tokens"]), num(r["output_tokens"]),
             usd(r["cost"], places=places), usd(r["cache_savings"], places=places)]
            for n, h, r in zip(names, hrefs, shown, strict=True)]
    return chart + table([dim.capitalize(), "Calls", "Input", "Cache write", "Cache read",
                          "Output", "Cost", "Cache saved"], body, numeric=range(1, 8), id_=id_)


def sessions_table(rows: Sequence[Mapping[str, Any]], *, id_: str) -> str:
    """Sessions (``report --by session``) by cost, each a link to its page."""
    if not rows:
        return "<p class=muted>No sessions in this range.</p>"
    places = usd_places(r["cost"] for r in rows)
    body = [[_link((r["session"] or missing_label("session"))[:8], session_href(r["session"])),
             _project_cell(r), when(r["first_call"]), when(r["last_call"]), num(r["calls"]),
             usd(r["cost"], places=places), usd(r["cache_savings"], places=places)]
            for r in rows]
    return table(["Session", "Project", "Started", "Last call", "Calls", "Cost", "Cache saved"],
                 body, numeric=(4, 5, 6), id_=id_)


def overview(data: Mapping[str, Any], pf: Any) -> str:
    from ccmeter.views.common import NO_CALLS_YET

    other = "model" if pf.stack == "project" else "project"
    return "".join([
        f'<p class="error" id="nothing-yet">{escape(NO_CALLS_YET)}</p>' if data["empty"] else "",
        period_cards(data["periods"]),
        "<h2>This range</h2>", filter_form("/", pf),
        totals_cards(data["totals"], _range_label(pf)),
        f"<h2>Spend over time by {escape(pf.stack)}</h2>",
        chart_block(data["chart"], f"Spend by {pf.stack}"),
        f"<h2>By {escape(pf.stack)}</h2>",
        group_table(data["breakdown"][pf.stack], pf.stack, id_=f"by-{pf.stack}"),
        f"<h2>By {escape(other)}</h2>",
        group_table(data["breakdown"][other], other, id_=f"by-{other}", limit=12),
        "<h2>Top sessions</h2>", sessions_table(data["sessions"], id_="top-sessions"),
    ])


def projects(rows: Sequence[Mapping[str, Any]], pf: Any) -> str:
    return filter_form("/projects", pf, project=False, stack=False) + group_table(
        rows, "project", id_="by-project")


def project(name: str, data: Mapping[str, Any], pf: Any) -> str:
    return "".join([
        filter_form(project_href(name) or "/", pf, project=False, stack=False),
        totals_cards(data["totals"], _range_label(pf)),
        "<h2>Spend over time by model</h2>", chart_block(data["chart"], "Spend by model"),
        "<h2>By model</h2>", group_table(data["models"], "model", id_="by-model"),
        "<h2>Sessions</h2>", sessions_table(data["sessions"], id_="project-sessions"),
    ])


def sessions_list(rows: Sequence[Mapping[str, Any]], pf: Any) -> str:
    """Sessions by cost: the 15 that cost most as bars, then all of them as a table."""
    top = list(rows[:15])
    chart = svg.hbars([((r["session"] or missing_label("session"))[:8] + " · "
                        + (r.get("project") or ""), float(r["cost"] or 0)) for r in top],
                      value_text=usd_axis, hrefs=[session_href(r["session"]) for r in top],
                      title="The sessions that cost most") if top else ""
    return (filter_form("/sessions", pf, stack=False) + chart
            + sessions_table(rows, id_="sessions"))


#: The calls a session page lists in its table (the timeline shows them all).
CALL_ROWS = 1000


def session(data: Mapping[str, Any]) -> str:
    calls, totals = data["calls"], data["totals"]
    points = []
    for call in calls:
        status = call["status"]
        cls = ("refused" if status.startswith("blocked") else
               "failed" if status != "ok" else f"c{0 if call['call_kind'] == 'main' else 1}")
        tip = (f"{when(call['time'], '%H:%M:%S')} {call['model'] or '?'} {status}: "
               f"{usd_axis(call['cost'] or 0) if call['cost'] is not None else 'unpriced'}")
        points.append((call["time"], float(call["cost"] or 0), cls, tip))
    start = calls[0]["time"] if calls else 0.0
    end = calls[-1]["time"] if calls else 1.0
    places = usd_places(c["cost"] for c in calls)
    rows = []
    for call in calls[:CALL_ROWS]:
        status = call["status"]
        cls = ("status-refused" if status.startswith("blocked") else
               "status-failed" if status != "ok" else "")
        rows.append([when(call["time"], "%m-%d %H:%M:%S"), escape(call["agent"]),
                     escape(call["model"] or "?"), f'<span class="{cls}">{escape(status)}</span>',
                     num(call["input_tokens"]), num(call["cache_write_tokens"]),
                     num(call["cache_read_tokens"]), num(call["output_tokens"]),
                     usd(call["cost"], places=places),
                     "" if call["ttfb_ms"] is None else f"{call['ttfb_ms']:,} ms"])
    more = (f"<p class=muted>The first {CALL_ROWS:,} of {len(calls):,} calls "
            f"(`ccmeter session {escape(data['session_id'][:8])}` lists them all).</p>"
            if len(calls) > CALL_ROWS else "")
    agents = [[escape(a["agent"]), escape(a["kind"]), num(a["calls"]), usd(a["cost"])]
              for a in data["agents"]]
    legend = ('<ul class="legend"><li><span class="swatch c0"></span>main</li><li>'
              '<span class="swatch c1"></span>subagent / auxiliary</li><li><span class="swatch"'
              ' style="background:var(--over)"></span>refused by a cap</li><li><span '
              'class="swatch" style="background:var(--warn)"></span>failed</li></ul>')
    return "".join([
        f'<p class="muted">Project {_project_cell(totals)} · {when(totals["first_call"])} → '
        f'{when(totals["last_call"])} · <span id="session-id">{escape(data["session_id"])}'
        "</span></p>",
        totals_cards(totals, "Session cost"),
        f'<p>{num(data["refused"])} refused by a cap · {num(data["failed"])} failed or '
        "incomplete</p>",
        "<h2>Calls on a timeline</h2>",
        svg.timeline(points, start=start, end=end, value_text=usd_axis,
                     title="Cost of each call over time", start_text=when(start, "%H:%M:%S"),
                     end_text=when(end, "%H:%M:%S")), legend,
        "<h2>Agents</h2>", table(["Agent", "Kind", "Calls", "Cost"], agents, numeric=(2, 3)),
        "<h2>Calls</h2>",
        table(["Time", "Agent", "Model", "Status", "Input", "Cache write", "Cache read",
               "Output", "Cost", "TTFB"], rows, numeric=range(4, 10), id_="calls"), more,
    ])


def caps(data: Mapping[str, Any], now: float) -> str:
    from ccmeter.money import cap_places, cap_usd, spend_usd

    parts = []
    if data["paused_until"] is not None:
        parts.append(f'<p class="error">Caps paused until {when(data["paused_until"])}.</p>')
    statuses = data["caps"]
    if statuses:
        places = cap_places(s.limit_picousd for s in statuses)
        rows = []
        for s in statuses:
            state = "reached" if s.reached else ("warning" if s.warning else "ok")
            rows.append([escape(s.name), escape(s.scope), escape(cap_usd(s.limit_picousd, places)),
                         escape(spend_usd(s.spent_picousd, s.limit_picousd, places)),
                         svg.meter(s.fraction, width=160, warn_at=_warn_at(s),
                                   title=f"{s.name} used")
                         + f" {percent(s.fraction)}",
                         when(s.resets_at), f'<span class="state-{state}">{state}</span>'])
        parts.append(table(["Cap", "Scope", "Limit", "Spent", "Used", "Resets", "State"], rows,
                           id_="caps"))
    else:
        parts.append("<p>No spending caps set. Set one with <code>ccmeter caps set --daily 20"
                     "</code>.</p>")
    parts.append("<h2>Plan windows (Pro/Max)</h2>")
    windows = data["windows"]
    if not data["plan_calls"]:
        parts.append("<p class=muted>No plan usage seen yet: the 5-hour and 7-day windows "
                     "come from the headers of a subscription's answers.</p>")
        return "".join(parts)
    rows = []
    for w in windows:
        resets = when(w.resets_at) + (" (passed)" if w.resets_at and w.resets_at <= now else "")
        rows.append([escape(w.name), svg.meter(w.utilization, width=160, title=f"{w.name} used")
                     + f" {percent(w.utilization)}", resets, num(w.calls),
                     percent(w.rate_per_hour) + ("/h" if w.rate_per_hour is not None else ""),
                     when(w.runs_out_at) or "–", "yes" if w.binding else ""])
    parts.append(table(["Window", "Used", "Resets", "Calls", "Rate", "Runs out", "Binding"],
                       rows, id_="plan-windows"))
    for w in windows:
        if w.shares:
            top = sorted(w.shares, key=lambda s: -s.share)[:10]
            parts.append(f"<h2>Share of the {escape(w.name)} window by session</h2>")
            parts.append(svg.hbars([((s.key or missing_label("session"))[:8], s.share * 100)
                                    for s in top], value_text=lambda v: f"{v:.0f}%",
                                   hrefs=[session_href(s.key) for s in top],
                                   title=f"Share of the {w.name} window"))
    return "".join(parts)


def waste(data: Mapping[str, Any], pf: Any) -> str:
    totals, spend = data["totals"], data["spend"]
    causes = [(str(r["cause"]), float(r["waste"] or 0)) for r in data["by_cause"]]
    rows = [[_link((r["session"] or missing_label("session"))[:8], session_href(r["session"])),
             usd(r["waste"])] for r in data["by_session"]]
    return "".join([
        filter_form("/waste", pf, stack=False, model=False),  # waste takes no --model
        f'<div class="cards"><div class="card"><div class="sub">Waste</div><div class="big">'
        f'{usd(totals.get("waste"), id_="waste-total")}</div><div class="sub">of '
        f'{usd(spend.get("cost_picousd"))} spent (part of it, never added)</div></div></div>',
        "<h2>By cause</h2>",
        svg.hbars(causes, value_text=usd_axis, title="Waste by cause") if causes
        else "<p class=muted>No cache busts or unread writes in this range.</p>",
        "<h2>Sessions that wasted most</h2>",
        table(["Session", "Waste"], rows, numeric=(1,)) if rows else "",
    ])


def _warn_at(status: Any) -> float:
    """Where a cap's bar turns amber: its first warning (``warn_at`` in ``[caps]``)."""
    return min(status.warn_at) if status.warn_at else 1.0


def _range_label(pf: Any) -> str:
    since = pf.since_text or "first call"
    return f"Spend since {since}" + (f" until {pf.until_text}" if pf.until_text else "")
