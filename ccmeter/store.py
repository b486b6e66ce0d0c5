"""The only module that touches SQLite: open, migrate, write calls, run named queries.

Design notes (the why):
- WAL mode and a generous busy timeout let any number of proxy processes and CLI readers
  share one file; writers retry on ``database is locked`` instead of losing a row.
- Rows are keyed on ``call_uid`` (one per HTTP exchange) so re-writing a call is an
  idempotent upsert: the row is first written when ``message_start`` arrives (the input
  side is billed from that moment) and completed when the answer ends.
- The proxy never writes on its byte path: :class:`CallWriter` owns one connection on its
  own thread and applies queued upserts in small transactions.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlite_utils

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 15_000
PICO = 10**12

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
)

STATUSES = ("ok", "incomplete", "upstream_error", "blocked")


def _m001_calls(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE api_calls (
            call_uid TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,          -- ISO 8601 UTC, e.g. 2026-11-27T09:15:02.123Z
            started_ts REAL NOT NULL,          -- the same instant as Unix seconds (for ranges)
            ttfb_ms REAL,
            duration_ms REAL,
            provider TEXT NOT NULL DEFAULT 'anthropic',
            host TEXT,
            endpoint TEXT NOT NULL DEFAULT 'messages',
            session_id TEXT,
            project TEXT,
            working_dir_name TEXT,
            agent_id TEXT,
            parent_agent_id TEXT,
            call_kind TEXT,
            client_name TEXT,
            client_version TEXT,
            auth_kind TEXT,
            requested_model TEXT,
            model TEXT,
            stream INTEGER,
            status TEXT NOT NULL,
            http_status INTEGER,
            stop_reason TEXT,
            error_type TEXT,
            request_id TEXT,
            message_id TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_5m_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            thinking_tokens INTEGER,
            web_search_requests INTEGER NOT NULL DEFAULT 0,
            web_fetch_requests INTEGER NOT NULL DEFAULT 0,
            service_tier TEXT,
            inference_geo TEXT,
            speed TEXT,
            hops_json TEXT,
            cost_picousd INTEGER,              -- exact cost in 1e-12 USD; NULL = unpriced
            cost_basis TEXT,                   -- 'api' or 'subscription_list_equivalent'
            catalog_version TEXT,
            pricing_note TEXT,
            plan_status TEXT,
            plan_5h_utilization REAL,
            plan_5h_reset INTEGER,
            plan_7d_utilization REAL,
            plan_7d_reset INTEGER,
            plan_binding_window TEXT,
            plan_overage_status TEXT,
            plan_headers_json TEXT,
            metering_error TEXT,
            updated_ts REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX api_calls_started_ts ON api_calls (started_ts)")
    db.execute("CREATE INDEX api_calls_session ON api_calls (session_id, started_ts)")
    db.execute("CREATE INDEX api_calls_project ON api_calls (project, started_ts)")
    db.execute(
        """
        CREATE VIEW calls AS
        SELECT
            call_uid, started_at, session_id, project, model, input_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
            cost_picousd / 1e12 AS cost_usd, cost_picousd, status,
            provider, endpoint, call_kind, agent_id, parent_agent_id, requested_model,
            stop_reason, error_type, http_status, request_id, message_id,
            ttfb_ms, duration_ms, web_search_requests, web_fetch_requests,
            service_tier, inference_geo, speed, cost_basis, catalog_version, pricing_note,
            auth_kind, client_name, client_version,
            plan_status, plan_5h_utilization, plan_7d_utilization
        FROM api_calls
        """
    )


#: Ordered migrations. A shipped migration is never edited; add a new one at the end.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m001_calls]


def connect(path: Path | str) -> sqlite_utils.Database:
    """Open (creating if needed) the database, in WAL mode, migrated to the latest schema."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                           isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db = sqlite_utils.Database(conn)
    if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        _retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
    db.execute("PRAGMA synchronous=NORMAL")
    migrate(db)
    return db


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> int:
    """Apply pending migrations; safe when several processes start at once."""
    if schema_version(db) >= len(MIGRATIONS):
        return schema_version(db)
    _retry_locked(lambda: db.execute("BEGIN IMMEDIATE"))
    try:
        current = schema_version(db)
        for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
            step(db)
            db.execute(f"PRAGMA user_version={number}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return schema_version(db)


def _retry_locked(action: Callable[[], Any], attempts: int = 40) -> Any:
    """Run ``action``, retrying while another process holds the write lock."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))
    return None


_UPSERT_TEMPLATE = (
    "INSERT INTO api_calls ({cols}) VALUES ({marks}) "
    "ON CONFLICT(call_uid) DO UPDATE SET {updates}"
)


def upsert_calls(db: sqlite_utils.Database, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert or update call rows (by ``call_uid``) in one transaction. Returns rows written.

    Only the columns present in a row are updated, so a partial update (final usage, an
    error) never blanks what an earlier write recorded.
    """
    rows = list(rows)
    if not rows:
        return 0

    def write() -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                cols = [c for c in CALL_COLUMNS if c in row]
                sql = _UPSERT_TEMPLATE.format(
                    cols=", ".join(cols),
                    marks=", ".join("?" for _ in cols),
                    updates=", ".join(f"{c}=excluded.{c}" for c in cols if c != "call_uid"),
                )
                db.execute(sql, [row[c] for c in cols])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    _retry_locked(write)
    return len(rows)


def get_call(db: sqlite_utils.Database, call_uid: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM api_calls WHERE call_uid = ?", [call_uid]))
    return rows[0] if rows else None


def query(db: sqlite_utils.Database, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """Run a read query (SQL kept as a named constant by the caller) and return dict rows."""
    return list(db.query(sql, params))


class CallWriter:
    """Applies queued call rows on its own thread, so the proxy's loop never waits on disk.

    Rows for the same ``call_uid`` queued close together are merged before writing. On a
    write failure the batch is kept and retried (lock contention) — rows are never dropped
    while the process lives; :meth:`close` drains the queue.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ccmeter-writer", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self.written = 0
        self.failures = 0
        self._db = connect(self.path)
        self._thread.start()

    def put(self, row: dict[str, Any]) -> None:
        self._idle.clear()
        self._queue.put(row)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is on disk (tests and shutdown use this)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.005)
        return False

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        self._queue.put(None)
        self._thread.join(timeout)
        with contextlib.suppress(sqlite3.Error):
            self._db.conn.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in batch)
            rows = _merge([item for item in batch if item is not None])
            self._write(rows)
            for _ in batch:
                self._queue.task_done()
            if stop:
                return

    def _write(self, rows: list[dict[str, Any]]) -> None:
        for attempt in range(1000):
            try:
                self.written += upsert_calls(self._db, rows)
                return
            except sqlite3.Error:
                self.failures += 1
                log.exception("writing %d call rows failed (attempt %d)", len(rows), attempt + 1)
                time.sleep(min(0.1 * (attempt + 1), 2.0))
        log.error("giving up on %d call rows after repeated failures", len(rows))


def _merge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        merged.setdefault(row["call_uid"], {}).update(row)
    return list(merged.values())
