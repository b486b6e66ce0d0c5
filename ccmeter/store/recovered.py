"""Rows recovered from a dead proxy's call journal (:mod:`ccmeter.journal`).

Such a row is what the proxy knew at ``message_start``. Whatever the database already holds
for the call is as new or newer (the proxy's own started or final row), so a recovered row is
inserted only where there is none: it never overwrites a row's figures, and a call is never
counted twice. A started row left unfinished is told why (its ``error_type``). The dead proxy
can no longer release its calls' cap reservations; this does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ccmeter.store.calls import CALL_COLUMNS
from ccmeter.store.capspend import RELEASE_SQL
from ccmeter.store.db import retry_locked, transaction

if TYPE_CHECKING:
    import sqlite_utils

_INSERT_MISSING = "INSERT INTO api_calls ({cols}) VALUES ({marks}) ON CONFLICT(call_uid) DO NOTHING"
#: A started row (no duration: never finalized) of a call whose proxy is gone says why.
_MARK_UNFINISHED = (
    "UPDATE api_calls SET error_type = ?, metering_error = COALESCE(metering_error, ?) "
    "WHERE call_uid = ? AND status = 'incomplete' AND duration_ms IS NULL AND error_type IS NULL"
)


def insert_missing_calls(db: sqlite_utils.Database, rows: Iterable[Mapping[str, Any]], *,
                         release: Iterable[str] = (), attempts: int = 40) -> int:
    """Insert each row whose ``call_uid`` the database does not have; where the database
    has only the call's started row, set that row's ``error_type`` and ``metering_error``
    from the recovered row (nothing else); release the cap reservations of the calls in
    ``release``. One transaction, tried ``attempts`` times while another process holds the
    write lock. Returns the rows inserted."""
    rows, release = list(rows), list(release)
    inserted = 0

    def write() -> None:
        nonlocal inserted
        inserted = 0
        with transaction(db):
            for row in rows:
                cols = [c for c in CALL_COLUMNS if c in row]
                sql = _INSERT_MISSING.format(cols=", ".join(cols),
                                             marks=", ".join("?" for _ in cols))
                added = db.execute(sql, [row[c] for c in cols]).rowcount
                inserted += added
                if not added and row.get("error_type"):
                    db.execute(_MARK_UNFINISHED, [row["error_type"], row.get("metering_error"),
                                                  row["call_uid"]])
            for uid in release:
                db.execute(RELEASE_SQL, [uid])

    if rows or release:
        retry_locked(write, attempts)
    return inserted
