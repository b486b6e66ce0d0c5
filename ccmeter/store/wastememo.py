"""The SQL behind the waste memo (:mod:`ccmeter.wastememo`): the trigger-kept session versions
in the database (migration 13), one session's rows, and the memo file's own tables.

The memo file is a separate SQLite file in the platform's cache folder: the dashboard opens
the database read-only, and nothing here is needed to read it right (deleting the file
only costs time).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Sessions whose rows' span (a superset: only ever widened) meets [:lo, :hi).
SESSIONS_SQL = """
SELECT session_id, version, first_ts, last_ts FROM waste_sessions
WHERE last_ts >= :lo AND first_ts < :hi
"""

EPOCH_SQL = "SELECT epoch FROM waste_epoch LIMIT 1"

#: Each call's fields in :class:`ccmeter.waste.CacheCall`'s order, as ``CacheCall.from_row``
#: reads them (a missing count is 0, a missing provider ``anthropic``, an empty cache key
#: none; the fingerprints are read from the key when a cause needs them).
CALL_FIELDS = """call_uid, started_ts, session_id, agent_id, call_kind, project, model,
    COALESCE(NULLIF(input_tokens, ''), 0), COALESCE(NULLIF(cache_write_5m_tokens, ''), 0),
    COALESCE(NULLIF(cache_write_1h_tokens, ''), 0), COALESCE(NULLIF(cache_read_tokens, ''), 0),
    cache_change, NULL, NULL, NULL, COALESCE(NULLIF(provider, ''), 'anthropic'), speed,
    service_tier, inference_geo, cost_picousd, NULLIF(cache_key_json, '')"""

#: One session's calls in [:start, :end), as ``store.cache_calls`` reads them for all.
SESSION_RANGE_SQL = f"""
SELECT {CALL_FIELDS} FROM api_calls
WHERE session_id = :session AND started_ts >= :start AND started_ts < :end
  AND status != 'blocked'
"""
#: Every session's calls in [:start, :end) (``store.cache_calls``'s rows).
RANGE_SQL = f"""
SELECT {CALL_FIELDS} FROM api_calls
WHERE started_ts >= :start AND started_ts < :end AND session_id IS NOT NULL
  AND status != 'blocked'
"""

MEMO_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY,
        version INTEGER NOT NULL) WITHOUT ROWID""",
    # each loss (the day grouping reads them by quarter hour)
    """CREATE TABLE IF NOT EXISTS losses (session_id TEXT NOT NULL, call_uid TEXT NOT NULL,
        started_ts REAL NOT NULL, project TEXT, kind TEXT NOT NULL, cause TEXT NOT NULL,
        tokens INTEGER NOT NULL, waste INTEGER)""",
    "CREATE INDEX IF NOT EXISTS losses_session ON losses (session_id)",
    # their sums by session, project and cause; ``calls``: the distinct calls of the group
    """CREATE TABLE IF NOT EXISTS sums (session_id TEXT NOT NULL, project TEXT,
        cause TEXT NOT NULL, calls INTEGER NOT NULL, rewrite_tokens INTEGER NOT NULL,
        never_read_tokens INTEGER NOT NULL, priced_sum INTEGER NOT NULL,
        priced INTEGER NOT NULL, losses INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sums_session ON sums (session_id)",
    # the distinct calls with a loss by session and project (a call may lose twice)
    """CREATE TABLE IF NOT EXISTS calls (session_id TEXT NOT NULL, project TEXT,
        calls INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS calls_session ON calls (session_id)",
)
TABLES = ("meta", "sessions", "losses", "sums", "calls")

_CHOSEN = """session_id IN (SELECT session_id FROM temp.chosen)
  AND (:project IS NULL OR project = :project)"""
#: The sums of :func:`ccmeter.wastereport._sum` per group, over the memo of the sessions in
#: the temporary table ``chosen``; ``{key}`` is the group's column. ``calls`` is right for
#: causes only (a call loses once per cause); other groups take it from :data:`CALLS_SQL`.
SUMS_SQL = f"""
SELECT {{key}} AS key, SUM(calls), SUM(rewrite_tokens), SUM(never_read_tokens),
       SUM(priced_sum), SUM(priced), SUM(losses)
FROM sums WHERE {_CHOSEN} GROUP BY 1
"""
CALLS_SQL = f"SELECT {{key}} AS key, SUM(calls) FROM calls WHERE {_CHOSEN} GROUP BY 1"
#: Day groups: the losses by quarter hour (every UTC offset in use is a whole quarter).
QUARTER_SUMS_SQL = f"""
SELECT CAST(started_ts / 900 AS INTEGER) AS key, COUNT(DISTINCT call_uid),
       COALESCE(SUM(CASE WHEN kind = 'rewrite' THEN tokens END), 0),
       COALESCE(SUM(CASE WHEN kind = 'never_read' THEN tokens END), 0),
       COALESCE(SUM(waste), 0), COUNT(waste), COUNT(*)
FROM losses WHERE {_CHOSEN} GROUP BY 1
"""
MEMO_KEYS = {"cause": "cause", "project": "project", "session": "session_id",
             "total": "NULL"}
