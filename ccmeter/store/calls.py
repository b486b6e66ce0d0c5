"""Named writes and reads on the ``api_calls`` table (and ``cost_history``).

Rows are keyed on ``call_uid`` (one per HTTP exchange) so re-writing a call is an
idempotent upsert: the row is first written when ``message_start`` arrives (the input
side is billed from that moment) and completed when the answer ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ccmeter.store.capspend import RELEASE_RESERVATION, RELEASE_SQL
from ccmeter.store.db import query, retry_locked, transaction

if TYPE_CHECKING:
    import sqlite_utils

#: Columns of ``api_calls`` a writer may set, in schema order. ``call_uid`` is the key.
CALL_COLUMNS: tuple[str, ...] = (
    "call_uid",
    "started_at",
    "started_ts",
    "ttfb_ms",
    "duration_ms",
    "provider",
    "host",
    "endpoint",
    "session_id",
    "project",
    "working_dir_name",
    "agent_id",
    "parent_agent_id",
    "call_kind",
    "client_name",
    "client_version",
    "auth_kind",
    "requested_model",
    "model",
    "stream",
    "status",
    "http_status",
    "stop_reason",
    "error_type",
    "request_id",
    "message_id",
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
    "thinking_tokens",
    "web_search_requests",
    "web_fetch_requests",
    "service_tier",
    "inference_geo",
    "speed",
    "hops_json",
    "cost_picousd",
    "cost_basis",
    "catalog_version",
    "pricing_note",
    "plan_status",
    "plan_5h_utilization",
    "plan_5h_reset",
    "plan_7d_utilization",
    "plan_7d_reset",
    "plan_binding_window",
    "plan_overage_status",
    "plan_headers_json",
    "metering_error",
    "updated_ts",
    "fallback_from_model",
    "run_id",
    "cache_key_json",
    "cache_change",
    "tool_call_fp",
    "tool_repeats",
    "forecast_picousd",
    "forecast_note",
)

STATUSES = ("ok", "incomplete", "upstream_error", "blocked")


_UPSERT_TEMPLATE = (
    "INSERT INTO api_calls ({cols}) VALUES ({marks}) "
    "ON CONFLICT(call_uid) DO UPDATE SET {updates}"
)
#: Upsert statements by column tuple: a proxy writes a handful of row shapes, millions of times.
_UPSERT_SQL: dict[tuple[str, ...], str] = {}


def _upsert_sql(cols: list[str]) -> str:
    key = tuple(cols)
    sql = _UPSERT_SQL.get(key)
    if sql is None:
        if len(_UPSERT_SQL) >= 256:
            _UPSERT_SQL.clear()
        sql = _UPSERT_SQL[key] = _UPSERT_TEMPLATE.format(
            cols=", ".join(cols),
            marks=", ".join("?" for _ in cols),
            updates=", ".join(f"{c}=excluded.{c}" for c in cols if c != "call_uid"),
        )
    return sql


def upsert_calls(db: sqlite_utils.Database, rows: Iterable[Mapping[str, Any]], *,
                 retry: bool = True) -> int:
    """Insert or update call rows (by ``call_uid``) in one transaction. Returns rows written.

    Only the columns present in a row are updated, so a partial update (final usage, an
    error) never blanks what an earlier write recorded. A row carrying a true
    ``RELEASE_RESERVATION`` key (its call's final row) releases the call's cap reservation in
    the same transaction, so a cap check never sees the call both reserved and missing.
    ``retry=False``: one attempt, a locked database raises (the call writer waits itself).
    """
    rows = list(rows)
    if not rows:
        return 0

    def write() -> None:
        with transaction(db):
            for row in rows:
                cols = [c for c in CALL_COLUMNS if c in row]
                db.execute(_upsert_sql(cols), [row[c] for c in cols])
                if row.get(RELEASE_RESERVATION):
                    db.execute(RELEASE_SQL, [row["call_uid"]])

    if retry:
        retry_locked(write)
    else:
        write()
    return len(rows)


RUN_CALLS_SQL = """
SELECT call_uid, session_id, project, model, status, error_type, http_status, cost_picousd
FROM api_calls WHERE run_id = ? ORDER BY started_ts, call_uid
"""


def run_calls(db: sqlite_utils.Database, run_id: str) -> list[dict[str, Any]]:
    """The calls one ``ccmeter run`` sent (tagged with its id by the proxy), for its summary."""
    return query(db, RUN_CALLS_SQL, [run_id])


def get_call(db: sqlite_utils.Database, call_uid: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM api_calls WHERE call_uid = ?", [call_uid]))
    return rows[0] if rows else None


# --- repricing and change polling (reports, `ccmeter reprice`, `ccmeter watch`) -----------

REPRICE_ROWS_SQL = """
SELECT call_uid, started_ts, model, requested_model, input_tokens, cache_write_5m_tokens,
    cache_write_1h_tokens, cache_read_tokens, output_tokens, thinking_tokens,
    web_search_requests, web_fetch_requests, service_tier, inference_geo, speed, hops_json,
    cost_picousd, catalog_version, pricing_note
FROM api_calls
WHERE started_ts >= :since AND started_ts < :until
    AND (:project IS NULL OR project = :project)
    AND (:model IS NULL OR instr(lower(COALESCE(model, '')), :model) > 0)
    AND (started_ts > :after_ts OR (started_ts = :after_ts AND call_uid > :after_uid))
ORDER BY started_ts, call_uid
LIMIT :limit
"""

_HISTORY_INSERT = (
    "INSERT INTO cost_history (call_uid, repriced_ts, old_cost_picousd, old_catalog_version, "
    "old_pricing_note, new_cost_picousd, new_catalog_version) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_REPRICE_UPDATE = (
    "UPDATE api_calls SET cost_picousd = ?, catalog_version = ?, pricing_note = ?, "
    "updated_ts = ? WHERE call_uid = ?"
)


def reprice_calls(db: sqlite_utils.Database, changes: Iterable[Mapping[str, Any]]) -> int:
    """Replace call costs, keeping each old figure in ``cost_history``, in one transaction.

    Each change has ``call_uid``, ``old_cost_picousd``, ``old_catalog_version``,
    ``old_pricing_note``, ``cost_picousd``, ``catalog_version`` and ``pricing_note``.
    """
    changes = list(changes)
    if not changes:
        return 0
    now = time.time()

    def write() -> None:
        with transaction(db):
            db.conn.executemany(_HISTORY_INSERT, [
                (c["call_uid"], now, c["old_cost_picousd"], c["old_catalog_version"],
                 c["old_pricing_note"], c["cost_picousd"], c["catalog_version"])
                for c in changes
            ])
            db.conn.executemany(_REPRICE_UPDATE, [
                (c["cost_picousd"], c["catalog_version"], c["pricing_note"], now, c["call_uid"])
                for c in changes
            ])

    retry_locked(write)
    return len(changes)


def cost_history(db: sqlite_utils.Database, call_uid: str) -> list[dict[str, Any]]:
    """Every earlier cost of one call, oldest first."""
    return query(
        db, "SELECT * FROM cost_history WHERE call_uid = ? ORDER BY repriced_ts, id", [call_uid]
    )



def bulk_insert_calls(db: sqlite_utils.Database, rows: Iterable[Sequence[Any]],
                      columns: Sequence[str]) -> int:
    """Insert many new call rows (tuples in ``columns`` order) in one transaction (benchmarks,
    imports). Unlike :func:`upsert_calls` it does not merge with existing rows."""
    unknown = [c for c in columns if c not in CALL_COLUMNS]
    if unknown:
        raise ValueError(f"unknown call column(s): {', '.join(unknown)}")
    sql = f"INSERT INTO api_calls ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    with transaction(db):
        cursor = db.conn.executemany(sql, rows)
    return cursor.rowcount
