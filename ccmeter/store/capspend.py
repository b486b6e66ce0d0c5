"""The SQL behind spending caps: window spends, reservations, warnings (``ccmeter.caps``
owns the policy)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccmeter.record import Record
from ccmeter.store.db import connect, is_lock_error, query, retry_locked, transaction

if TYPE_CHECKING:
    import sqlite_utils

#: The longest a cap check waits for another process's write lock before the caps'
#: ``on_error`` policy decides: a call must never hang behind a locked database.
CAP_CHECK_WAIT_MS = 2_000

#: A key in a row given to :func:`upsert_calls`: true on a call's final row.
RELEASE_RESERVATION = "_release_reservation"
CAP_BUCKET_S = 900

RELEASE_SQL = "DELETE FROM cap_reservations WHERE call_uid = ?"
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


class SpendWindow(Record):
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


class Reservation(Record):
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


class SpendQuery(Record):
    """The one statement that sums some windows' spends. A proxy builds it once per window
    (``caps.guard.Guard`` keeps it until the window ends) and runs it before every call."""

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
    ``wait_ms`` for another writer's lock (0 for the proxy's event loop) — opening it
    included: a database locked while the connection is made raises rather than holding the
    event loop for the default busy timeout."""
    db = connect(path, wait_ms=wait_ms, lock_attempts=1)
    db.execute("PRAGMA wal_autocheckpoint=0")
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
        with transaction(db, "BEGIN IMMEDIATE"):
            db.execute(_EXPIRE_SQL, [now])
            spent = run_spend_query(db, spends, now)
            allowed = decide(spent)
            if allowed:
                r = reservation
                db.execute(_RESERVE_SQL, [r.call_uid, r.created_ts, r.estimate_picousd,
                                          r.expires_ts, r.project, r.session_id])
        return spent, allowed
    except sqlite3.OperationalError as exc:
        if not wait and is_lock_error(exc):
            raise WouldBlock(str(exc)) from exc
        raise


class WouldBlock(Exception):
    """Another connection holds the lock; a non-waiting cap check gives up at once."""


def cap_release(db: sqlite_utils.Database, call_uid: str) -> None:
    retry_locked(lambda: db.execute(RELEASE_SQL, [call_uid]))


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
    cursor = retry_locked(mark) if wait else mark()
    return bool(cursor.rowcount)
