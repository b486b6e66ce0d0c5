"""Sessions and live figures: what a session did, call by call and agent by agent, and the
small queries ``watch`` and the status line run (spend since a moment, a session's spend, the
latest plan utilization, burn per project, active agents). No rendering here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ccmeter import store
from ccmeter.record import Record
from ccmeter.reportgroup import TOKEN_FIELDS, Group
from ccmeter.reports import SOURCE_TABLES

if TYPE_CHECKING:
    from ccmeter.reports import Filters

#: The sessions a list shows, most recently active first (ties: a session with wire calls
#: first, then by id, no session first), and their calls by model and project: the ``LIMIT``
#: picks the shown sessions before their calls are grouped (7 days of 100k calls: 20 shown
#: of 389 sessions, 1,907 session x model groups read before: 9.5 -> 2.3 ms). ``{lasts}``:
#: each source's sessions and last call (:data:`SESSION_LAST_SQL`); ``{groups}``: each
#: source's calls of the shown sessions (:data:`SESSION_GROUPS_SQL`), wire first. A
#: ``:limit`` of -1 shows them all.
SESSIONS_SQL = """
WITH shown AS (
    SELECT sid, MAX(last_seen) AS last_seen, MIN(source_rank) AS first_source
    FROM ({lasts})
    GROUP BY sid
    ORDER BY last_seen DESC, first_source, sid
    LIMIT :limit
)
{groups}
ORDER BY shown_last DESC, shown_first_source, session_id, source_rank, model, project
"""
#: One source's sessions with their last call matching the filters (``{where}``);
#: "+session_id": read the time range (the started_ts index), not a skip-scan of every
#: session in the session index.
SESSION_LAST_SQL = """
    SELECT session_id AS sid, MAX(started_ts) AS last_seen, {rank} AS source_rank
    FROM {table}
    {where}
    GROUP BY +session_id"""
#: One source's calls of the shown sessions by model and project; ``IS`` so that calls
#: without a session form one row.
SESSION_GROUPS_SQL = """
SELECT {rank} AS source_rank, '{source}' AS source, session_id, model, project,
    COUNT(*) AS calls,
    SUM(cost_picousd) AS cost_picousd,
    COUNT(cost_picousd) AS priced_calls,
    SUM(call_kind = 'subagent') AS subagent_calls,
    MIN(started_ts) AS first_ts,
    MAX(started_ts) AS last_ts,
    MAX(shown.last_seen) AS shown_last,
    MIN(shown.first_source) AS shown_first_source
FROM shown JOIN {table} ON {table}.session_id IS shown.sid
{where}
GROUP BY session_id, model, project"""

SESSION_PREFIX_SQL = """
SELECT session_id FROM (
    SELECT session_id FROM api_calls WHERE session_id >= :low AND session_id < :high
    UNION
    SELECT session_id FROM transcript_calls WHERE session_id >= :low AND session_id < :high
)
ORDER BY session_id
LIMIT :limit
"""

SESSION_CALLS_SQL = """
SELECT call_uid, started_ts, ttfb_ms, duration_ms, project, agent_id, parent_agent_id,
    call_kind, model, requested_model, status, http_status, stop_reason, error_type,
    input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
    output_tokens, cost_picousd, pricing_note, 'wire' AS source
FROM api_calls
WHERE session_id = :session
UNION ALL
SELECT 'transcript:' || call_key, started_ts, NULL, NULL, project, agent_id, NULL,
    call_kind, model, NULL, 'ok', NULL, stop_reason, NULL,
    input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
    output_tokens, cost_picousd, pricing_note, 'transcript'
FROM imported_calls
WHERE session_id = :session
ORDER BY 2, 1
"""

SPEND_SINCE_SQL = """
SELECT COUNT(*) AS calls, SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced_calls
FROM api_calls WHERE started_ts >= :since
"""

ANY_CALL_SQL = ("SELECT EXISTS (SELECT 1 FROM api_calls) "
                "OR EXISTS (SELECT 1 FROM transcript_calls) AS any_call")

#: The oldest call of either source (both served by their started_ts index).
FIRST_CALL_SQL = ("SELECT MIN(first) AS first FROM (SELECT MIN(started_ts) AS first FROM "
                  "api_calls UNION ALL SELECT MIN(started_ts) FROM transcript_calls)")

SESSION_SPEND_SQL = """
SELECT COUNT(*) AS calls, SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced_calls,
    MAX(project) AS project
