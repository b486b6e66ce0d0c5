"""Named writes and reads on the transcript tables (``ccmeter import`` and ``reconcile``).

``transcript_calls`` holds one row per call a transcript records, keyed on ``call_key``;
``transcript_files`` remembers how far each file was read. A call the proxy metered too
counts once, from the wire: reports read transcript rows through the ``imported_calls``
view, which leaves out every row a wire row matches by request id or message id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from ccmeter.store.db import query, retry_locked, transaction

if TYPE_CHECKING:
    import sqlite_utils

#: Columns of ``transcript_calls``, in schema order. ``call_key`` is the key.
TRANSCRIPT_COLUMNS: tuple[str, ...] = (
    "call_key", "started_at", "started_ts", "provider", "session_id", "project", "agent_id",
    "call_kind", "model", "request_id", "message_id", "input_tokens", "cache_write_5m_tokens",
    "cache_write_1h_tokens", "cache_read_tokens", "output_tokens", "thinking_tokens",
    "web_search_requests", "web_fetch_requests", "service_tier", "inference_geo", "speed",
    "hops_json", "usage_problems", "stop_reason", "cost_picousd", "catalog_version",
    "pricing_note", "updated_ts",
)
FILE_COLUMNS: tuple[str, ...] = (
    "path", "device", "inode", "size", "mtime_ns", "offset", "head_sha256", "lines",
    "imported_ts",
)

_UPSERT_CALL = (
    f"INSERT INTO transcript_calls ({', '.join(TRANSCRIPT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in TRANSCRIPT_COLUMNS)}) ON CONFLICT(call_key) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in TRANSCRIPT_COLUMNS if c != "call_key")
)
_UPSERT_FILE = (
    f"INSERT INTO transcript_files ({', '.join(FILE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in FILE_COLUMNS)}) ON CONFLICT(path) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in FILE_COLUMNS if c != "path")
)
_CALL_VALUES = itemgetter(*TRANSCRIPT_COLUMNS)
_FILE_VALUES = itemgetter(*FILE_COLUMNS)
KNOWN_FILES_SQL = f"SELECT {', '.join(FILE_COLUMNS)} FROM transcript_files"
_CALLS_BY_KEY_SQL = "SELECT * FROM transcript_calls WHERE call_key IN ({marks})"
#: How many of some transcript calls a wire row matches (by request id or message id).
_ON_WIRE_SQL = """
SELECT COUNT(*) FROM transcript_calls t WHERE t.call_key IN ({marks}) AND (
    EXISTS (SELECT 1 FROM api_calls w WHERE w.request_id = t.request_id)
    OR EXISTS (SELECT 1 FROM api_calls w WHERE w.message_id = t.message_id))
"""
ANY_IMPORTED_SQL = "SELECT EXISTS (SELECT 1 FROM transcript_calls) AS any_call"
_KEYS_PER_QUERY = 500


def known_files(db: sqlite_utils.Database) -> dict[str, dict[str, Any]]:
    """Every transcript file read before, by path, with where its reading stopped."""
    return {row["path"]: row for row in query(db, KNOWN_FILES_SQL)}


def transcript_calls_by_key(db: sqlite_utils.Database,
                            keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The stored rows of these calls (those the database has), by ``call_key``."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = list(keys[start:start + _KEYS_PER_QUERY])
        sql = _CALLS_BY_KEY_SQL.format(marks=", ".join("?" for _ in chunk))
        for row in query(db, sql, chunk):
            found[row["call_key"]] = row
    return found


def calls_on_wire(db: sqlite_utils.Database, keys: Sequence[str]) -> int:
    """How many of these stored transcript calls the proxy metered too."""
    total = 0
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = list(keys[start:start + _KEYS_PER_QUERY])
        sql = _ON_WIRE_SQL.format(marks=", ".join("?" for _ in chunk))
        total += int(db.execute(sql, chunk).fetchone()[0])
    return total


def save_transcript_batch(db: sqlite_utils.Database, calls: Iterable[Mapping[str, Any]],
                          files: Iterable[Mapping[str, Any]]) -> None:
    """Write call rows (by ``call_key``, every column given) and file positions in one
    transaction, so a file's position never moves past calls that were not written."""
    # in key order: the table's B-tree is written front to back, not at random
    call_rows = sorted(map(_CALL_VALUES, calls))
    file_rows = list(map(_FILE_VALUES, files))
    if not call_rows and not file_rows:
        return

    def write() -> None:
        with transaction(db):
            if call_rows:
                db.conn.executemany(_UPSERT_CALL, call_rows)
            if file_rows:
                db.conn.executemany(_UPSERT_FILE, file_rows)

    retry_locked(write)


