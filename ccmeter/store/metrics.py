"""The SQL behind the metrics ccmeter exports (Prometheus, a textfile, OTLP): every finished
call summed per label set, in one statement (``ccmeter.metrics`` turns it into metrics)."""

from __future__ import annotations

from typing import Any

#: A call whose row is the half-second "still running" one (status ``incomplete``, no
#: error yet, updated within this long) is in flight: it is counted once it ends, so a
#: counter never sees it move from ``incomplete`` to ``ok``.
IN_FLIGHT_S = 3600.0
#: A call of a session whose project is not known yet (a session's first calls: a title,
#: a quota check) is counted once this old: by then a later call has named the session's
#: project and its row carries it, so no project's counter ever goes down.
SETTLE_S = 300.0

#: The label columns: what each sum is grouped by.
LABELS = ("project", "model", "provider", "kind", "status", "reason")
#: The summed columns, in the order :func:`call_totals` returns them after the labels.
SUMS = ("calls", "cost_picousd", "unpriced", "input", "cache_write_5m", "cache_write_1h",
        "cache_read", "output")

_TOTALS_SQL = """
SELECT COALESCE(project, ''), COALESCE(model, ''), COALESCE(provider, ''),
       COALESCE(call_kind, ''), status, COALESCE(error_type, ''),
       COUNT(*), SUM(cost_picousd), SUM(cost_picousd IS NULL),
       SUM(input_tokens), SUM(cache_write_5m_tokens), SUM(cache_write_1h_tokens),
       SUM(cache_read_tokens), SUM(output_tokens)
FROM api_calls
WHERE NOT (status = 'incomplete' AND error_type IS NULL AND updated_ts > :now - :in_flight)
  AND NOT (project IS NULL AND session_id IS NOT NULL AND started_ts > :now - :settle)
  {range}
GROUP BY 1, 2, 3, 4, 5, 6
"""
_RANGES = {(False, False): "", (True, False): "AND started_ts >= :lo",
           (False, True): "AND started_ts < :hi", (True, True): "AND started_ts >= :lo "
           "AND started_ts < :hi"}
#: Grows when ``ccmeter prices`` re-prices stored calls (their old costs are kept there).
REPRICED_SQL = "SELECT COALESCE(MAX(rowid), 0) FROM cost_history"


def call_totals(db: Any, now: float, *, lo: float | None = None, hi: float | None = None,
                in_flight_s: float = IN_FLIGHT_S,
                settle_s: float = SETTLE_S) -> list[tuple[Any, ...]]:
    """One row per (project, model, provider, kind, status, error type) of the finished
    calls (those started in [``lo``, ``hi``) when given: the ``started_ts`` index finds
    them): the :data:`LABELS` ('' for none), then the :data:`SUMS` (``cost_picousd`` is
    None when no call of the group is priced; integers otherwise, exact)."""
    conn = getattr(db, "conn", db)
    params = {"now": now, "in_flight": in_flight_s, "settle": settle_s, "lo": lo, "hi": hi}
    sql = _TOTALS_SQL.format(range=_RANGES[(lo is not None, hi is not None)])
    return [tuple(row) for row in conn.execute(sql, params).fetchall()]


def repriced_mark(db: Any) -> int:
    return int(getattr(db, "conn", db).execute(REPRICED_SQL).fetchone()[0])
