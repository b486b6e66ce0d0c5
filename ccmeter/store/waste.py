"""The reads behind ``ccmeter waste`` and the session's waste in the status line and ``watch``:
each call's cache usage and fingerprints, and the spend the waste is part of."""

from __future__ import annotations

from typing import Any

from ccmeter.store.db import query

_CACHE_COLUMNS = """call_uid, started_ts, session_id, agent_id, call_kind, project, model,
    provider, input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
    speed, service_tier, inference_geo, cost_picousd, cache_key_json, cache_change"""

#: Every call that may hold or use a cache in [:start, :end) (the caller widens the range by
#: the longest cache lifetime on both sides, so each call's neighbours are there too).
CACHE_CALLS_SQL = f"""
SELECT {_CACHE_COLUMNS} FROM api_calls
WHERE started_ts >= :start AND started_ts < :end AND session_id IS NOT NULL
  AND status != 'blocked'
ORDER BY started_ts
"""

#: One session's calls (``ccmeter waste --session``, the status line, ``watch``).
SESSION_CACHE_CALLS_SQL = f"""
SELECT {_CACHE_COLUMNS} FROM api_calls
WHERE session_id = :session AND status != 'blocked'
ORDER BY started_ts
"""

#: What the same filter spends, as ``ccmeter report`` sums it (waste is a part of it).
SPEND_SQL = """
SELECT COUNT(*) AS calls, COALESCE(SUM(cost_picousd), 0) AS cost_picousd,
       SUM(cost_picousd IS NULL) AS unpriced_calls
FROM api_calls
WHERE started_ts >= :start AND started_ts < :end
  AND (:project IS NULL OR project = :project)
  AND (:session IS NULL OR session_id = :session)
"""


def cache_calls(db: Any, start: float, end: float) -> list[dict[str, Any]]:
    return query(db, CACHE_CALLS_SQL, {"start": start, "end": end})


def session_cache_calls(db: Any, session_id: str) -> list[dict[str, Any]]:
    return query(db, SESSION_CACHE_CALLS_SQL, {"session": session_id})


def spend(db: Any, start: float, end: float, project: str | None = None,
          session_id: str | None = None) -> dict[str, Any]:
    return query(db, SPEND_SQL, {"start": start, "end": end, "project": project,
                                 "session": session_id})[0]


#: A session's newest counted tool call (the loop guard's count), for the status line.
LATEST_REPEAT_SQL = """
SELECT tool_call_fp, tool_repeats FROM api_calls
WHERE session_id = :session AND tool_repeats IS NOT NULL
ORDER BY started_ts DESC LIMIT 1
"""


def latest_repeat(db: Any, session_id: str) -> dict[str, Any] | None:
    rows = query(db, LATEST_REPEAT_SQL, {"session": session_id})
    return rows[0] if rows else None


#: A session's spend before and within its last few minutes (the loop guard's rate alarm).
SESSION_RATE_SQL = """
SELECT MIN(started_ts) AS first_ts,
       COALESCE(SUM(CASE WHEN started_ts >= :recent THEN cost_picousd END), 0) AS recent,
       COALESCE(SUM(CASE WHEN started_ts < :recent THEN cost_picousd END), 0) AS before
FROM api_calls WHERE session_id = :session
"""


def session_rate(db: Any, session_id: str, recent_since: float) -> dict[str, Any]:
    return query(db, SESSION_RATE_SQL, {"session": session_id, "recent": recent_since})[0]