def prepare_import(db: sqlite_utils.Database) -> None:
    """A page cache big enough for the import's index writes (32 MB, this connection only)."""
    db.execute("PRAGMA cache_size=-32768")


def has_imported_calls(db: Any) -> bool:
    return bool(query(db, ANY_IMPORTED_SQL)[0]["any_call"])


# --- reconcile ------------------------------------------------------------------------------

#: Per session seen both ways: what the wire metered, what the transcripts say, and the wire
#: calls no transcript line records. Wire calls refused by a cap (never sent) and failed calls
#: (no answer) are left out: they are in no transcript and cost nothing.
RECONCILE_SQL = """
WITH wire AS (
    SELECT session_id, COUNT(*) AS calls,
        SUM(input_tokens) AS input_tokens,
        SUM(cache_write_5m_tokens + cache_write_1h_tokens) AS cache_write_tokens,
        SUM(cache_read_tokens) AS cache_read_tokens,
        SUM(output_tokens) AS output_tokens,
        SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced_calls,
        SUM(NOT EXISTS (SELECT 1 FROM transcript_calls t WHERE t.request_id = w.request_id)
            AND NOT EXISTS (SELECT 1 FROM transcript_calls t WHERE t.call_key = w.message_id)
        ) AS missing_calls,
        MIN(started_ts) AS first_ts, MAX(started_ts) AS last_ts, MAX(project) AS project
    FROM api_calls w
    WHERE session_id IS NOT NULL AND status IN ('ok', 'incomplete') {wire_where}
    GROUP BY session_id
), transcript AS (
    SELECT session_id, COUNT(*) AS calls,
        SUM(input_tokens) AS input_tokens,
        SUM(cache_write_5m_tokens + cache_write_1h_tokens) AS cache_write_tokens,
        SUM(cache_read_tokens) AS cache_read_tokens,
        SUM(output_tokens) AS output_tokens,
        SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced_calls,
        MIN(started_ts) AS first_ts, MAX(started_ts) AS last_ts, MAX(project) AS project
    FROM transcript_calls
    WHERE session_id IS NOT NULL {transcript_where}
    GROUP BY session_id
)
SELECT wire.session_id AS session_id,
    COALESCE(wire.project, transcript.project) AS project,
    MIN(wire.first_ts, transcript.first_ts) AS first_ts,
    MAX(wire.last_ts, transcript.last_ts) AS last_ts,
    wire.calls AS wire_calls, transcript.calls AS transcript_calls,
    wire.missing_calls AS missing_calls,
    wire.input_tokens AS wire_input_tokens, transcript.input_tokens AS transcript_input_tokens,
    wire.cache_write_tokens AS wire_cache_write_tokens,
    transcript.cache_write_tokens AS transcript_cache_write_tokens,
    wire.cache_read_tokens AS wire_cache_read_tokens,
    transcript.cache_read_tokens AS transcript_cache_read_tokens,
    wire.output_tokens AS wire_output_tokens, transcript.output_tokens AS transcript_output_tokens,
    wire.cost_picousd AS wire_cost_picousd, wire.priced_calls AS wire_priced_calls,
    transcript.cost_picousd AS transcript_cost_picousd,
    transcript.priced_calls AS transcript_priced_calls
FROM wire JOIN transcript ON transcript.session_id = wire.session_id
ORDER BY first_ts, session_id
"""
_RECONCILE_FILTERS = (
    ("since", "started_ts >= :since"),
    ("until", "started_ts < :until"),
    ("project", "project = :project"),
)


def reconcile_rows(db: Any, since: float | None = None, until: float | None = None,
                   project: str | None = None) -> list[dict[str, Any]]:
    """One row per session with calls both on the wire and in the transcripts, in the
    range (each side's calls filtered by their own time and project)."""
    params = {"since": since, "until": until, "project": project}
    clauses = [clause for name, clause in _RECONCILE_FILTERS if params[name] is not None]
    extra = "".join(f" AND {clause}" for clause in clauses)
    sql = RECONCILE_SQL.format(wire_where=extra, transcript_where=extra)
    return query(db, sql, {k: v for k, v in params.items() if v is not None})
