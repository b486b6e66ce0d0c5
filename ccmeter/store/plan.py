"""The read behind ``ccmeter plan``: the calls that carried a subscription's plan headers."""

from __future__ import annotations

from typing import Any

from ccmeter.store.db import query

#: Every call from :since on whose answer reported plan utilization, oldest first (served by
#: the partial index ``api_calls_plan``).
PLAN_CALLS_SQL = """
SELECT started_ts, session_id, project, plan_5h_utilization, plan_5h_reset,
    plan_7d_utilization, plan_7d_reset, plan_binding_window
FROM api_calls
WHERE plan_5h_utilization IS NOT NULL AND started_ts >= :since
ORDER BY started_ts
"""


def plan_calls(db: Any, since: float) -> list[dict[str, Any]]:
    """The calls with plan headers made from ``since`` on."""
    return query(db, PLAN_CALLS_SQL, {"since": since})


#: The newest call that reported plan utilization (what a starting proxy's plan caps read).
NEWEST_PLAN_SQL = """
SELECT started_ts, plan_5h_utilization, plan_5h_reset, plan_7d_utilization, plan_7d_reset
FROM api_calls
WHERE plan_5h_utilization IS NOT NULL
ORDER BY started_ts DESC
LIMIT 1
"""


def newest_plan_row(db: Any) -> dict[str, Any] | None:
    """The plan columns of the newest call that carried them, or None."""
    rows = query(db, NEWEST_PLAN_SQL)
    return rows[0] if rows else None
