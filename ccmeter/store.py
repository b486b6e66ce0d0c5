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
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 15_000
#: The longest a cap check waits for another process's write lock before the caps'
#: ``on_error`` policy decides: a call must never hang behind a locked database.
CAP_CHECK_WAIT_MS = 2_000
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


def _m002_cost_history(db: sqlite_utils.Database) -> None:
    """``ccmeter reprice`` keeps each replaced cost here; a partial index for plan figures."""
    db.execute(
        """
        CREATE TABLE cost_history (
            id INTEGER PRIMARY KEY,
            call_uid TEXT NOT NULL,
            repriced_ts REAL NOT NULL,         -- when the cost was replaced (Unix seconds)
            old_cost_picousd INTEGER,          -- NULL = it was unpriced
            old_catalog_version TEXT,
            old_pricing_note TEXT,
            new_cost_picousd INTEGER,
            new_catalog_version TEXT
        )
        """
    )
    db.execute("CREATE INDEX cost_history_call ON cost_history (call_uid, repriced_ts)")
    # The status line and `watch` read the latest plan utilization; without this index that
    # is a scan of every row when no call ever carried plan headers.
    db.execute(
        "CREATE INDEX api_calls_plan ON api_calls (started_ts) "
        "WHERE plan_5h_utilization IS NOT NULL"
    )


def _m003_caps(db: sqlite_utils.Database) -> None:
    """Spending caps: in-flight reservations, once-per-window warnings, and 15-minute spend
    buckets kept by triggers so a cap check sums a few thousand buckets, not every row."""
    db.execute(
        """
        CREATE TABLE cap_reservations (
            call_uid TEXT PRIMARY KEY,
            created_ts REAL NOT NULL,
            estimate_picousd INTEGER NOT NULL DEFAULT 0,
            expires_ts REAL NOT NULL,          -- a process that died leaves these behind
            project TEXT,
            session_id TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE cap_warnings (
            cap_key TEXT NOT NULL,             -- e.g. 'global/daily', 'project:api/weekly'
            window_start REAL NOT NULL,
            threshold REAL NOT NULL,
            warned_ts REAL NOT NULL,
            PRIMARY KEY (cap_key, window_start, threshold)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE cap_spend (
            scope TEXT NOT NULL,               -- '' (all), 'p:' || project, 's:' || session_id
            bucket INTEGER NOT NULL,           -- CAST(started_ts / 900 AS INTEGER)
            cost_picousd INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, bucket)
        ) WITHOUT ROWID
        """
    )
    for sql in _CAP_SPEND_TRIGGERS:
        db.execute(sql)
    for scope, where in (("''", "1"), ("'p:' || project", "project IS NOT NULL"),
                         ("'s:' || session_id", "session_id IS NOT NULL")):
        db.execute(
            f"INSERT INTO cap_spend (scope, bucket, cost_picousd) "
            f"SELECT {scope}, CAST(started_ts / 900 AS INTEGER), SUM(COALESCE(cost_picousd, 0)) "
            f"FROM api_calls WHERE {where} GROUP BY 1, 2"
        )


def _cap_spend_add(sign: str, rec: str) -> str:
    """Trigger body lines adding (``+``) or removing (``-``) one row's cost from its buckets."""
    bucket = f"CAST({rec}.started_ts / 900 AS INTEGER)"
    cost = f"{sign}COALESCE({rec}.cost_picousd, 0)"
    upsert = ("ON CONFLICT (scope, bucket) DO UPDATE SET "
              "cost_picousd = cost_picousd + excluded.cost_picousd;")
    return f"""
        INSERT INTO cap_spend (scope, bucket, cost_picousd) VALUES ('', {bucket}, {cost})
            {upsert}
        INSERT INTO cap_spend (scope, bucket, cost_picousd)
            SELECT 'p:' || {rec}.project, {bucket}, {cost} WHERE {rec}.project IS NOT NULL
            {upsert}
        INSERT INTO cap_spend (scope, bucket, cost_picousd)
            SELECT 's:' || {rec}.session_id, {bucket}, {cost} WHERE {rec}.session_id IS NOT NULL
            {upsert}"""


