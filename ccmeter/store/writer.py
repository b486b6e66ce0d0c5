"""The call writer: one thread, one connection, queued rows applied in small transactions.

The proxy never writes on its byte path: :class:`CallWriter` owns one connection on its
own thread and applies queued upserts in small transactions.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ccmeter.store.calls import upsert_calls
from ccmeter.store.db import connect

log = logging.getLogger(__name__)


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
