"""``ccmeter statusline``: one short line for Claude Code's status bar.

Claude Code runs it after every turn, so it stays lean: no Typer, no rich, no mitmproxy;
the database through a plain read-only sqlite3 connection. See docs/reports.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

from ccmeter import config


def _local(ts: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    from datetime import datetime

    return "now" if ts is None else datetime.fromtimestamp(ts).strftime(fmt)


def _ago(seconds: float) -> str:
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m ago"


def _caps(db: Any, cfg: Mapping[str, Any], now: float, session_id: str | None = None
          ) -> tuple[list[Any] | None, str | None]:
    """(cap statuses, or None with why not); per-session caps only for ``session_id``."""
    from ccmeter.caps.guard import cap_statuses

    try:
        if session_id:
            return list(cap_statuses(db, cfg, now, session_id=session_id)), None
        return list(cap_statuses(db, cfg, now)), None
    except config.CCMeterError as exc:
        return None, f"caps: {exc}"


def plan_limits(cfg: Mapping[str, Any]) -> tuple[float, dict[str, float]]:
    """(the plan warning fraction, each plan window's cap) from ``[caps]``; a value that is
    not understood is left out here (``ccmeter caps`` and the proxy say why)."""
    from ccmeter.caps.policy import DEFAULT_PLAN_WARN_AT, parse_percent

    table = cfg.get("caps")
    if not isinstance(table, Mapping):
        table = {}
    found: dict[str, float | None] = {}
    for key in ("plan_warn_at", "plan_5h", "plan_7d"):
        try:
            found[key] = parse_percent(table.get(key), key)
        except config.CCMeterError:
            found[key] = None
    caps = {name: limit for name in ("5h", "7d")
            if (limit := found[f"plan_{name}"]) is not None}
    return found["plan_warn_at"] or DEFAULT_PLAN_WARN_AT, caps


def plan_line(plan: Mapping[str, Any], now: float, *, long: bool = False,
              limits: tuple[float, Mapping[str, float]] | None = None,
              runs_out: Mapping[str, float] | None = None) -> str:
    """``plan 5h 34% (resets 14:00) · 7d 12% (resets Tue 09:00)`` from the latest headers;
    ``⚠`` on a window at the plan warning or more, ``⛔`` on one at its plan cap (``limits``:
    :func:`plan_limits`); ``runs_out``: when a window runs out at the current rate."""
    from ccmeter.render import format_percent

    warn_at, caps = limits if limits is not None else (1.0, {})
    parts = []
    for window, label in (("5h", "5h"), ("7d", "7d")):
        used = plan.get(f"plan_{window}_utilization")
        reset = plan.get(f"plan_{window}_reset")
        if used is None:
            continue
        if reset is not None and reset <= now:
            parts.append(f"{label} reset" if long else f"{label} –")
            continue
        cap = caps.get(window)
        mark = "⛔ " if cap is not None and used >= cap else ("⚠ " if used >= warn_at else "")
        text = f"{mark}{label} {format_percent(used)}"
        if long and cap is not None:
            text += f" of {format_percent(cap)} cap"
        if long and reset is not None:
            text += f" (resets {_local(reset, '%H:%M' if reset - now < 86400 else '%a %H:%M')}"
            out = (runs_out or {}).get(window)
            if out is not None:
                text += f", runs out ~{_local(out, '%H:%M' if out - now < 86400 else '%a %H:%M')}"
            text += ")"
        parts.append(text)
    if not parts:
        return ""
    prefix = "plan " if long else ""
    status = plan.get("plan_status")
    suffix = f" · status {status}" if long and status else ""
    seen = f" · seen {_ago(now - plan['started_ts'])}" if long and plan.get("started_ts") else ""
    return prefix + " · ".join(parts) + suffix + seen


MINIMAL_LINE = "ccmeter"
STATUSLINE_BUDGET_S = 2


def _stdin_plan(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """Plan usage from the status-line JSON's ``rate_limits`` (subscribers), if present."""
    limits = data.get("rate_limits")
    if not isinstance(limits, Mapping):
        return None
    plan: dict[str, Any] = {}
    for window, names in (("5h", ("five_hour", "5h", "5_hour", "session")),
                          ("7d", ("seven_day", "7d", "7_day", "weekly"))):
        for name in names:
            entry = limits.get(name)
            if not isinstance(entry, Mapping):
                continue
            used = entry.get("used_percentage", entry.get("utilization"))
            if isinstance(used, int | float) and not isinstance(used, bool):
                plan[f"plan_{window}_utilization"] = used / 100 if "used_percentage" in entry \
                    else used
                reset = entry.get("resets_at")
                plan[f"plan_{window}_reset"] = reset if isinstance(reset, int | float) else None
                break
    return plan or None


ESTIMATE_MARK = "(Claude Code's estimate)"


def claude_code_estimate(data: Mapping[str, Any]) -> str | None:
    """``session ≈$0.0937 (Claude Code's estimate)`` from the ``cost.total_cost_usd`` Claude
    Code sends, for a session ccmeter has no call of (run without the proxy, or before it
    started); None when the JSON has no usable figure."""
    from decimal import Decimal, InvalidOperation

    from ccmeter import money

    cost = data.get("cost")
    usd = cost.get("total_cost_usd") if isinstance(cost, Mapping) else None
    if isinstance(usd, bool) or not isinstance(usd, int | float):
        return None
    try:
        amount = Decimal(repr(usd))
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0 or amount > 10**6:
        return None
    return f"session ≈{money.format_usd(int(amount.scaleb(12)))} {ESTIMATE_MARK}"


def _meter_warning(paths: config.Paths) -> list[str]:
    """``⚠ metering off`` while a running proxy cannot write its rows, ``⚠ config not
    applied`` while one keeps old caps or prices because config.toml is wrong (see
    ccmeter.proxies: a few small files read, no database)."""
    from ccmeter import proxies

    running = proxies.running(paths, clean=False)
    out = []
    if any(doc.get("metering") == "failing" for doc in running):
        out.append("⚠ metering off (ccmeter doctor)")
    if any(doc.get("config_error") for doc in running):
        out.append("⚠ config not applied (ccmeter doctor)")
    if any(doc.get("share_error") for doc in running):
        out.append("⚠ team share unreachable (ccmeter doctor)")
    return out


def _waste_notes(db: Any, session_id: str, cfg: Mapping[str, Any], now: float) -> list[str]:
    """The session's cache waste and a loop warning (see ccmeter.wastereport); nothing when
    the database is older than the columns they read."""
    import sqlite3

    from ccmeter import wastereport

    try:
        return wastereport.session_notes(db, session_id, cfg, now)
    except sqlite3.Error:
        return []


def _mark(fraction: float) -> str:
    return "⛔ " if fraction >= 1 else ("⚠ " if fraction >= 0.8 else "")


def statusline_text(raw: str, *, now: float | None = None,
                    cfg: Mapping[str, Any] | None = None) -> str:
    """The status line for the JSON Claude Code sent (see docs/reports.md).

    ``Opus 4.8 · session $0.09 · today $4.56/$20 (23%) · 5h 34% · 7d 12%``; a ``⚠`` when a cap
    is at 80 % or more, ``⛔`` when one is reached. Reads only indexed rows.
    """
    import json  # here: `watch` imports this module for its formatting

    from ccmeter import money, periods, render, sessions, store

    now = time.time() if now is None else now
    data = json.loads(raw) if raw.strip() else {}
    if not isinstance(data, Mapping):
        data = {}
    model = data.get("model") if isinstance(data.get("model"), Mapping) else {}
    name = model.get("display_name") or sessions.short_model(
        str(model.get("id") or "").split("[")[0]) if model else ""
    parts: list[str] = [str(name)] if name else []
    paths = config.paths()
    parts += _meter_warning(paths)
    if not paths.db_file.exists():
        estimate = claude_code_estimate(data)
        return " · ".join([*parts, *([estimate] if estimate else []),
                           "ccmeter: no calls metered yet"])
    cfg = config.load_config(paths) if cfg is None else cfg
    db = store.connect_reader(paths.db_file)
    try:
        sid = data.get("session_id")
        if isinstance(sid, str) and sid:
            spent = sessions.session_spend(db, sid)
            text = f"session {money.format_usd(spent['cost']) if spent['calls'] else '$0.00'}"
            if not spent["calls"]:  # a session ccmeter never saw: Claude Code's own figure
                text = claude_code_estimate(data) or text
            elif spent["cost"] is None:
                text = "session unpriced"
            elif spent["unpriced_calls"]:
                text += "+"
            parts.append(text)
            if spent["calls"]:
                parts += _waste_notes(db, sid, cfg, now)
        statuses, _ = _caps(db, cfg, now, sid if isinstance(sid, str) and sid else None)
        project = spent["project"] if sid and isinstance(sid, str) else None
        mine = [s for s in statuses or [] if s.scope == "global"
                or (project and s.scope == f"project:{project}")
                or (sid and s.scope == f"session:{sid}")]
        daily = next((s for s in mine if s.name == "daily" and s.scope == "global"), None)
        if daily is not None:
            parts.append(_mark(daily.fraction) + (
                f"today {money.spend_usd(daily.spent_picousd, daily.limit_picousd)}/"
                f"{money.cap_usd(daily.limit_picousd)} "
                f"({render.format_percent(daily.fraction)})"))
        else:
            today, _unpriced = sessions.spend_since(db, periods.local_midnight(now))
            parts.append(f"today {money.spend_usd(today or 0)}")
        others = [s for s in mine if s is not daily and s.fraction >= 0.8]
        if others:
            worst = max(others, key=lambda s: s.fraction)
            scope = "" if worst.scope == "global" else (
                "session " if worst.scope.startswith("session:") else "project ")
            parts.append(f"{_mark(worst.fraction)}{scope}{worst.name} "
                         f"{render.format_percent(worst.fraction)}")
        plan = sessions.latest_plan(db) or _stdin_plan(data)
        if plan:
            line = plan_line(plan, now, limits=plan_limits(cfg))
            if line:
                parts.append(line)
    finally:
        db.close()
    return " · ".join(parts)


def main() -> None:
    """Read the JSON on stdin, print the line; never fail (a minimal line on any problem)."""
    import signal

    def give_up(*_: object) -> None:
        raise TimeoutError("status line took too long")

    alarm = hasattr(signal, "SIGALRM")
    try:
        if alarm:
            signal.signal(signal.SIGALRM, give_up)
            signal.alarm(STATUSLINE_BUDGET_S)
        line = statusline_text(sys.stdin.read())
    except BaseException:
        line = MINIMAL_LINE
    finally:
        if alarm:
            signal.alarm(0)
    from ccmeter.untrusted import printable

    # the model's name comes from the JSON on stdin: no escape sequence reaches the terminal
    sys.stdout.write(printable(line) + "\n")
    sys.stdout.flush()
