"""``ccmeter sessions`` and ``ccmeter session``: Claude Code sessions, and one session's calls.

Each command resolves paths and options, reads :mod:`ccmeter.sessions` and hands the rows to
:mod:`ccmeter.render`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ccmeter import config, money
from ccmeter.commands.common import (
    FormatOption,
    ModelOption,
    ProjectOption,
    SinceOption,
    SourceOption,
    UntilOption,
    check_format,
    iso,
    open_db,
)
from ccmeter.statusline import _local


def register(app: typer.Typer) -> None:
    app.command()(sessions)
    app.command()(session)


def sessions(
    since: SinceOption = "7d",
    until: UntilOption = None,
    project: ProjectOption = None,
    model: ModelOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=0,
                     help="Show at most this many sessions (0 = all).")] = 20,
    fmt: FormatOption = "table",
    source: SourceOption = "all",
) -> None:
    """Recent Claude Code sessions, most recently active first: models, calls, cost.

    Examples:
      ccmeter sessions
      ccmeter sessions --since 30d --project api-server --limit 50
    """
    from ccmeter.views.sessions import run

    run(since, until, project, model, limit, fmt, source)


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

    fmt = check_format(fmt)
    db = open_db()
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
    if machine or any(c["source"] == "transcript" for c in detail.calls):
        columns.append(render.Column("source", "Source"))
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
            "projects": totals.get("projects"),
            "first_call": iso(totals.get("first_call")),
            "last_call": iso(totals.get("last_call")),
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
    columns = [c.replace(whole=True) if c.key == "model"
               else c.replace(keep=True) if c.key == "status"
               else c.replace(drop=drops[c.key]) if c.key in drops else c
               for c in columns
               if c.key != "status" or any(r.get("status") != "ok" for r in rows)]
    first = _local(totals.get("first_call"))
    project = totals.get("project") or (reports.SEVERAL_PROJECTS if totals.get("projects")
                                        else reports.NO_PROJECT)
    title = (f"Session {detail.session_id} · {project} · "
             f"{first} · {render.plural(totals['calls'], 'call')} · "
             f"{money.format_usd(totals['cost'])}")
    render.emit(rows, columns, fmt, title=title, totals=totals)
    if len(detail.agents) > 1 or any(a["kind"] != "main" for a in detail.agents):
        sys.stdout.write("\n")
        render.emit(detail.agents, agent_columns, fmt, title="By agent")