FROM api_calls WHERE session_id = :session
"""

#: Served by the partial index ``api_calls_plan`` (migration 2): instant at any size.
LATEST_PLAN_SQL = """
SELECT started_ts, plan_status, plan_5h_utilization, plan_5h_reset, plan_7d_utilization,
    plan_7d_reset, plan_binding_window, plan_overage_status
FROM api_calls
WHERE plan_5h_utilization IS NOT NULL
ORDER BY started_ts DESC
LIMIT 1
"""

#: The active sessions are found in the time range (api_calls_started_ts): "+session_id"
#: keeps SQLite from skip-scanning every session of api_calls_session for them (100k calls:
#: 3.3 -> 0.01 ms for 15 minutes).
RECENT_BY_AGENT_SQL = """
SELECT session_id, agent_id, call_kind, project,
    COUNT(*) AS calls, SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced_calls,
    MIN(started_ts) AS first_ts, MAX(started_ts) AS last_ts
FROM api_calls
WHERE session_id IN (
    SELECT session_id FROM api_calls
    WHERE started_ts >= :active_since AND session_id IS NOT NULL
    GROUP BY +session_id
)
GROUP BY session_id, agent_id, call_kind
"""

BURN_SQL = """
SELECT project, SUM(cost_picousd) AS cost_picousd
FROM api_calls WHERE started_ts >= :since
GROUP BY project
"""


class SessionSummary:
    """One session of a list: its calls, projects, models (calls and cost of each)."""

    __slots__ = ("calls", "cost_picousd", "first_ts", "last_ts", "model_costs", "models",
                 "project_names", "session_id", "subagent_calls", "transcript_calls",
                 "unpriced_calls")

    def __init__(self, session_id: str | None, project_names: set[str], first_ts: float,
                 last_ts: float, calls: int, cost_picousd: int | None, unpriced_calls: int,
                 subagent_calls: int, models: dict[str, int],
                 model_costs: dict[str, int] | None = None, transcript_calls: int = 0) -> None:
        self.session_id = session_id
        self.project_names = project_names
        self.first_ts = first_ts
        self.last_ts = last_ts
        self.calls = calls
        self.cost_picousd = cost_picousd
        self.unpriced_calls = unpriced_calls
        self.subagent_calls = subagent_calls
        self.models = models
        self.model_costs = {} if model_costs is None else model_costs
        #: of ``calls``, those imported from transcripts
        self.transcript_calls = transcript_calls

    def __repr__(self) -> str:
        return f"<SessionSummary {self.session_id} {self.calls} calls>"

    @property
    def project(self) -> str | None:
        """The session's one project; None when no call has one or they mix (the
        ``(no session)`` row of curl and SDK calls): :attr:`projects` says which."""
        return next(iter(self.project_names)) if len(self.project_names) == 1 else None

    def model_mix(self) -> str:
        """``opus-4-8 ×2, haiku-4-5 ×12``: the costliest model first (then by calls), each
        without ``claude-`` and its date (kept where two would read the same), so a narrow
        column still shows the model that mattered whole."""
        parts = sorted(self.models.items(), key=lambda item: (
            -self.model_costs.get(item[0], 0), -item[1], item[0]))
        short = [short_model(name, dated=False) for name, _ in parts]
        names = [short_model(name) if short.count(s) > 1 else s
                 for (name, _), s in zip(parts, short, strict=True)]
        text = ", ".join(f"{n} ×{count}" for n, (_, count) in zip(names[:3], parts, strict=False))
        return text + (f", +{len(parts) - 3} more" if len(parts) > 3 else "")

    def as_row(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "started": self.first_ts,
            "last_call": self.last_ts,
            "project": self.project,
            "projects": len(self.project_names),
            "models": self.model_mix(),
            "model_calls": dict(self.models),
            "calls": self.calls,
            "subagent_calls": self.subagent_calls,
            "cost": self.cost_picousd,
            "unpriced_calls": self.unpriced_calls,
            "source": ("wire" if not self.transcript_calls else "transcript"
                       if self.transcript_calls == self.calls else "wire+transcript"),
            "transcript_calls": self.transcript_calls,
        }


_DATE_SUFFIX = re.compile(r"-\d{8}$")


def short_model(name: str | None, *, dated: bool = True) -> str:
    """``claude-haiku-4-5-20251001`` -> ``haiku-4-5-20251001`` (``haiku-4-5`` undated)."""
    if not name:
        return "?"
    short = name.removeprefix("claude-")
    return short if dated else _DATE_SUFFIX.sub("", short)


def list_sessions(db: Any, filters: Filters, limit: int = 20) -> list[SessionSummary]:
    """The ``limit`` sessions (0: all) with calls matching ``filters``, most recently active
    first."""
    where, params = filters.where()
    params["limit"] = limit or -1
    sources = filters.sources()
    lasts = " UNION ALL ".join(
        SESSION_LAST_SQL.format(table=SOURCE_TABLES[source], where=where, rank=rank)
        for rank, source in enumerate(sources))
    groups = " UNION ALL ".join(
        SESSION_GROUPS_SQL.format(table=SOURCE_TABLES[source], where=where, rank=rank,
                                  source=source)
        for rank, source in enumerate(sources))
    rows = store.query(db, SESSIONS_SQL.format(lasts=lasts, groups=groups), params)
    sessions: dict[str | None, SessionSummary] = {}  # in the query's order
    costs: dict[str | None, int] = {}
    priced: dict[str | None, int] = {}
    for row in rows:
        sid = row["session_id"]
        summary = sessions.get(sid)
        if summary is None:
            summary = sessions[sid] = SessionSummary(
                sid, set(), row["first_ts"], row["last_ts"], 0, None, 0, 0, {}
            )
        summary.first_ts = min(summary.first_ts, row["first_ts"])
        summary.last_ts = max(summary.last_ts, row["last_ts"])
        if row["project"]:
            summary.project_names.add(row["project"])
        summary.calls += row["calls"]
        if row["source"] == "transcript":
            summary.transcript_calls += row["calls"]
        summary.subagent_calls += int(row["subagent_calls"] or 0)
        summary.unpriced_calls += row["calls"] - row["priced_calls"]
        name = row["model"] or "?"
        summary.models[name] = summary.models.get(name, 0) + row["calls"]
        summary.model_costs[name] = (summary.model_costs.get(name, 0)
                                     + int(row["cost_picousd"] or 0))
        costs[sid] = costs.get(sid, 0) + int(row["cost_picousd"] or 0)
        priced[sid] = priced.get(sid, 0) + row["priced_calls"]
    for sid, summary in sessions.items():
        summary.cost_picousd = costs[sid] if priced[sid] else None
    return list(sessions.values())


def resolve_session(db: Any, prefix: str) -> str:
    """The one session id starting with ``prefix``; ValueError lists candidates otherwise."""
    prefix = prefix.strip()
    if not prefix:
        raise ValueError("give a session id or the start of one (see `ccmeter sessions`)")
    found = [
        row["session_id"]
        for row in store.query(
            db, SESSION_PREFIX_SQL, {"low": prefix, "high": prefix + "\U0010ffff", "limit": 11}
        )
    ]
    if prefix in found:
        return prefix
    if not found:
        raise ValueError(f"no session starts with {prefix!r}; list them with `ccmeter sessions`")
    if len(found) > 1:
        shown = ", ".join(found[:10]) + (", …" if len(found) > 10 else "")
        raise ValueError(f"{prefix!r} matches {len(found)} sessions: {shown}; "
                         "give more characters")
    return found[0]


class SessionDetail(Record):
    session_id: str
    calls: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    totals: dict[str, Any]


def session_detail(db: Any, session_id: str) -> SessionDetail:
    """Every call of a session in order, marked by agent, with per-agent subtotals."""
    rows = store.query(db, SESSION_CALLS_SQL, {"session": session_id})
    calls: list[dict[str, Any]] = []
    agents: dict[str | None, Group] = {}
    agent_meta: dict[str | None, dict[str, Any]] = {}
    total = Group()
    for row in rows:
        agent = row["agent_id"] if row["call_kind"] == "subagent" or row["agent_id"] else None
        kind = row["call_kind"] or "main"
        label = "main" if agent is None and kind != "auxiliary" else (
            "auxiliary" if agent is None else f"└ {short_agent(agent)}")
        calls.append({
            "time": row["started_ts"],
            "call_uid": row["call_uid"],
            "agent": label,
            "agent_id": row["agent_id"],
            "parent_agent_id": row["parent_agent_id"],
            "call_kind": kind,
            "model": row["model"],
            "status": row["status"] + (f" {row['http_status']}" if row["status"] ==
                                       "upstream_error" and row["http_status"] else ""),
            **{name: row[name] for name in TOKEN_FIELDS},
            "cache_write_tokens": row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"],
            "cost": row["cost_picousd"],
            "ttfb_ms": None if row["ttfb_ms"] is None else round(row["ttfb_ms"]),
            "duration_ms": None if row["duration_ms"] is None else round(row["duration_ms"]),
            "source": row["source"],
        })
        single = {
            "calls": 1, **{name: row[name] for name in TOKEN_FIELDS},
            "priced_calls": 0 if row["cost_picousd"] is None else 1,
            "cost_picousd": row["cost_picousd"], "first_ts": row["started_ts"],
            "last_ts": row["started_ts"], "project": row["project"],
            "source": row["source"],
        }
        agent_key = agent if agent is not None else ("(auxiliary)" if kind == "auxiliary"
                                                     else None)
        agents.setdefault(agent_key, Group()).add(single, None)
        agent_meta.setdefault(agent_key, {"parent": row["parent_agent_id"], "kind": kind})
        total.add(single, None)
    agent_rows = []

    def agent_order(key: str | None) -> tuple[int, float]:
        rank = 0 if key is None else (1 if key == "(auxiliary)" else 2)
        return rank, agents[key].first_ts or 0.0

    for key in sorted(agents, key=agent_order):
        group = agents[key]
        agent_rows.append({
            "agent": "main" if key is None else key,
            "kind": agent_meta[key]["kind"],
            "parent_agent_id": agent_meta[key]["parent"],
            **group.as_dict(),
        })
    totals = total.as_dict()
    totals["project"] = total.project
    totals["projects"] = total.projects
    return SessionDetail(session_id, calls, agent_rows, totals)


def short_id(value: str | None, length: int = 8) -> str:
    return "" if value is None else value[:length]


def short_agent(value: str | None) -> str:
    """An agent id short enough for a table column, still telling agents apart."""
    if value is None:
        return ""
    return value if len(value) <= 16 else value[:12] + "…"


# --- live figures (watch, statusline) ------------------------------------------------------


def spend_since(db: Any, since: float) -> tuple[int | None, int]:
    """(picodollars of priced calls since ``since`` or None if none priced, unpriced calls)."""
    row = store.query(db, SPEND_SINCE_SQL, {"since": since})[0]
    cost = int(row["cost_picousd"] or 0) if row["priced_calls"] else None
    return cost, int(row["calls"] or 0) - int(row["priced_calls"] or 0)


def has_calls(db: Any) -> bool:
    """Whether anything was ever recorded (an empty database says what to do instead)."""
    return bool(store.query(db, ANY_CALL_SQL)[0]["any_call"])


def first_call(db: Any) -> float | None:
    """When the oldest recorded call was made (None: nothing recorded)."""
    return store.query(db, FIRST_CALL_SQL)[0]["first"]


def session_spend(db: Any, session_id: str) -> dict[str, Any]:
    row = store.query(db, SESSION_SPEND_SQL, {"session": session_id})[0]
    return {
        "calls": int(row["calls"] or 0),
        "cost": int(row["cost_picousd"] or 0) if row["priced_calls"] else None,
        "unpriced_calls": int(row["calls"] or 0) - int(row["priced_calls"] or 0),
        "project": row["project"],
    }


def latest_plan(db: Any) -> dict[str, Any] | None:
    """The most recent subscription-plan utilization the API reported, if any."""
    rows = store.query(db, LATEST_PLAN_SQL)
    return rows[0] if rows else None


def burn_by_project(db: Any, since: float) -> dict[str | None, int]:
    return {
        row["project"]: int(row["cost_picousd"] or 0)
        for row in store.query(db, BURN_SQL, {"since": since})
    }


def active_agents(db: Any, active_since: float) -> list[dict[str, Any]]:
    """Per (session, agent) totals for sessions with a call since ``active_since``."""
    return store.query(db, RECENT_BY_AGENT_SQL, {"active_since": active_since})