_CAP_SPEND_TRIGGERS = (
    f"""CREATE TRIGGER cap_spend_insert AFTER INSERT ON api_calls
        WHEN COALESCE(NEW.cost_picousd, 0) != 0
        BEGIN {_cap_spend_add("+", "NEW")}
        END""",
    f"""CREATE TRIGGER cap_spend_update
        AFTER UPDATE OF cost_picousd, started_ts, project, session_id ON api_calls
        WHEN COALESCE(OLD.cost_picousd, 0) != COALESCE(NEW.cost_picousd, 0)
            OR OLD.started_ts != NEW.started_ts
            OR OLD.project IS NOT NEW.project OR OLD.session_id IS NOT NEW.session_id
        BEGIN {_cap_spend_add("-", "OLD")} {_cap_spend_add("+", "NEW")}
        END""",
    f"""CREATE TRIGGER cap_spend_delete AFTER DELETE ON api_calls
        WHEN COALESCE(OLD.cost_picousd, 0) != 0
        BEGIN {_cap_spend_add("-", "OLD")}
        END""",
)


def _m004_report_index(db: sqlite_utils.Database) -> None:
    """A covering index whose leading columns match the report aggregate's GROUP BY.

    ``ccmeter report`` groups on (hourly UTC slot, project, model, speed, tier, geo[, session]);
    with every summed column in the index SQLite streams the aggregate in index order instead
    of reading the wide rows and sorting a million of them (1.5 s -> well under 1 s).
    """
    db.execute(
        """
        CREATE INDEX api_calls_rollup ON api_calls (
            CAST(started_ts / 3600 AS INTEGER), project, model, speed, service_tier,
            inference_geo, session_id, started_ts, input_tokens, cache_write_5m_tokens,
            cache_write_1h_tokens, cache_read_tokens, output_tokens, cost_picousd
        )
        """
    )


#: Ordered migrations. A shipped migration is never edited; add a new one at the end.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_calls,
    _m002_cost_history,
    _m003_caps,
    _m004_report_index,
]


def connect(path: Path | str) -> sqlite_utils.Database:
    """Open (creating if needed) the database, in WAL mode, migrated to the latest schema."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                           isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    import sqlite_utils  # here, not at import: the status line never needs it

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
    def upgrade() -> None:
        with _transaction(db):
            current = schema_version(db)  # another process may have migrated meanwhile
            for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
                step(db)
                db.execute(f"PRAGMA user_version={number}")

    _retry_locked(upgrade)
    return schema_version(db)


@contextlib.contextmanager
def _transaction(db: sqlite_utils.Database, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """``begin`` … COMMIT, or ROLLBACK on any exception. IMMEDIATE takes the write lock up
    front, so a transaction never fails half-way for want of it."""
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.conn.in_transaction:
            db.execute("ROLLBACK")
        raise


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY / SQLITE_LOCKED)."""
    return "locked" in str(exc) or "busy" in str(exc)


def _retry_locked(action: Callable[[], Any], attempts: int = 40) -> Any:
    """Run ``action``, retrying while another process holds the write lock."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not _is_lock_error(exc):
                raise
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))
    return None


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


def upsert_calls(db: sqlite_utils.Database, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert or update call rows (by ``call_uid``) in one transaction. Returns rows written.

    Only the columns present in a row are updated, so a partial update (final usage, an
    error) never blanks what an earlier write recorded. A row carrying a true
    ``RELEASE_RESERVATION`` key (its call's final row) releases the call's cap reservation in
    the same transaction, so a cap check never sees the call both reserved and missing.
    """
    rows = list(rows)
    if not rows:
        return 0

    def write() -> None:
        with _transaction(db):
            for row in rows:
                cols = [c for c in CALL_COLUMNS if c in row]
                db.execute(_upsert_sql(cols), [row[c] for c in cols])
                if row.get(RELEASE_RESERVATION):
                    db.execute(_RELEASE_SQL, [row["call_uid"]])

    _retry_locked(write)
    return len(rows)


