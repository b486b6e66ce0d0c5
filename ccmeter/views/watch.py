"""``ccmeter watch`` frames: today's spend against each cap, burn rate, active sessions, plan
usage, as rich renderables (the live view) or plain text (``--once``). No Typer here: the
command is in :mod:`ccmeter.commands.live`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ccmeter import money
from ccmeter.record import Record
from ccmeter.statusline import _ago, _caps, _local, plan_limits, plan_line
from ccmeter.views.common import NO_CALLS_YET


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


class _Line(Record):
    """A line of text in a frame (a rich ``Text``): its style and styled pieces."""

    style: str | None
    pieces: list[tuple[str, str | None]]

    def append(self, text: str, style: str | None = None) -> None:
        self.pieces.append((text, style))


class _Grid(Record):
    """A borderless table in a frame: title, (header, justify) pairs, rows of cells with a
    row style, and each column's width."""

    title: str
    headers: Sequence[tuple[str, str]]
    rows: Sequence[tuple[Sequence[str], str | None]]
    sizes: list[int]


def _fitted_table(title: str, headers: Sequence[tuple[str, str]],
                  rows: Sequence[tuple[Sequence[str], str | None]], width: int,
                  shrink: int) -> _Grid:
    """A borderless table one line per row: every column as wide as its widest cell except
    column ``shrink`` (a name), which takes what is left and ends in an ellipsis."""
    from ccmeter.render import cell_len
    from ccmeter.untrusted import printable

    # names (projects, session and agent ids) come from headers: shown as text, never as
    # escape sequences or rich markup
    rows = [([printable(cell) for cell in cells], style) for cells, style in rows]
    # terminal cells, not characters: ⛔ and wide names take two
    sizes = [max([cell_len(h), *(cell_len(cells[i]) for cells, _ in rows)])
             for i, (h, _) in enumerate(headers)]
    rest = width - sum(sizes) + sizes[shrink] - 2 * (len(sizes) - 1)
    sizes[shrink] = max(min(sizes[shrink], rest), cell_len(headers[shrink][0]), 8)
    return _Grid(title, headers, rows, sizes)


def _rich(part: _Line | _Grid) -> Any:
    """A frame part as the rich renderable the live view draws."""
    from rich.table import Table
    from rich.text import Text

    if isinstance(part, _Line):
        text = Text(part.pieces[0][0], style=part.style or "")
        for piece, style in part.pieces[1:]:
            text.append(piece, style=style)
        return text
    table = Table(title=part.title, title_justify="left", box=None, pad_edge=False)
    for (header, justify), size in zip(part.headers, part.sizes, strict=True):
        table.add_column(header, justify=justify, no_wrap=True,  # type: ignore[arg-type]
                         overflow="ellipsis", width=size)
    for cells, style in part.rows:
        table.add_row(*(Text(cell) for cell in cells), style=style)
    return table


def watch_renderables(db: Any, cfg: Mapping[str, Any], now: float | None = None,
                      active_minutes: int = 15, width: int = 100) -> list[Any]:
    """The parts of one live ``watch`` frame (rich renderables), newest figures from ``db``,
    laid out for a terminal ``width`` columns wide, each active session's cache waste and
    loop warnings included."""
    return [_rich(part) for part in frame_parts(db, cfg, now, active_minutes, width,
                                                waste=True)]


