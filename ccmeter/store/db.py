"""Opening the database, its transactions, and waiting out another process's lock.

- WAL mode and a generous busy timeout let any number of proxy processes and CLI readers
  share one file; writers retry on ``database is locked`` instead of losing a row.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccmeter.store.migrations import MIGRATIONS

if TYPE_CHECKING:
    import sqlite_utils

BUSY_TIMEOUT_MS = 15_000


def connect(path: Path | str, *, wait_ms: int = BUSY_TIMEOUT_MS,
            lock_attempts: int = 40) -> sqlite_utils.Database:
    """Open (creating if needed) the database, in WAL mode, migrated to the latest schema.

    ``wait_ms`` is the connection's busy timeout; setting it up retries a locked database
    ``lock_attempts`` times (the call writer passes 1: it waits out a lock itself).
    """
    path = Path(path)
    make_private(path)
    conn = sqlite3.connect(str(path), timeout=wait_ms / 1000, check_same_thread=False,
                           isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout={wait_ms}")
        import sqlite_utils  # here, not at import: the status line never needs it

        db = sqlite_utils.Database(conn)
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"), lock_attempts)
        db.execute("PRAGMA synchronous=NORMAL")
        migrate(db, lock_attempts)
        # after the migrations (whose one-off sorts may be large): a write to a table with
        # triggers (the caps' and the rollup's) keeps a statement journal per row, which
        # in memory is a few KB instead of a temporary file (~7 us a row)
        db.execute("PRAGMA temp_store=MEMORY")
    except BaseException:
        conn.close()  # a file that cannot be used is not held open
        raise
    return db


def make_private(path: Path) -> None:
    """The database file, and the folder it is in, readable by their owner only (whichever
    command creates them first): they hold projects, sessions and spend. SQLite gives its
    ``-wal`` and ``-shm`` files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if path.parent.stat().st_mode & 0o077:
            path.parent.chmod(0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        elif path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # not ours to change (a shared mount): SQLite says what it cannot do


class MigratedDatabase:
    """A database already at the latest schema, opened with plain :mod:`sqlite3`.

    It answers ``conn`` and ``execute`` as :class:`sqlite_utils.Database` does, which is all
    the reading commands use; anything else builds that Database (importing sqlite-utils,
    ~30-60 ms with its plugin scan) on first use and hands the call to it.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._full: sqlite_utils.Database | None = None

    def execute(self, sql: str, parameters: Any = None) -> sqlite3.Cursor:
        if parameters is not None:
            return self.conn.execute(sql, parameters)
        return self.conn.execute(sql)

    def _database(self) -> sqlite_utils.Database:
        if self._full is None:
            import sqlite_utils

            self._full = sqlite_utils.Database(self.conn)
        return self._full

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database(), name)

    def __getitem__(self, name: str) -> Any:
        return self._database()[name]


def connect_migrated(path: Path | str) -> MigratedDatabase | sqlite_utils.Database:
    """The database at ``path`` for a command that reads it: when the file is already in WAL
    mode at the latest schema (the usual case), a :class:`MigratedDatabase` without
    sqlite-utils; otherwise (missing, older, unreadable) whatever :func:`connect` does."""
    path = Path(path)
    if path.is_file():
        make_private(path)  # a file an older ccmeter made readable by all is tightened
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if (conn.execute("PRAGMA user_version").fetchone()[0] >= len(MIGRATIONS)
                    and conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"):
                conn.execute("PRAGMA synchronous=NORMAL")
                return MigratedDatabase(conn)
        except sqlite3.Error:
            pass  # connect() below meets the same problem and says so as it always has
        conn.close()
    return connect(path)


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database, lock_attempts: int = 40) -> int:
    """Apply pending migrations; safe when several processes start at once."""
    if schema_version(db) >= len(MIGRATIONS):
        return schema_version(db)
    def upgrade() -> None:
        with transaction(db):
            current = schema_version(db)  # another process may have migrated meanwhile
            for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
                step(db)
                db.execute(f"PRAGMA user_version={number}")

    retry_locked(upgrade, lock_attempts)
    return schema_version(db)


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
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


@contextlib.contextmanager
def snapshot(db: Any) -> Iterator[None]:
    """One read transaction around several queries, so they all see the same committed
    state (a writer's commit in between is seen by none of them, or by all of the next
    report). Inside a transaction the caller already holds, it adds nothing."""
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def is_lock_error(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY / SQLITE_LOCKED)."""
    return "locked" in str(exc) or "busy" in str(exc)


def retry_locked(action: Callable[[], Any], attempts: int = 40) -> Any:
    """Run ``action``, retrying while another process holds the write lock."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_lock_error(exc):
                raise
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))
    return None



def query(db: sqlite_utils.Database | sqlite3.Connection, sql: str,
          params: Any = ()) -> list[dict[str, Any]]:
    """Run a read query (SQL kept as a named constant by the caller) and return dict rows.

    ``db`` may also be a plain connection from :func:`connect_reader`.
    """
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def connect_reader(path: Path | str, *, any_thread: bool = False) -> sqlite3.Connection:
    """A plain read-only connection, for the status line: it runs after every Claude Code
    turn, so it skips sqlite-utils (and its plugin scan) and migrations. It fails if the
    file is missing or too old to hold the expected tables; the caller shows a minimal line.
    ``any_thread``: the caller serializes its use across threads itself (the dashboard).
    """
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                           timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=not any_thread)
    conn.execute("PRAGMA query_only=1")
    return conn



def data_version(db: sqlite_utils.Database | sqlite3.Connection) -> int:
    """Changes whenever another connection commits: a cheap "did rows land?" poll."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])