def get_call(db: sqlite_utils.Database, call_uid: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM api_calls WHERE call_uid = ?", [call_uid]))
    return rows[0] if rows else None


def query(db: sqlite_utils.Database | sqlite3.Connection, sql: str,
          params: Any = ()) -> list[dict[str, Any]]:
    """Run a read query (SQL kept as a named constant by the caller) and return dict rows.

    ``db`` may also be a plain connection from :func:`connect_reader`.
    """
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def connect_reader(path: Path | str) -> sqlite3.Connection:
    """A plain read-only connection, for the status line: it runs after every Claude Code
    turn, so it skips sqlite-utils (and its plugin scan) and migrations. It fails if the
    file is missing or too old to hold the expected tables; the caller shows a minimal line.
    """
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                           timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute("PRAGMA query_only=1")
    return conn


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
        # Checkpoints run after a batch is acknowledged (_maybe_checkpoint), never inside its
        # COMMIT as auto-checkpoints do: the cap check waits for queued rows (flush) before
        # every call, and a checkpoint syncs the file.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._batches = 0
        self._thread.start()

    def put(self, row: dict[str, Any]) -> None:
        self._idle.clear()
        self._queue.put(row)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is on disk (tests, shutdown and the cap check use this).

        Woken by the writer's own ``task_done`` (the queue's ``all_tasks_done`` condition),
        not by polling: the cap check runs before a call goes upstream, so a 5 ms poll
        would land in the call's time to first byte.
        """
        deadline = time.monotonic() + timeout
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    @property
    def idle(self) -> bool:
        """Nothing queued or being written: the database already holds every row we had."""
        return self._queue.unfinished_tasks == 0

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
            self._maybe_checkpoint()

    #: Write batches between two of the writer's WAL checkpoints (~1,000 WAL pages, like
    #: SQLite's default auto-checkpoint); a busy queue defers one up to 4 times as long.
    CHECKPOINT_EVERY = 64

    def _maybe_checkpoint(self) -> None:
        self._batches += 1
        if self._batches < self.CHECKPOINT_EVERY or (
                self._queue.unfinished_tasks and self._batches < 4 * self.CHECKPOINT_EVERY):
            return
        self._batches = 0
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.debug("WAL checkpoint skipped", exc_info=True)

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
        with _transaction(db):
            db.conn.executemany(_HISTORY_INSERT, [
                (c["call_uid"], now, c["old_cost_picousd"], c["old_catalog_version"],
                 c["old_pricing_note"], c["cost_picousd"], c["catalog_version"])
                for c in changes
            ])
            db.conn.executemany(_REPRICE_UPDATE, [
                (c["cost_picousd"], c["catalog_version"], c["pricing_note"], now, c["call_uid"])
                for c in changes
            ])

    _retry_locked(write)
    return len(changes)


def cost_history(db: sqlite_utils.Database, call_uid: str) -> list[dict[str, Any]]:
    """Every earlier cost of one call, oldest first."""
    return query(
        db, "SELECT * FROM cost_history WHERE call_uid = ? ORDER BY repriced_ts, id", [call_uid]
    )


def data_version(db: sqlite_utils.Database) -> int:
    """Changes whenever another connection commits: a cheap "did rows land?" poll."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])


def bulk_insert_calls(db: sqlite_utils.Database, rows: Iterable[Sequence[Any]],
                      columns: Sequence[str]) -> int:
    """Insert many new call rows (tuples in ``columns`` order) in one transaction (benchmarks,
    imports). Unlike :func:`upsert_calls` it does not merge with existing rows."""
    unknown = [c for c in columns if c not in CALL_COLUMNS]
    if unknown:
        raise ValueError(f"unknown call column(s): {', '.join(unknown)}")
    sql = f"INSERT INTO api_calls ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    with _transaction(db):
        cursor = db.conn.executemany(sql, rows)
    return cursor.rowcount


# --- spending caps (ccmeter.caps owns the policy; this is the SQL) -------------------------

#: A key in a row given to :func:`upsert_calls`: true on a call's final row.
RELEASE_RESERVATION = "_release_reservation"
CAP_BUCKET_S = 900