def frame_parts(db: Any, cfg: Mapping[str, Any], now: float | None = None,
                active_minutes: int = 15, width: int = 100, *,
                waste: bool = False) -> list[_Line | _Grid]:
    """The parts of one ``watch`` frame, newest figures from ``db``, laid out for a
    terminal ``width`` columns wide. ``waste``: under each active session, its cache waste
    and loop warnings (pricing the waste loads the catalog: the live ``watch`` shows them,
    ``watch --once`` answers without)."""
    from ccmeter import periods, render
    from ccmeter.sessions import active_agents, burn_by_project, has_calls, latest_plan, spend_since

    now = time.time() if now is None else now
    head = _Line("bold", [(f"ccmeter watch · {_local(now, '%Y-%m-%d %H:%M:%S')}\n", None)])
    parts: list[_Line | _Grid] = [head]
    burn = burn_by_project(db, now - 3600)
    if not has_calls(db):
        head.append(NO_CALLS_YET)
    else:
        today, unpriced_today = spend_since(db, periods.local_midnight(now))
        head.append(f"today {money.spend_usd(today) if today is not None else '$0.00'}",
                    style="bold")
        if unpriced_today:
            head.append(f" (+{render.plural(unpriced_today, 'unpriced call')})", style="yellow")
        head.append(f" · burn {money.format_usd(sum(burn.values()))}/h over the last hour")

    statuses, why = _caps(db, cfg, now)
    if statuses is None:
        parts.append(_Line("dim", [(why or "caps: unavailable", None)]))
    elif not statuses:
        parts.append(_Line("dim", [("no caps set (ccmeter caps set --daily 20)", None)]))
    else:
        parts.append(_caps_table(statuses, burn, now, width))

    agents = active_agents(db, now - active_minutes * 60)
    if agents:
        notes = (_session_notes(db, cfg, now, {row["session_id"] for row in agents})
                 if waste else None)
        parts.append(_active_table(agents, now, active_minutes, width, notes))
    else:
        parts.append(_Line("dim", [(f"no active sessions (no call in the last "
                                    f"{active_minutes} min)", None)]))

    plan = latest_plan(db)
    if plan is not None:
        line = plan_line(plan, now, long=True, limits=plan_limits(cfg),
                         runs_out=_plan_run_out(db, now))
        parts.append(_Line(None, [(line, None)]))
    return parts


def _plan_run_out(db: Any, now: float) -> dict[str, float]:
    """When each plan window runs out at the current rate, if before it resets."""
    from ccmeter import planwindows, store

    calls = planwindows.from_rows(store.plan_calls(db, now - 7 * 86400))
    return {w.name: w.runs_out_at for w in planwindows.plan_windows(calls, now)
            if w.runs_out_at is not None}


def _caps_table(statuses: Sequence[Any], burn: dict[str | None, int], now: float,
                width: int) -> _Grid:
    """Each cap's spend, limit, use, reset and pace; the bar only where there is room."""
    from ccmeter import render

    places = money.cap_places(s.limit_picousd for s in statuses)  # as `caps` shows them
    headers = [("Cap", "left"), ("Spent", "right"), ("Limit", "right"), ("Used", "right"),
               ("", "left"), ("Resets", "left"), ("At this pace", "left")]
    rows = []
    for status in statuses:
        style = "red" if status.fraction >= 1 else ("yellow" if status.fraction >= 0.8
                                                    else None)
        mark = "⛔ " if status.fraction >= 1 else ("⚠ " if status.fraction >= 0.8 else "")
        rows.append(([
            mark + getattr(status, "label", f"{status.name} {status.scope}"),
            money.spend_usd(status.spent_picousd, status.limit_picousd, places),
            money.cap_usd(status.limit_picousd, places),
            render.format_percent(status.fraction),
            render.bar(status.fraction, 10),
            _local(status.resets_at, "%a %H:%M") if status.resets_at else "—",
            _eta(status, burn, now),
        ], style))
    if width < 100:  # the bar repeats Used; the cap's name needs the room more
        headers.pop(4)
        rows = [(cells[:4] + cells[5:], style) for cells, style in rows]
    return _fitted_table("Caps", headers, rows, width, shrink=0)


def _session_notes(db: Any, cfg: Mapping[str, Any], now: float,
                   session_ids: set[str]) -> dict[str, tuple[int | None, list[str]]]:
    """Each active session's cache waste and loop warnings (ccmeter.wastereport); none
    when the database cannot tell."""
    import sqlite3

    from ccmeter import wastereport

    out = {}
    for sid in session_ids:
        if not sid:
            continue
        try:
            lost, notes = wastereport.session_findings(db, sid, cfg, now)
        except sqlite3.Error:
            return {}
        if lost != 0 or notes:
            out[sid] = (lost, notes)
    return out


