"""The call writer: one thread, one connection, queued rows applied in small transactions.

The proxy never writes on its byte path: :class:`CallWriter` owns one connection on its
own thread and applies queued upserts in small transactions.

It cannot die, whatever it is handed and whatever happens to the file:

- a row the database refuses (text SQLite cannot store, such as a lone surrogate from a
  header's ``\\xff`` byte; an integer beyond 64 bits; a value of no SQL type) is repaired and
  flagged in ``metering_error``, or else kept as a bare row saying why; logged once a kind;
- a database it cannot use (corrupt, read-only, its file deleted or replaced, locked by
  another process for longer than :data:`STALL_S`) puts the writer in a *failing* state with
  a reason (:attr:`CallWriter.failing`): rows are kept, the connection reopened, and writing
  tried again (at once when a row arrives, else with a back-off up to a second) until it
  works. Whoever watches the state (the addon: caps' ``on_error``, the proxy's status file)
  is told through ``on_state``;
- rows still unwritten when it is closed are counted in a log line, never dropped silently.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ccmeter.store.calls import CALL_COLUMNS, upsert_calls
from ccmeter.store.db import connect, is_lock_error

log = logging.getLogger(__name__)

#: How long the writer's connection waits for another process's lock in one attempt.
WRITER_WAIT_MS = 1_000
#: A database locked for longer than this (seconds) makes the writer *failing*: the caps
#: then follow ``on_error`` instead of waiting behind rows that cannot land.
STALL_S = 2.0
#: The open file is compared with what the path names now (deleted or replaced while
#: running: never write on into an unlinked file) before every write, and this often
#: (seconds) when idle, when a database that could not be opened is tried again too.
IDLE_CHECK_S = 2.0
#: Largest integer kept as is when a row is repaired. Bigger ones (only reached by garbage:
#: 2^53 tokens is centuries of output) are clamped to it, so that a report's SUM over many
#: rows cannot overflow SQLite's 64-bit integers (SUM raises "integer overflow"). A cost out
#: of range is not clamped but left unpriced (NULL): money that is not known is never made up.
CLAMP = 2**53 - 1
#: A row is never written with a string longer than this (characters) after a repair.
MAX_TEXT = 100_000

#: Errors by which SQLite (or the binding of a value) refuses one row, not the database.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeError, OverflowError, ValueError, TypeError, sqlite3.InterfaceError,
    sqlite3.ProgrammingError, sqlite3.IntegrityError, sqlite3.DataError,
)
_MAX_BATCH = 500


class CallWriter:
    """Applies queued call rows on its own thread, so the proxy's loop never waits on disk.

    Rows for the same ``call_uid`` are merged before writing (later values win). Rows are
    never dropped while the process lives; :meth:`close` drains what it can and logs what
    it could not write. ``on_state(reason | None)`` is called (on the writer's thread)
    whenever the writer starts or stops failing.
    """

    def __init__(self, path: Path | str, *,
                 on_state: Callable[[str | None], None] | None = None) -> None:
        self.path = Path(path)
        self.written = 0
        self.failures = 0
        self.repaired = 0
        #: Why rows cannot be written right now (None: they can), and since when.
        self.failing: str | None = None
        self.failing_since: float | None = None
        #: The latest reason it failed for, kept after it works again (``run``'s summary).
        self.last_failure: str | None = None
        #: Bumped each time the database file is (re)opened: a connection of another part
        #: (the cap checker) opened before a bump may point at a deleted file.
        self.generation = 0
        self._on_state = on_state
        self._cond = threading.Condition()
        self._pending: dict[str, dict[str, Any]] = {}  # queued, not yet taken by the thread
        self._inflight: dict[str, dict[str, Any]] = {}  # taken, not yet written (thread's)
        self._busy = False
        self._stop = False
        self._wake = False
        self._attempts = 0
        self._locked_since: float | None = None
        self._db: Any = None
        self._identity: tuple[int, int] | None = None
        self._noted: set[str] = set()
        self._batches = 0
        try:  # open now: a database that cannot be used is reported at start
            self._open()
        except Exception as exc:
            # a warning, not an error: mitmdump exits on an error logged while it starts,
            # and a proxy that runs can still refuse calls (on_error = "block") and recover
            self._failed(exc, level=logging.WARNING)
        self._thread = threading.Thread(target=self._run, name="ccmeter-writer", daemon=True)
        self._thread.start()

    # --- the proxy's side --------------------------------------------------------------------

    def put(self, row: dict[str, Any]) -> None:
        with self._cond:
            held = self._pending.get(row["call_uid"])
            if held is None:
                self._pending[row["call_uid"]] = dict(row)
            else:
                held.update(row)
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0, *, until_failure: bool = False) -> bool:
        """Wait until every queued row is on disk (tests, shutdown and the cap check use this).

        Woken by the writer itself, not by polling: the cap check runs before a call goes
        upstream, so a 5 ms poll would land in the call's time to first byte. With
        ``until_failure`` a failing writer is asked to try again at once, and False comes
        back as soon as an attempt made after this call fails (no waiting out ``timeout``
        for a database that cannot be used).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self._attempts
            if until_failure and self.failing:
                self._wake = True
                self._cond.notify_all()
            while self._pending or self._busy:
                if until_failure and self.failing and self._attempts > start:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def retry(self, timeout: float) -> bool:
        """Ask a failing writer to try the database again now (reopening it); True when it
        works (at once if it was not failing), False if not within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self.failing is None:
                return True
            start = self._attempts
            self._wake = True
            self._cond.notify_all()
            while self._attempts == start:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self.failing is None

    @property
    def idle(self) -> bool:
        """Nothing queued or being written: the database already holds every row we had."""
        return not self._pending and not self._busy

    @property
    def unwritten(self) -> int:
        """Calls whose latest row is not on disk yet."""
        with self._cond:
            return len(self._pending) + len(self._inflight)

    def close(self, timeout: float = 10.0) -> int:
        """Write what can be written (within ``timeout``) and stop; returns how many calls'
        rows could not be written (logged: never dropped silently)."""
        self.flush(timeout, until_failure=True)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        lost = self.unwritten
        if lost:
            log.error("ccmeter: %d call row(s) could not be written to %s before stopping "
                      "(%s); they are lost", lost, self.path,
                      self.failing or "still being written")
        if self._db is not None and not self._thread.is_alive():
            with contextlib.suppress(sqlite3.Error):
                self._db.conn.close()
        return lost

    # --- the writer's thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except Exception:  # a bug of ours must not stop metering: log, pause, go on
                self.failures += 1
                self._note("bug", "the call writer hit an unexpected error; it goes on",
                           exc_info=True)
                time.sleep(0.5)

    def _step(self) -> bool:
        """Wait for rows, write them; False when stopped."""
        with self._cond:
            while not (self._pending or self._inflight or self._stop or self._wake):
                if not self._cond.wait(IDLE_CHECK_S):
                    break  # idle: look at the file now and then
            if self._stop and (self.failing or not (self._pending or self._inflight)):
                return False
            for uid, row in self._pending.items():
                held = self._inflight.get(uid)
                if held is None:
                    self._inflight[uid] = row
                else:
                    held.update(row)
            self._pending = {}
            self._busy = bool(self._inflight)
            self._wake = False
        ok = self._attempt()
        with self._cond:
            self._attempts += 1
            self._busy = bool(self._inflight)
            self._cond.notify_all()
            if not ok and not self._stop:
                # try again at once when a row arrives or a flush asks, else after a back-off
                self._cond.wait_for(lambda: self._wake or self._stop or bool(self._pending),
                                    timeout=min(0.1 * 2 ** min(self.failures, 4), 1.0))
        if ok and not self._busy:
            self._maybe_checkpoint()
        if not ok:
            time.sleep(0.05)  # never a hot loop, however many rows arrive
        return True

    def _attempt(self) -> bool:
        try:
            db = self._connection()
            rows = list(self._inflight.values())
            for start in range(0, len(rows), _MAX_BATCH):
                chunk = rows[start:start + _MAX_BATCH]
                self._write_chunk(db, chunk)
                for row in chunk:
                    if self._inflight.get(row["call_uid"]) is row:
                        del self._inflight[row["call_uid"]]
                self.written += len(chunk)
        except sqlite3.OperationalError as exc:
            if not is_lock_error(exc):
                self._failed(exc)
                return False
            self.failures += 1
            now = time.monotonic()
            self._locked_since = self._locked_since or now
            if now - self._locked_since >= STALL_S:
                self._set_failing(f"the database {self.path} is locked by another process")
            return False
        except Exception as exc:
            self._failed(exc)
            return False
        self._locked_since = None
        self._set_failing(None)
        return True

    def _connection(self) -> Any:
        """The open connection; reopened when the path no longer names the open file."""
        if self._db is not None and _identity(self.path) != self._identity:  # one stat
            log.warning("ccmeter: the database %s was deleted or replaced while running; "
                        "opening it anew (calls recorded before are in the old file)", self.path)
            self._close_db()
            self._open()
            self._report_state()  # whoever keeps a status beside the database: write it again
        if self._db is None:
            self._open()
        return self._db

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = connect(self.path, wait_ms=WRITER_WAIT_MS, lock_attempts=1)
        # Checkpoints run after a batch is acknowledged (_maybe_checkpoint), never inside its
        # COMMIT as auto-checkpoints do: the cap check waits for queued rows (flush) before
        # every call, and a checkpoint syncs the file.
        db.execute("PRAGMA wal_autocheckpoint=0")
        try:  # a file SQLite could only open read-only says so on its first write: now
            db.execute("DELETE FROM cap_reservations WHERE 0")
        except BaseException:
            db.conn.close()
            raise
        self._db, self._identity = db, _identity(self.path)
        self.generation += 1

    def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.conn.close()

    def _failed(self, exc: BaseException, level: int = logging.ERROR) -> None:
        """The database cannot be used now: reopen it on the next attempt."""
        self.failures += 1
        self._close_db()
        if isinstance(exc, sqlite3.OperationalError) and is_lock_error(exc):
            self._locked_since = self._locked_since or time.monotonic()
            return
        self._set_failing(f"cannot write to {self.path}: {_describe(exc)}", level)

    def _set_failing(self, reason: str | None, level: int = logging.ERROR) -> None:
        if reason == self.failing:
            return
        was = self.failing
        self.failing = reason
        self.last_failure = reason or self.last_failure
        self.failing_since = None if reason is None else (self.failing_since or time.time())
        if reason is None:
            log.warning("ccmeter: metering works again: rows are written to %s", self.path)
        elif was is None:
            log.log(level, "ccmeter: metering stopped: %s; rows are kept and written once "
                    "it works again", reason)
        self._report_state()

    def _report_state(self) -> None:
        if self._on_state is not None:
            try:
                self._on_state(self.failing)
            except Exception:
                log.exception("ccmeter: reporting the writer's state failed")

    #: Write batches between two of the writer's WAL checkpoints (~1,000 WAL pages, like
    #: SQLite's default auto-checkpoint); a busy queue defers one up to 4 times as long.
    CHECKPOINT_EVERY = 64

    def _maybe_checkpoint(self) -> None:
        self._batches += 1
        if self._batches < self.CHECKPOINT_EVERY or (
                self._pending and self._batches < 4 * self.CHECKPOINT_EVERY):
            return
        self._batches = 0
        try:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.debug("WAL checkpoint skipped", exc_info=True)

    # --- rows the database refuses -----------------------------------------------------------

    def _write_chunk(self, db: Any, rows: list[dict[str, Any]]) -> None:
        try:
            upsert_calls(db, rows, retry=False)
        except ROW_ERRORS:
            for row in rows:  # find the rows refused; the others are written as they are
                self._write_one(db, row)

    def _write_one(self, db: Any, row: dict[str, Any]) -> None:
        try:
            upsert_calls(db, [row], retry=False)
            return
        except ROW_ERRORS as exc:
            refused = exc
        fixed, notes = repair_row(row)
        if notes:
            try:
                upsert_calls(db, [fixed], retry=False)
                self.repaired += 1
                self._note(f"repair:{','.join(sorted(notes))}",
                           "ccmeter: a call row was stored after a repair (%s)",
                           "; ".join(notes.values()))
                return
            except ROW_ERRORS as exc:
                refused = exc
        bare = bare_row(fixed, refused)
        try:
            upsert_calls(db, [bare], retry=False)
            self.repaired += 1
            self._note(f"bare:{type(refused).__name__}",
                       "ccmeter: a call row the database refused is kept as a metering "
                       "error only: %s", _describe(refused))
        except ROW_ERRORS as exc:
            self._note(f"lost:{type(exc).__name__}",
                       "ccmeter: a call row could not be stored at all: %s", _describe(exc))

    def _note(self, kind: str, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log a kind of problem once (later ones at debug level)."""
        level = logging.DEBUG if kind in self._noted else logging.WARNING
        self._noted.add(kind)
        log.log(level, message, *args, exc_info=exc_info)


def repair_row(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A storable copy of ``row`` and a note per column that had to change; the notes are
    added to the row's ``metering_error``."""
    fixed: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for key, value in row.items():
        if key not in CALL_COLUMNS:
            fixed[key] = value
            continue
        new, note = _storable(value)
        if key == "cost_picousd" and note and isinstance(value, int):
            new, note = None, "out of range: left unpriced"  # unknown money is NULL
        fixed[key] = new
        if note:
            notes[key] = f"{key} {note}"
    if notes:
        previous = fixed.get("metering_error")
        text = "stored after repair: " + "; ".join(notes.values())
        fixed["metering_error"] = (f"{previous}; {text}" if previous else text)[:1000]
        if "metering_error" in notes:  # it was itself unstorable: keep only the notes
            fixed["metering_error"] = text[:1000]
    return fixed, notes


def _storable(value: Any) -> tuple[Any, str | None]:
    if value is None or isinstance(value, bytes):
        return value, None
    if isinstance(value, bool):
        return int(value), None
    if isinstance(value, int):
        if -CLAMP <= value <= CLAMP:
            return value, None
        clamped = CLAMP if value > 0 else -CLAMP
        return clamped, f"{'>' if value > 0 else '<'} {clamped} clamped"
    if isinstance(value, float):
        if math.isfinite(value):
            return value, None
        return None, f"{value} dropped"
    if isinstance(value, str):
        text, note = _storable_text(value)
        if len(text) > MAX_TEXT:
            return text[:MAX_TEXT], f"cut to {MAX_TEXT} characters"
        return text, note
    try:
        text = json.dumps(value, default=str, ensure_ascii=True)
    except Exception:
        text = repr(value)
    return _storable_text(text)[0][:MAX_TEXT], f"of type {type(value).__name__} stored as text"


def _storable_text(text: str) -> tuple[str, str | None]:
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        pass
    try:  # bytes that came in as surrogate escapes (a header's \xff): show them as \xff
        fixed = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # other lone surrogates: \ud800
        fixed = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return fixed, "had text SQLite cannot store (escaped)"


def bare_row(row: dict[str, Any], refused: BaseException) -> dict[str, Any]:
    """What is left of a row the database refuses even repaired: its key, its time, its
    status and why (a ``metering_error`` row)."""
    now = time.time()
    started_ts = row.get("started_ts")
    if not isinstance(started_ts, int | float) or not math.isfinite(started_ts):
        started_ts = now
    bare: dict[str, Any] = {
        "call_uid": _storable_text(str(row.get("call_uid")))[0][:200],
        "started_ts": started_ts,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started_ts)) + "Z",
        "status": row.get("status") if row.get("status") in (
            "ok", "incomplete", "upstream_error", "blocked") else "incomplete",
        "metering_error": f"row refused by the database: {_describe(refused)}"[:500],
        "updated_ts": now,
    }
    for key, value in row.items():
        if key not in CALL_COLUMNS:
            bare[key] = value  # the reservation release goes with it
    return bare


def _describe(exc: BaseException) -> str:
    text = _storable_text(str(exc))[0]
    return f"{type(exc).__name__}: {text}"[:300]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
