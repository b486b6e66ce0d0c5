"""``ccmeter report --format html``: the report as one self-contained HTML file to share.

Everything is inline (style, SVG charts); there is no script and nothing to fetch, so the
file opens the same offline, from a mail attachment or a chat. The rows and totals are the
very :class:`ccmeter.reports.Report` the table, JSON and CSV formats print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from ccmeter.dashboard import svg
from ccmeter.dashboard.layout import num, page, table, usd, usd_axis, when
from ccmeter.money import usd_places
from ccmeter.reports import TIME_DIMENSIONS, missing_label


class Section:
    """One report in the file: its title, caption lines and the report itself."""

    def __init__(self, title: str, report: Any, caption: Mapping[str, str]) -> None:
        self.title = title
        self.report = report
        self.caption = caption


def report_html(title: str, sections: Sequence[Section], columns_for: Any) -> str:
    """The whole document. ``columns_for(report)`` gives the report's columns as the
    table format has them (:func:`ccmeter.views.report.report_columns`)."""
    body = []
    for index, section in enumerate(sections):
        if len(sections) > 1:
            body.append(f"<h2>{escape(section.title)}</h2>")
        body.append(_section(section, columns_for(section.report), index))
    return page(title, "".join(body), nav=False)


def _section(section: Section, columns: Sequence[Any], index: int) -> str:
    rep = section.report
    totals = rep.totals
    notes = "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in section.caption.items())
    parts = [f'<ul class="muted">{notes}</ul>' if notes else ""]
    parts.append(
        f'<div class="cards"><div class="card"><div class="sub">Cost</div><div class="big">'
        f'{usd(totals["cost"], id_=f"total-cost-{index}")}</div></div>'
        f'<div class="card"><div class="sub">Calls</div><div class="big">{num(totals["calls"])}'
        f'</div></div><div class="card"><div class="sub">Caching saved</div><div class="big">'
        f'{usd(totals["cache_savings"])}</div></div></div>')
    if not totals["calls"]:
        parts.append("<p>No calls in this period.</p>")
        return "".join(parts)
    parts.append(chart(rep))
    shown = [c for c in columns if c.kind != "spark"]
    places = usd_places([*(r.get("cost") for r in rep.rows), totals["cost"]])
    rows = [[_cell(row.get(c.key), c, places, c.key) for c in shown] for row in rep.rows]
    rows.append([f"<b>{_cell(totals.get(c.key), c, places, c.key)}</b>" if i else "<b>Total</b>"
                 for i, c in enumerate(shown)])
    numeric = [i for i, c in enumerate(shown) if c.kind in ("int", "usd")]
    parts.append(table([c.header for c in shown], rows, numeric=numeric, id_=f"report-{index}"))
    return "".join(parts)


def chart(rep: Any) -> str:
    """Bars over time (stacked by the other grouping when there is one), else horizontal
    bars by the grouping."""
    dims = rep.dimensions
    time_dim = next((d for d in dims if d in TIME_DIMENSIONS), None)
    if time_dim is None:
        dim = dims[0]
        weights: dict[str, float] = {}
        for row in rep.rows:
            name = str(row[dim] or missing_label(dim))
            weights[name] = weights.get(name, 0.0) + float(row["cost"] or 0)
        items = sorted(weights.items(), key=lambda kv: -kv[1])[:25]
        return svg.hbars([(n if dim != "session" else n[:8], v) for n, v in items],
                         value_text=usd_axis, title=f"Cost by {dim}")
    labels = sorted({row[time_dim] for row in rep.rows})
    position = {label: i for i, label in enumerate(labels)}
    other = next((d for d in dims if d != time_dim), None)
    series: dict[str, list[float]] = {}
    for row in rep.rows:
        name = "cost" if other is None else str(row[other] or missing_label(other))
        values = series.setdefault(name, [0.0] * len(labels))
        values[position[row[time_dim]]] += float(row["cost"] or 0)
    series = svg.top_series(series)
    return (svg.stacked_bars(labels, series, value_text=usd_axis,
                             title=f"Cost by {time_dim}")
            + (svg.legend(list(series)) if other else ""))


def _cell(value: Any, column: Any, places: int, key: str) -> str:
    if column.kind == "usd":
        return usd(value, places=places)
    if column.kind == "int":
        return num(value)
    if column.kind == "datetime":
        return escape(when(value))
    if value is None:
        return "" if key not in ("project", "model", "session") else escape(missing_label(key))
    return escape(str(value))