_RELEASE_SQL = "DELETE FROM cap_reservations WHERE call_uid = ?"
_EXPIRE_SQL = "DELETE FROM cap_reservations WHERE expires_ts <= ?"
_RESERVE_SQL = (
    "INSERT OR REPLACE INTO cap_reservations "
    "(call_uid, created_ts, estimate_picousd, expires_ts, project, session_id) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# A window's spend is the sum of up to three parts, each one indexed lookup:
# whole 15-minute buckets from the first full one on (the primary key is the index) ...
_BUCKETS_SQL = ("SELECT COALESCE(SUM(cost_picousd), 0) FROM cap_spend "
                "WHERE scope = :scope{i} AND bucket >= :first{i}")
# ... plus the rows of the partial bucket at the window's start, through the started_ts
# indexes (api_calls_started_ts / api_calls_project / api_calls_session), when it starts
# inside a bucket (a rolling window; a calendar window starts at a bucket's edge) ...
_EDGE_WHERE = {"": "", "p": "project = :key{i} AND ", "s": "session_id = :key{i} AND "}
_EDGE_SQL = (
    "SELECT COALESCE(SUM(cost_picousd), 0) FROM api_calls WHERE {where}started_ts >= :start{i} "
    "AND started_ts < :edge{i} AND CAST(started_ts / 900 AS INTEGER) < :first{i}"
)
# ... plus in-flight calls, at their reservation's estimate less what their row already shows
# (left out when the caps reserve nothing: then an in-flight call counts $0 until its row).
_RESERVED_SQL = (
    "SELECT COALESCE(SUM(MAX(r.estimate_picousd - COALESCE(c.cost_picousd, 0), 0)), 0) "
    "FROM cap_reservations r LEFT JOIN api_calls c ON c.call_uid = r.call_uid "
    "WHERE r.expires_ts > :now AND r.created_ts >= :start{i} "
    "AND (:project{i} IS NULL OR r.project = :project{i}) "
    "AND (:session{i} IS NULL OR r.session_id = :session{i})"
)


@lru_cache(maxsize=64)
def _spends_sql(parts: tuple[tuple[str, bool, bool], ...]) -> str:
    """One SELECT giving every window's spend, a column each; ``parts`` says per window its
    kind and whether it needs the edge and the reservations. One statement is one read
    snapshot (no BEGIN/COMMIT needed) and one trip into SQLite: the cap check sits in front
    of every call's first byte, and every statement and b-tree it touches costs time there."""
    columns = []
    for i, (kind, edge, reserved) in enumerate(parts):
        terms = [_BUCKETS_SQL, *([_EDGE_SQL] if edge else []),
                 *([_RESERVED_SQL] if reserved else [])]
        columns.append(" + ".join(f"({term})" for term in terms).format(
            i=i, where=_EDGE_WHERE[kind].format(i=i)))
    return "SELECT " + ", ".join(columns)


_ROLLING_SQL = {
    kind: "SELECT started_ts FROM (SELECT started_ts, SUM(COALESCE(cost_picousd, 0)) OVER "
          "(ORDER BY started_ts ROWS UNBOUNDED PRECEDING) AS running FROM api_calls "
          f"WHERE started_ts >= :start {cond}) WHERE running >= :excess LIMIT 1"
    for kind, cond in (("", ""), ("p", "AND project = :key"), ("s", "AND session_id = :key"))
}
_WARNED_SQL = (
    "INSERT OR IGNORE INTO cap_warnings (cap_key, window_start, threshold, warned_ts) "
    "VALUES (?, ?, ?, ?)"
)


@dataclass(frozen=True)
class SpendWindow:
    """Rows a cap sums: from ``start`` on, all of them or one project's or one session's."""

    start: float
    project: str | None = None
    session_id: str | None = None

    @property
    def kind_key(self) -> tuple[str, str | None]:
        if self.session_id is not None:
            return "s", self.session_id
        if self.project is not None:
            return "p", self.project
        return "", None


@dataclass(frozen=True)
class Reservation:
    call_uid: str
    created_ts: float
    estimate_picousd: int
    expires_ts: float
    project: str | None = None
    session_id: str | None = None


def cap_spent(db: sqlite_utils.Database, window: SpendWindow, now: float) -> int:
    """Spend in the window: priced rows plus in-flight calls' outstanding reservations."""
    return cap_spends(db, [window], now)[0]


def cap_spends(db: sqlite_utils.Database, windows: Sequence[SpendWindow], now: float, *,
               reservations: bool = True) -> list[int]:
    """:func:`cap_spent` of several windows, in one statement; ``reservations=False`` leaves
    in-flight calls' reservations out (for caps that make none)."""
    return run_spend_query(db, spend_query(windows, reservations=reservations), now)


@dataclass(frozen=True)
class SpendQuery:
    """The one statement that sums some windows' spends. A proxy builds it once per window
    (``caps.Guard`` keeps it until the window ends) and runs it before every call."""

    sql: str
    params: dict[str, Any]  # all but ``now``
    reservations: bool


def spend_query(windows: Sequence[SpendWindow], *, reservations: bool = True) -> SpendQuery:
    params: dict[str, Any] = {}
    parts = []
    for i, window in enumerate(windows):
        kind, key = window.kind_key
        first = math.ceil(window.start / CAP_BUCKET_S)
        edge = first * CAP_BUCKET_S != window.start
        parts.append((kind, edge, reservations))
        params.update({
            f"scope{i}": f"{kind}:{key}" if kind else "", f"first{i}": first,
            f"key{i}": key, f"start{i}": window.start, f"edge{i}": first * CAP_BUCKET_S + 1,
            f"project{i}": window.project, f"session{i}": window.session_id,
        })
    return SpendQuery(_spends_sql(tuple(parts)), params, reservations)


def run_spend_query(db: sqlite_utils.Database, query: SpendQuery, now: float) -> list[int]:
    params = {**query.params, "now": now} if query.reservations else query.params
    conn = getattr(db, "conn", db)  # the status line passes a plain sqlite3 connection
    return [int(total) for total in conn.execute(query.sql, params).fetchone()]


def connect_cap_checker(path: Path | str, *, wait_ms: int = CAP_CHECK_WAIT_MS
                        ) -> sqlite_utils.Database:
    """A connection for the latency-sensitive cap check. It never runs WAL checkpoints
    itself (an auto-checkpoint syncs the file, milliseconds on a large database; the call
    writer's connection and the CLI's keep checkpointing as usual), and waits at most
    ``wait_ms`` for another writer's lock (0 for the proxy's event loop)."""
    db = connect(path)
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute(f"PRAGMA busy_timeout={wait_ms}")
    return db


def cap_check_and_reserve(
    db: sqlite_utils.Database,
    spends: SpendQuery,
    now: float,
    decide: Callable[[list[int]], bool],
    reservation: Reservation | None,
    *,
    wait: bool = True,
) -> tuple[list[int], bool]:
    """Sum each window's spend (``spends``), ask ``decide`` (spends -> allowed?), and if
    allowed record ``reservation``; returns (spends, allowed), spends without the new
    reservation. A query without reservations is for caps that make none.

    A reservation is made in one ``BEGIN IMMEDIATE`` transaction that also drops expired
    ones: the write lock is held from the first read to the reservation, so two proxies can
    never both admit a call on the same remaining headroom. A reservation of $0 (the default
    estimate) would change no one's sum, so then the check is one read statement, which
    under WAL never waits for a writer.

    A lock wait is bounded by the connection's busy timeout. With ``wait=False`` (``db``
    from ``connect_cap_checker(wait_ms=0)``) a lock held elsewhere raises
    :class:`WouldBlock` at once, and the proxy retries off its event loop.
    """
    try:
        if reservation is None or reservation.estimate_picousd <= 0:
            spent = run_spend_query(db, spends, now)
            return spent, decide(spent)
        if not spends.reservations:
            raise ValueError("a check that reserves must count the other reservations too")
        with _transaction(db, "BEGIN IMMEDIATE"):
            db.execute(_EXPIRE_SQL, [now])
            spent = run_spend_query(db, spends, now)
            allowed = decide(spent)
            if allowed:
                r = reservation
                db.execute(_RESERVE_SQL, [r.call_uid, r.created_ts, r.estimate_picousd,
                                          r.expires_ts, r.project, r.session_id])
        return spent, allowed
    except sqlite3.OperationalError as exc:
        if not wait and _is_lock_error(exc):
            raise WouldBlock(str(exc)) from exc
        raise


class WouldBlock(Exception):
    """Another connection holds the lock; a non-waiting cap check gives up at once."""


def cap_release(db: sqlite_utils.Database, call_uid: str) -> None:
    _retry_locked(lambda: db.execute(_RELEASE_SQL, [call_uid]))


def cap_reservations(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return query(db, "SELECT * FROM cap_reservations ORDER BY created_ts")


def cap_rolling_release_ts(db: sqlite_utils.Database, window: SpendWindow,
                           excess: int) -> float | None:
    """For a rolling window: the start time of the row whose leaving the window brings the
    spend below the cap (the oldest rows summing to ``excess``); None if rows cannot."""
    kind, key = window.kind_key
    row = db.execute(_ROLLING_SQL[kind], {"start": window.start, "key": key,
                                          "excess": excess}).fetchone()
    return float(row[0]) if row else None


def cap_mark_warned(db: sqlite_utils.Database, cap_key: str, window_start: float,
                    threshold: float, now: float, *, wait: bool = True) -> bool:
    """Record that a warning was given; True only for the first process to do so.
    ``wait=False``: one attempt, and a locked database raises at once (the event loop)."""
    def mark() -> Any:
        return db.execute(_WARNED_SQL, [cap_key, window_start, threshold, now])
    cursor = _retry_locked(mark) if wait else mark()
    return bool(cursor.rowcount)
