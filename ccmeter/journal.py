"""The proxy's journal: every streamed call's billed input on disk from its ``message_start``.

The database learns of a call through the writer thread: its first row half a second after
``message_start`` (sooner would compete with the client for the CPU just after the first
byte), its final row at the end. A proxy killed in between would lose a call the API has
billed. So, right after the first chunk has gone on to the client, each call's
``message_start`` (its id, model and usage: never prompt text) and who sent it are appended
here as one line, with one ``os.write`` on an ``O_APPEND`` file. There is no fsync: the page
cache outlives a killed process (not a power cut), and a line costs microseconds.

Each proxy process has its own file, ``<data dir>/journal/<pid>-<time>.jsonl``, locked for
as long as the process lives (``flock``; ``msvcrt.locking`` on Windows), so a file that can be
locked belongs to a proxy that is gone. :func:`fold_dead` turns such a file into rows for the
calls the database does not have — never over a row that is there, which is as new or newer
— releases their cap reservations, and deletes the file. The next proxy start and
``ccmeter report`` call it.

A live proxy's journal stays small: a segment is rotated at :data:`SEGMENT_BYTES` and deleted
(the current one emptied) once every call in it has a row in the database; a clean stop
finalizes every call in flight and deletes the journal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccmeter import attribution, config

if TYPE_CHECKING:
    from ccmeter import pricing
    from ccmeter.callrow import Call

log = logging.getLogger(__name__)

#: A segment is closed and a new one started past this size (a line is ~0.5 KB).
SEGMENT_BYTES = 1 << 20
#: A line longer than this is not written (only an absurd usage object could make one).
MAX_LINE = 64 * 1024
VERSION = 1
#: The ``error_type`` of a row folded in from a dead proxy's journal.
DIED = "proxy_died"
DIED_NOTE = "the proxy stopped without finishing this call: input from its journal, output unknown"

_WHO = tuple(f.name for f in fields(attribution.Attribution))
_O_BINARY = getattr(os, "O_BINARY", 0)


def journal_dir(paths: config.Paths) -> Path:
    return paths.journal_dir


# --- locks: who holds a journal file ---------------------------------------------------


def _try_lock(fd: int) -> bool:
    """Lock ``fd``'s file for this process, without waiting; False when another holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


# --- the live proxy's side -------------------------------------------------------------


@dataclass(eq=False)
class _Segment:
    path: Path
    fd: int
    size: int = 0
    #: Calls with a line here whose row has not been handed to the writer yet.
    outstanding: set[str] = field(default_factory=set)


class Journal:
    """One proxy process's journal. Used from the proxy's event loop only.

    Never raises: a journal that cannot be written logs once and goes quiet, and metering
    goes on as before (through the writer alone).
    """

    def __init__(self, where: Path) -> None:
        self.directory = where
        self._segments: list[_Segment] = []  # oldest first; the last one is written to
        self._where: dict[str, _Segment] = {}  # call uid -> the segment with its line
        #: Calls journaled before their request was read: a second line adds who sent them.
        self.needs_detail: set[str] = set()
        self._serial = 0
        self.broken = False
        try:
            config.ensure_private_dir(where)
            self._open_segment()
        except OSError as exc:
            self._fail(exc)

    def owns(self, path: Path) -> bool:
        return any(seg.path == path for seg in self._segments)

    def _open_segment(self) -> None:
        self._serial += 1
        path = self.directory / f"{os.getpid()}-{time.time_ns()}-{self._serial}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o600)
        if not _try_lock(fd):  # a fresh file nobody else has opened: cannot happen
            os.close(fd)
            raise OSError(f"cannot lock {path}")
        self._segments.append(_Segment(path, fd))

    def _fail(self, exc: BaseException) -> None:
        if not self.broken:
            log.warning("ccmeter: the call journal in %s cannot be written (%s); a proxy "
                        "killed mid-call may lose that call", self.directory, exc)
        self.broken = True

    def _append(self, record: dict[str, Any]) -> bool:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_LINE:
            log.warning("ccmeter: a call's journal line is %d bytes; not journaled", len(line))
            return False
        seg = self._segments[-1]
        os.write(seg.fd, line)
        seg.size += len(line)
        return True

    def started(self, call: Call, message: Mapping[str, Any] | None) -> None:
        """Journal a call at its ``message_start`` (``message``: that event's ``message``)."""
        if self.broken:
            return
        try:
            if self._segments[-1].size >= SEGMENT_BYTES:
                self._open_segment()
            msg = message if isinstance(message, Mapping) else {}
            endpoint = call.endpoint
            record: dict[str, Any] = {
                "v": VERSION, "uid": call.uid, "ts": call.started_ts, "host": call.host,
                "ep": [endpoint.provider, endpoint.operation, endpoint.model, endpoint.region,
                       endpoint.region_kind, endpoint.stream],
                "msg": {k: msg[k] for k in ("id", "model", "usage") if k in msg},
            }
            if call.run_id:
                record["run"] = call.run_id
            if call.pending is None:  # the request has been read: who sent it is known
                record["project"] = call.project
                record["who"] = _who(call)
            if not self._append(record):
                return
            seg = self._segments[-1]
            seg.outstanding.add(call.uid)
            self._where[call.uid] = seg
            if call.pending is not None:
                self.needs_detail.add(call.uid)
        except Exception as exc:
            self._fail(exc)

    def detail(self, call: Call) -> None:
        """Who sent a journaled call, once its request has been read."""
        self.needs_detail.discard(call.uid)
        if self.broken or call.uid not in self._where:
            return
        try:
            self._append({"v": VERSION, "uid": call.uid, "project": call.project,
                          "who": _who(call)})
        except Exception as exc:
            self._fail(exc)

    def queued(self, uid: str) -> None:
        """A row of call ``uid`` has been handed to the writer: once the writer has been
        idle since, the database holds it and its line is no longer needed."""
        seg = self._where.pop(uid, None)
        if seg is not None:
            seg.outstanding.discard(uid)
        self.needs_detail.discard(uid)

    def collect(self, writer_idle: bool) -> None:
        """Drop what the database already holds. ``writer_idle``: every row handed to the
        writer so far is written (call it before handing over another)."""
        if self.broken or not writer_idle:
            return
        try:
            for seg in self._segments[:-1]:
                if not seg.outstanding:
                    self._segments.remove(seg)
                    os.close(seg.fd)
                    seg.path.unlink(missing_ok=True)
            current = self._segments[-1]
            if current.size and not current.outstanding:
                os.ftruncate(current.fd, 0)
                current.size = 0
        except Exception as exc:
            self._fail(exc)

    def close(self, *, delete: bool) -> None:
        """Release the files; ``delete`` when the database holds every journaled call (else
        they are left for the next proxy start to fold)."""
        for seg in self._segments:
            try:
                os.close(seg.fd)
                if delete:
                    seg.path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("ccmeter: closing the call journal %s: %s", seg.path, exc)
        self._segments = []
        self._where.clear()
        self.broken = True