#: Calls of one quarter hour (a day group whose quarter holds a local midnight).
MEMO_QUARTER_SQL = f"""
SELECT started_ts, call_uid, kind, tokens, waste FROM losses
WHERE {_CHOSEN} AND started_ts >= :start AND started_ts < :end
"""


def sessions(db: Any, lo: float, hi: float) -> list[tuple[str, int, float, float]] | None:
    """(session, version, first, last) of the sessions meeting [lo, hi); None when the
    database predates migration 13 (or cannot say)."""
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    try:
        epoch = conn.execute(EPOCH_SQL).fetchone()
        rows = conn.execute(SESSIONS_SQL, {"lo": lo, "hi": hi}).fetchall()
    except sqlite3.Error:
        return None
    return rows if epoch else None


def epoch(db: Any) -> str | None:
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    try:
        row = conn.execute(EPOCH_SQL).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def session_calls(db: Any, session_id: str, start: float, end: float
                  ) -> list[tuple[Any, ...]]:
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    return conn.execute(SESSION_RANGE_SQL, {"session": session_id, "start": start,
                                            "end": end}).fetchall()


def range_calls(db: Any, start: float, end: float) -> list[tuple[Any, ...]]:
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    return conn.execute(RANGE_SQL, {"start": start, "end": end}).fetchall()


def db_file(db: Any) -> str | None:
    """The main database's file ("" or None: in memory)."""
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main":
            return str(row[2] or "") or None
    return None


def open_memo(path: Path, meta: dict[str, str]) -> sqlite3.Connection:
    """The memo file at ``path``, emptied when it was made for another database or
    catalog (``meta`` differs)."""
    from ccmeter.store.db import make_private

    make_private(path)  # sessions, projects and money: the owner's only, as the database
    conn = sqlite3.connect(str(path), timeout=5, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # a lost memo is only recomputed
        for statement in MEMO_SCHEMA:
            conn.execute(statement)
        if dict(conn.execute("SELECT key, value FROM meta").fetchall()) != meta:
            conn.execute("BEGIN IMMEDIATE")
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
            conn.execute("COMMIT")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS chosen (session_id TEXT PRIMARY KEY)")
    except BaseException:
        conn.close()
        raise
    return conn


def memo_versions(memo: sqlite3.Connection) -> dict[str, int]:
    return dict(memo.execute("SELECT session_id, version FROM sessions").fetchall())


def memo_store(memo: sqlite3.Connection, done: Sequence[tuple[str, int]],
               losses: Sequence[tuple[Any, ...]], sums: Sequence[tuple[Any, ...]],
               calls: Sequence[tuple[Any, ...]]) -> None:
    """Replace these sessions' memo (``done``: session, version) with their ``losses``
    (session, call, started_ts, project, kind, cause, tokens, waste), ``sums`` and ``calls``
    rows (as the tables hold them)."""
    memo.execute("BEGIN IMMEDIATE")
    try:
        for table in ("losses", "sums", "calls"):
            memo.executemany(f"DELETE FROM {table} WHERE session_id = ?",
                             [(s,) for s, _ in done])
        memo.executemany("INSERT OR REPLACE INTO sessions VALUES (?, ?)", done)
        memo.executemany("INSERT INTO losses VALUES (?, ?, ?, ?, ?, ?, ?, ?)", losses)
        memo.executemany("INSERT INTO sums VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", sums)
        memo.executemany("INSERT INTO calls VALUES (?, ?, ?)", calls)
        memo.execute("COMMIT")
    except BaseException:
        memo.execute("ROLLBACK")
        raise


def memo_sums(memo: sqlite3.Connection, chosen: Iterable[str], keys: Sequence[str],
              project: str | None) -> dict[str, list[list[Any]]]:
    """Per group way in ``keys`` (cause, project, session, day or total), the rows (key,
    calls, rewrite tokens, never-read tokens, priced sum, priced, losses) of the chosen
    sessions' memo; a day's key is its quarter hour (``started_ts // 900``)."""
    memo.execute("DELETE FROM temp.chosen")
    memo.executemany("INSERT INTO temp.chosen VALUES (?)", [(s,) for s in chosen])
    out: dict[str, list[list[Any]]] = {}
    params = {"project": project}
    for key in keys:
        if key == "day":
            out[key] = [list(r) for r in memo.execute(QUARTER_SUMS_SQL, params)]
            continue
        rows = [list(r) for r in memo.execute(SUMS_SQL.format(key=MEMO_KEYS[key]), params)]
        if key != "cause":
            calls = dict(memo.execute(CALLS_SQL.format(key=MEMO_KEYS[key]), params).fetchall())
            for row in rows:
                row[1] = calls.get(row[0], 0)
        out[key] = rows
    return out


def memo_quarter(memo: sqlite3.Connection, start: float, end: float,
                 project: str | None) -> list[tuple[Any, ...]]:
    return memo.execute(MEMO_QUARTER_SQL, {"start": start, "end": end,
                                           "project": project}).fetchall()