def _active_table(agents: Sequence[Mapping[str, Any]], now: float, minutes: int,
                  width: int = 100,
                  notes: Mapping[str, tuple[int | None, list[str]]] | None = None) -> _Grid:
    from ccmeter import reports
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
    waste_lines: list[int] = []
    ordered = sorted(by_session.items(), key=lambda item: -total(item[1])[2])
    for sid, rows in ordered:
        calls, cost, last = total(rows)
        project = next((r["project"] for r in rows if r["project"]), reports.NO_PROJECT)
        lines.append(([short_id(sid), project, _ago(now - last), f"{calls:,}", cost], None))
        lost, warnings = (notes or {}).get(sid, (0, []))
        if lost != 0:  # the cache waste: a line of its own, its amount at the table's places
            lines.append((["  cache waste", "", "", "", lost], "dim"))
            waste_lines.append(len(lines) - 1)
        for note in warnings:  # a loop, a jump in spend
            lines.append(([f"  {note}", "", "", "", ""], "yellow"))
        for row in sorted(rows, key=lambda r: -(r["cost_picousd"] or 0)):
            if row["call_kind"] != "subagent" and not row["agent_id"]:
                continue
            label = f"  └ {short_agent(row['agent_id']) or 'subagent'}"
            cost = row["cost_picousd"] if row["priced_calls"] else None
            lines.append(([label, "", _ago(now - row["last_ts"]), f"{row['calls']:,}", cost],
                          "dim"))
    places = money.usd_places(cells[4] for cells, _ in lines if cells[4] != "")
    for index, (cells, _) in enumerate(lines):
        if index in waste_lines:
            from ccmeter.wastereport import waste_note

            cells[0] = f"  {waste_note(cells[4], places)}"
            cells[4] = ""
        elif cells[4] != "":
            cells[4] = money.format_usd(cells[4], places)
    headers = [("Session", "left"), ("Project", "left"), ("Last call", "left"),
               ("Calls", "right"), ("Cost", "right")]
    return _fitted_table(f"Active sessions (a call in the last {minutes} min)", headers,
                         lines, width, shrink=1)


def render_watch_frame(db: Any, cfg: Mapping[str, Any] | None = None, now: float | None = None,
                       *, active_minutes: int = 15, width: int = 100,
                       waste: bool = False) -> str:
    """One ``watch`` frame as plain text (no escape codes): for ``--once`` and tests."""
    parts = frame_parts(db, cfg or {}, now, active_minutes, width, waste=waste)
    text = _plain_frame(parts, width)
    if text is not None:
        return text
    from rich.console import Group

    from ccmeter.render import make_console

    buffer = io.StringIO()
    console = make_console(buffer, width=width)
    console.print(Group(*(_rich(part) for part in parts)))
    return buffer.getvalue()


def _plain_frame(parts: Sequence[_Line | _Grid], width: int) -> str | None:
    """The frame as rich prints it without colour, written directly (see
    :mod:`ccmeter.plaintable`); None for anything but the plain case."""
    from ccmeter.plaintable import fit, plain, wrap

    out: list[str] = []
    for part in parts:
        if isinstance(part, _Line):
            for line in "".join(piece for piece, _ in part.pieces).split("\n"):
                wrapped = wrap(line, width, pad=False) if line else [""]
                if wrapped is None:
                    return None
                out += wrapped
            continue
        cells = [[h for h, _ in part.headers], *(list(cells) for cells, _ in part.rows)]
        if not all(plain(cell) for row in cells for cell in row):
            return None
        if not all(part.sizes):
            return None  # rich gives a column of width 0 a cell anyway
        last = len(part.sizes) - 1
        table_width = sum(part.sizes) + 2 * last  # one cell of padding each side inside
        if table_width > width:
            return None
        title = wrap(part.title, table_width)
        if title is None:
            return None
        out += title
        for row in cells:
            texts = []
            for index, (cell, size, (_, justify)) in enumerate(zip(
                    row, part.sizes, part.headers, strict=True)):
                cell = fit(cell, size, right=justify == "right")
                texts.append((" " if index else "") + cell + (" " if index < last else ""))
            out.append("".join(texts))
    return "".join(line + "\n" for line in out)


def _minutes(text: str, option: str) -> int:
    """Whole minutes (at least 1) for a length in the one duration grammar; a bare number
    is minutes, as ``--active`` always took."""
    from ccmeter import periods

    value = text.strip()
    length = periods.parse_duration(value + "m" if value.isdigit() else value,
                                    what=f"length for {option}")
    return max(1, round(length.approx_seconds / 60))


def print_once(active: str) -> None:
    """``watch --once`` (or ``watch`` off a terminal): one frame as plain text on stdout."""
    import sys

    from ccmeter import config
    from ccmeter.render import _file_width, make_console
    from ccmeter.views.common import open_db

    active_minutes = _minutes(active, "--active")
    cfg = config.load_config()
    db = open_db()
    try:
        # off a terminal the width is COLUMNS or 200, as rich would take it
        width = (make_console(sys.stdout).width if sys.stdout.isatty() else _file_width())
        sys.stdout.write(render_watch_frame(db, cfg, active_minutes=active_minutes,
                                            width=width))
    except KeyboardInterrupt:
        pass
    finally:
        db.conn.close()
