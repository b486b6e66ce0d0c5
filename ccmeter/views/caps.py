"""``ccmeter caps`` without a subcommand, at run time: each cap's spend, what remains, and when
it resets. No Typer here: the command and its options are in :mod:`ccmeter.commands.caps`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ccmeter import config, render, store
from ccmeter.caps.guard import cap_statuses
from ccmeter.caps.policy import parse_policy
from ccmeter.money import cap_places, cap_usd, floor_usd, spend_usd, usd_string
from ccmeter.views.common import echo, open_db


def show(fmt: str, session: str | None) -> None:
    if fmt not in render.FORMATS:
        raise config.CCMeterError(f"unknown format {fmt!r}; one of {', '.join(render.FORMATS)}")
    paths = config.paths()
    cfg = config.load_config(paths)
    now = datetime.now().timestamp()
    from ccmeter.tiers import with_cached_view

    policy = with_cached_view(parse_policy(cfg), cfg, now)
    db = open_db()  # a database that cannot be opened: the one message report gives
    try:
        if session is not None:
            session = _resolve_session(db, session)
        statuses = cap_statuses(db, cfg, now, session_id=session)
        plan_now = store.newest_plan_row(db) if policy.plan_caps() else None
    finally:
        db.conn.close()
    paused = policy.paused_until if policy.paused(now) else None
    meta: dict[str, Any] = {"mode": policy.mode, "window": policy.window,
                            "on_error": policy.on_error}
    if policy.timezone:
        meta["timezone"] = policy.timezone
    if paused is not None:
        meta["paused_until"] = (render.format_datetime(paused) if fmt == "table"
                                else render.iso_datetime(paused))
    meta["loop"] = (f"refuse a session's next request after the same tool call "
                    f"{policy.loop} times" if policy.loop else
                    "warn only (set a cap: ccmeter caps set --loop 8)") if fmt == "table" else (
                        policy.loop)
    meta.update(_call_caps(policy, fmt, plan_now, now))
    sessions_paused = [(sid, until) for sid, until in policy.paused_sessions if until > now]
    if sessions_paused:
        meta["paused_sessions"] = ", ".join(
            f"{sid[:8]} until {render.format_datetime(until)}" for sid, until in sessions_paused
        ) if fmt == "table" else {sid: render.iso_datetime(u) for sid, u in sessions_paused}
    # caps and their spend: one precision, the caps' own (money.cap_places), in every view
    places = cap_places(c.limit_picousd for c in policy.caps)
    per_session = [c for c in policy.caps if c.scope == "per_session"]
    if per_session and session is None:
        meta["per_session"] = ", ".join(
            f"{c.name} {cap_usd(c.limit_picousd, places)}"
            for c in per_session) + " (spend: --session ID)"
    if not policy.caps and fmt == "table":
        if policy.forecasts_first or policy.plan_caps():
            echo("No caps on spend per hour, day, week or month. Set one with: "
                 "ccmeter caps set --daily 20")
        else:
            echo("No spending caps set. Set one with: ccmeter caps set --daily 20")
        if paused is not None:
            echo(f"(paused until {render.format_datetime(paused)})")
        echo(f"Loop guard: {meta['loop']}.")
        echo(f"Per-call cap: {meta['per_call']}.")
        echo(f"Plan windows: {meta['plan']}.")
        if sessions_paused:
            echo(f"Paused sessions: {meta['paused_sessions']}.")
        return
    rows: list[dict[str, Any]] = [{
        "cap": s.name, "scope": s.scope, "limit": s.limit_picousd, "spent": s.spent_picousd,
        "remaining": s.remaining_picousd, "used": s.fraction, "resets": s.resets_at,
        "window": s.window,
        "state": "reached" if s.reached else ("warning" if s.warning else "ok"),
    } for s in statuses]
    # on a narrow terminal Window, Remaining and State go; Used and Resets stay
    columns = [
        render.Column("cap", "Cap"), render.Column("scope", "Scope"),
        render.Column("limit", "Limit", "usd"), render.Column("spent", "Spent", "usd", keep=True),
        render.Column("remaining", "Remaining", "usd", drop=2),
        render.Column("used", "Used", "percent", keep=True),
        render.Column("resets", "Resets", "datetime", keep=True),
        render.Column("window", "Window", drop=3), render.Column("state", "State", drop=1),
    ]
    if fmt == "table":
        rows = [{**row, "scope": _scope_label(str(row["scope"])),
                 "limit": cap_usd(row["limit"], places),
                 "spent": spend_usd(row["spent"], row["limit"], places),
                 "remaining": floor_usd(row["remaining"], places)} for row in rows]
        columns = [c.replace(kind="number") if c.kind == "usd" else c for c in columns]
    title = "Spending caps" + (" — PAUSED" if paused is not None else "")
    render.emit(rows, columns, fmt, title=title, meta=meta)


def _call_caps(policy: Any, fmt: str, plan_now: dict[str, Any] | None,
               now: float) -> dict[str, Any]:
    """The per-call and plan-window caps, for the table's notes or the JSON's ``meta``
    (percents as fractions there, as every ``used`` is)."""
    from ccmeter.caps.callcaps import PlanSeen

    projects = dict(policy.per_call_projects)
    seen = PlanSeen()
    if plan_now is not None:
        seen.saw(plan_now)
    refusing = seen.refusal(policy, now)
    if fmt != "table":
        return {"per_call_usd": usd_string(policy.per_call_picousd),
                "per_call_projects_usd": {k: usd_string(v) for k, v in projects.items()},
                "plan_5h": policy.plan_5h, "plan_7d": policy.plan_7d,
                "plan_warn_at": policy.plan_warn_at, "plan_refusing": refusing is not None}
    per_call = [cap_usd(policy.per_call_picousd)] if policy.per_call_picousd else []
    per_call += [f"project {name} {cap_usd(pico)}" for name, pico in projects.items()]
    caps = [f"{name} window is {limit:.0%} used" for name, limit in policy.plan_caps()]
    plan = ("refuse calls once the " + " or the ".join(caps) + ", "
            if caps else "no cap, ") + f"warn at {policy.plan_warn_at:.0%} (ccmeter plan)"
    if refusing is not None:
        plan += "; REACHED: " + refusing.removeprefix("ccmeter: ").split("; it resets")[0] + (
            ", refusing calls until it resets")
    return {
        "per_call": ("refuse a call whose forecast input cost is above "
                     + ", ".join(per_call)) if per_call else
        "none (set one: ccmeter caps set --per-call 2)",
        "plan": plan,
    }


def _scope_label(scope: str) -> str:
    """A session's scope by the short id reports show (``session:72292d5c``)."""
    kind, _, name = scope.partition(":")
    return f"{kind}:{name[:8]}" if kind == "session" else scope


def _resolve_session(db: Any, prefix: str) -> str:
    """The full id of the one session starting with ``prefix`` (as ``ccmeter session``)."""
    from ccmeter import sessions

    try:
        return sessions.resolve_session(db, prefix)
    except ValueError as exc:
        raise config.CCMeterError(str(exc)) from None