def _who(call: Call) -> dict[str, Any]:
    who = call.attribution
    out = {name: getattr(who, name) for name in _WHO}
    if out["working_dir"]:  # the row keeps only the folder's name
        out["working_dir"] = Path(out["working_dir"]).name
    return out


# --- a dead proxy's journal, folded into the database ----------------------------------


def calls_from(lines: Iterable[bytes]) -> dict[str, dict[str, Any]]:
    """The calls of a journal, each a merge of its lines (later lines add to earlier ones).
    A line that is not whole JSON (a torn last line) is skipped."""
    calls: dict[str, dict[str, Any]] = {}
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("v") != VERSION:
            continue
        uid = record.get("uid")
        if not isinstance(uid, str):
            continue
        if "msg" in record:
            calls[uid] = record
        elif uid in calls:
            calls[uid].update(record)
    return calls


def row_of(record: Mapping[str, Any], catalog: pricing.Catalog, now: float) -> dict[str, Any]:
    """The row a journaled call gets when its proxy died: its ``message_start`` row, priced
    as the proxy would have priced it, marked as cut short by the proxy's death."""
    from ccmeter import (
        callrow,  # the proxy's row builder; imports no mitmproxy at run time
        providers,  # here: reports import this module, and it is not light
    )

    ep = record.get("ep") or []
    endpoint = providers.Endpoint(*ep) if len(ep) == 6 else providers.MESSAGES
    raw_who = record.get("who")
    who = attribution.Attribution(**{k: v for k, v in raw_who.items() if k in _WHO}
                                  if isinstance(raw_who, Mapping) else {})
    call = callrow.Call(uid=str(record["uid"]), started_ts=float(record["ts"]),
                        host=str(record.get("host") or ""), attribution=who,
                        project=record.get("project"), endpoint=endpoint)
    run = record.get("run")
    call.run_id = run if isinstance(run, str) else None
    call.state.apply_event("message_start", {"message": dict(record.get("msg") or {})})
    row = callrow.build_row(call, status="incomplete", catalog=catalog, now=now)
    row.update(error_type=DIED, metering_error=DIED_NOTE)
    return row


def fold_dead(where: Path, db: Any, catalog: pricing.Catalog, *, own: Journal | None = None,
              now: float | None = None, attempts: int = 40) -> int:
    """Fold every journal no live process holds into ``db`` (a store connection): a row for
    each call the database does not have, cap reservations released; then delete it.
    Returns the rows inserted. A journal that cannot be folded (the database refuses, or is
    still locked after ``attempts`` tries) stays for the next try."""
    from ccmeter import store

    try:
        paths = sorted(where.glob("*.jsonl"))
    except OSError:
        return 0
    inserted = 0
    for path in paths:
        if own is not None and own.owns(path):
            continue
        try:
            fd = os.open(path, os.O_RDWR | _O_BINARY)
        except OSError:  # folded and deleted by another process meanwhile
            continue
        try:
            if not _try_lock(fd):
                continue  # a live proxy's
            with os.fdopen(os.dup(fd), "rb") as handle:
                handle.seek(0)
                records = calls_from(handle.read().splitlines())
            stamp = time.time() if now is None else now
            rows = []
            for record in records.values():
                try:
                    rows.append(row_of(record, catalog, stamp))
                except Exception as exc:
                    log.warning("ccmeter: a call in the journal %s could not be read (%s)",
                                path.name, exc)
            added = store.insert_missing_calls(db, rows, release=list(records),
                                               attempts=attempts)
            inserted += added
            if sys.platform == "win32":  # an open file cannot be deleted there
                os.close(fd)
                fd = -1
            path.unlink(missing_ok=True)
            if added:
                log.warning("ccmeter: %d call(s) of a proxy that stopped mid-call recovered "
                            "from its journal %s", added, path.name)
        except Exception as exc:  # one line (the CLI folds too); the details in debug
            log.warning("ccmeter: the call journal %s was not folded in (%s); kept for later",
                        path.name, exc)
            log.debug("folding %s", path, exc_info=True)
        finally:
            if fd >= 0:
                os.close(fd)
    return inserted
