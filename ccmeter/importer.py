"""``ccmeter import``: Claude Code's transcripts into the database, incrementally.

No CLI here. :func:`import_transcripts` walks the transcript folders, reads each file from
where the last import stopped (a file that was rewritten is read again from its start),
classifies lines with :mod:`ccmeter.transcripts`, merges each call's lines, prices the calls
with the catalog at their own time, and writes them with the files' new positions, in
batches of one transaction each.

Fast and flat by construction: files are read in binary blocks, a line that cannot be a
call is skipped after a byte search (only assistant lines with usage are parsed), a file
whose size, inode and modification time did not change is not opened at all, and what is
held in memory is one block and one batch of calls, whatever the corpus's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccmeter import attribution, store, transcripts
from ccmeter.gitroot import git_top
from ccmeter.transcripts import CallRecord
from ccmeter.usage import Hop, TokenCounts, Usage

if TYPE_CHECKING:
    from ccmeter.pricing import Catalog

log = logging.getLogger(__name__)

BLOCK_BYTES = 4 * 1024 * 1024
#: Calls held before they are written (with the positions of the files they came from).
BATCH_CALLS = 5000
HEAD_BYTES = 4096
#: The longest line kept whole while looking for its end; a longer one is skipped (counted
#: as malformed: no line Claude Code writes for a call comes near it).
MAX_LINE_BYTES = 256 * 1024 * 1024


def transcript_files(roots: Sequence[str | os.PathLike[str]]) -> Iterator[str]:
    """Every ``*.jsonl`` under the roots (subagents' files in session folders too), sorted."""
    seen: set[str] = set()
    for root in roots:
        found: list[str] = []
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            found.extend(os.path.join(folder, n) for n in names if n.endswith(".jsonl"))
        for path in sorted(found):
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                yield path


@contextlib.contextmanager
def one_at_a_time(lock_file: Path) -> Iterator[None]:
    """Imports into one database run one after another (each ``ccmeter run`` may start one in
    the background); the next one then finds little or nothing new."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@dataclass
class ImportStats:
    """What one import did, for the command's summary (and its JSON)."""

    files: int = 0             # transcript files found
    files_read: int = 0        # read (new, grown or rewritten)
    files_reread: int = 0      # of those, rewritten or replaced: read again from the start
    bytes_read: int = 0
    lines: int = 0             # whole lines read
    call_lines: int = 0        # assistant lines with usage
    new_calls: int = 0         # calls added
    updated_calls: int = 0     # calls whose figures a later line completed
    on_wire: int = 0           # of the calls added, those the proxy metered too (they count
                               # once, from the wire)
    synthetic: int = 0         # Claude Code's own <synthetic> messages, skipped
    malformed: int = 0         # lines that are not JSON objects or whose usage is unreadable
    unknown_types: int = 0     # records of a type this version does not know, skipped
    truncated: int = 0         # files ending in part of a line (read again next time)
    unreadable: int = 0        # files that could not be read
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _project(cwd: str | None, cache: dict[str, str | None]) -> str | None:
    if cwd is None:
        return None
    if cwd not in cache:
        # named as the proxy names a call's project: the git repository's folder, else the
        # folder's own name
        cache[cwd] = (attribution.project_from_dir(cwd, git_top(cwd)) if os.path.isabs(cwd)
                      else None)
    return cache[cwd]


def record_row(record: CallRecord, catalog: Catalog, now: float) -> dict[str, Any]:
    """The ``transcript_calls`` row of a call (its ``project`` resolved), priced at its own
    time."""
    usage = record.usage
    row: dict[str, Any] = {
        "call_key": record.key,
        "started_at": _iso(record.started_ts),
        "started_ts": record.started_ts,
        "provider": "anthropic",
        "session_id": record.session_id,
        "project": record.project,
        "agent_id": record.agent_id,
        "call_kind": "subagent" if record.sidechain else "main",
        "model": record.model,
        "request_id": record.request_id,
        "message_id": record.message_id,
        "input_tokens": usage.input_tokens,
        "cache_write_5m_tokens": usage.cache_write_5m_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
        "thinking_tokens": usage.thinking_tokens,
        "web_search_requests": usage.web_search_requests,
        "web_fetch_requests": usage.web_fetch_requests,
        "service_tier": usage.service_tier,
        "inference_geo": usage.inference_geo,
        "speed": usage.speed,
        "hops_json": json.dumps([asdict(h) for h in usage.hops]) if usage.hops else None,
        "usage_problems": "; ".join(usage.problems) or None,
        "stop_reason": record.stop_reason,
        "updated_ts": now,
    }
    try:
        price = catalog.price(record.model, usage, datetime.fromtimestamp(record.started_ts, UTC))
    except Exception as exc:  # a catalog bug must not stop an import: unpriced, and logged
        log.exception("ccmeter: pricing failed for model %r", record.model)
        row.update(cost_picousd=None, catalog_version=None,
                   pricing_note=f"pricing failed: {exc}"[:200])
        return row
    row.update(cost_picousd=price.cost_picousd, catalog_version=price.catalog_version,
               pricing_note=price.note)
    return row


def record_from_row(row: Mapping[str, Any]) -> CallRecord:
    """A stored call as the record it was written from (to merge new lines into it)."""
    hops: tuple[Hop, ...] = ()
    if row.get("hops_json"):
        try:
            hops = tuple(Hop(h["kind"], h["model"], TokenCounts(**h["tokens"]))
                         for h in json.loads(row["hops_json"]))
        except (ValueError, TypeError, KeyError):
            hops = ()
    problems = tuple(sorted(row["usage_problems"].split("; "))) if row.get(
        "usage_problems") else ()
    usage = Usage(
        input_tokens=row["input_tokens"],
        cache_write_5m_tokens=row["cache_write_5m_tokens"],
        cache_write_1h_tokens=row["cache_write_1h_tokens"],
        cache_read_tokens=row["cache_read_tokens"],
        output_tokens=row["output_tokens"],
        thinking_tokens=row["thinking_tokens"],
        web_search_requests=row["web_search_requests"],
        web_fetch_requests=row["web_fetch_requests"],
        service_tier=row["service_tier"],
        inference_geo=row["inference_geo"],
        speed=row["speed"],
        hops=hops,
        problems=problems,
    )
    return CallRecord(
        key=row["call_key"], started_ts=row["started_ts"], request_id=row["request_id"],
        message_id=row["message_id"], session_id=row["session_id"], cwd=None,
        project=row["project"], agent_id=row["agent_id"],
        sidechain=row["call_kind"] == "subagent", model=row["model"], usage=usage,
        stop_reason=row["stop_reason"],
    )


def _same(a: CallRecord, b: CallRecord) -> bool:
    """Whether two records would store the same row (problems compared as sets)."""
    for f in fields(CallRecord):
        if f.name == "usage":
            continue
        if getattr(a, f.name) != getattr(b, f.name):
            return False
    return (replace(a.usage, problems=tuple(sorted(a.usage.problems)))
            == replace(b.usage, problems=tuple(sorted(b.usage.problems))))


class _Batch:
    """Calls read but not yet written, and the file positions they were read up to."""

    def __init__(self, db: Any, catalog: Catalog, stats: ImportStats) -> None:
        self.db, self.catalog, self.stats = db, catalog, stats
        self.calls: dict[str, CallRecord] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.projects: dict[str, str | None] = {}

    def add(self, record: CallRecord) -> None:
        old = self.calls.get(record.key)
        self.calls[record.key] = record if old is None else transcripts.merge(old, record)

    def flush(self) -> None:
        keys = list(self.calls)
        stored = store.transcript_calls_by_key(self.db, keys) if keys else {}
        now = time.time()
        rows, added = [], []
        for key, record in self.calls.items():
            # the working directory names a project once per call, and is not kept
            record = CallRecord(
                record.key, record.started_ts, record.request_id, record.message_id,
                record.session_id, None, record.agent_id, record.sidechain, record.model,
                record.usage, record.stop_reason, _project(record.cwd, self.projects))
            row = stored.get(key) if stored else None
            if row is not None:
                old = record_from_row(row)
                record = transcripts.merge(old, record)
                if _same(record, old):
                    continue
                self.stats.updated_calls += 1
            else:
                added.append(key)
            rows.append(record_row(record, self.catalog, now))
        store.save_transcript_batch(self.db, rows, list(self.files.values()))
        self.stats.new_calls += len(added)
        if added:
            self.stats.on_wire += store.calls_on_wire(self.db, added)
        self.calls.clear()
        self.files.clear()


def _head(path: str, length: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(min(length, HEAD_BYTES))).hexdigest()


def _resume_at(path: str, known: Mapping[str, Any] | None, st: os.stat_result) -> int | None:
    """Where to start reading: None when the file is as it was last read; the offset read
    up to when it only grew; 0 when it is new, or was rewritten or replaced."""
    if known is None:
        return 0
    if known["inode"] != st.st_ino or known["device"] != st.st_dev:
        return 0
    if st.st_size == known["size"] and st.st_mtime_ns == known["mtime_ns"]:
        return None
    offset = int(known["offset"])
    if st.st_size < offset or _head(path, offset) != known["head_sha256"]:
        return 0
    return offset


def import_transcripts(db: Any, catalog: Catalog, roots: Sequence[str | os.PathLike[str]], *,
                       progress: Callable[[ImportStats], None] | None = None) -> ImportStats:
    """Read what is new in the transcripts under ``roots`` into the database."""
    started = time.perf_counter()
    stats = ImportStats()
    store.prepare_import(db)
    known = store.known_files(db)
    batch = _Batch(db, catalog, stats)
    for path in transcript_files(roots):
        stats.files += 1
        try:
            st = os.stat(path)
            start = _resume_at(path, known.get(path), st)
            if start is None:
                continue
            if start == 0 and path in known:
                stats.files_reread += 1
            _read_file(path, start, st, batch, known.get(path))
        except OSError as exc:
            log.info("ccmeter: cannot read transcript %s: %s", path, exc)
            stats.unreadable += 1
            continue
        stats.files_read += 1
        if progress is not None:
            progress(stats)
    batch.flush()
    stats.seconds = time.perf_counter() - started
    return stats


def _read_file(path: str, start: int, st: os.stat_result, batch: _Batch,
               known: Mapping[str, Any] | None) -> None:
    """Read ``path`` from ``start`` (the end of a whole line) to its last whole line."""
    stats = batch.stats
    classify = transcripts.classify
    counts = dict.fromkeys((transcripts.CALL, transcripts.SYNTHETIC, transcripts.MALFORMED,
                            transcripts.UNKNOWN, transcripts.OTHER, transcripts.BLANK), 0)
    before = int(known["lines"]) if known and start else 0
    lines = 0
    offset = start
    with open(path, "rb") as handle:
        handle.seek(start)
        tail = b""
        while True:
            block = handle.read(BLOCK_BYTES)
            if not block:
                break
            stats.bytes_read += len(block)
            if tail:
                block = tail + block
            cut = block.rfind(b"\n") + 1
            if not cut:
                tail = block
                if len(tail) > MAX_LINE_BYTES:  # one absurd line: skip to its end
                    offset += len(tail)
                    counts[transcripts.MALFORMED] += 1
                    tail = b""
                continue
            tail = block[cut:]
            for line in block[:cut].split(b"\n")[:-1]:
                kind, record = classify(line)
                counts[kind] += 1
                if record is not None:
                    batch.add(record)
            lines += block.count(b"\n", 0, cut)
            offset += cut
            if len(batch.calls) >= BATCH_CALLS:
                # a position part-way: its size is the offset, so it never reads as unchanged
                batch.files[path] = _file_row(path, st, offset, before + lines, partial=True)
                batch.flush()
        if tail:
            stats.truncated += 1  # a line being written, or a cut file: read it next time
        handle.seek(0)
        head = handle.read(min(offset, HEAD_BYTES))
    stats.lines += lines
    stats.call_lines += counts[transcripts.CALL]
    stats.synthetic += counts[transcripts.SYNTHETIC]
    stats.malformed += counts[transcripts.MALFORMED]
    stats.unknown_types += counts[transcripts.UNKNOWN]
    batch.files[path] = _file_row(path, st, offset, before + lines,
                                  head=hashlib.sha256(head).hexdigest())
    if len(batch.calls) >= BATCH_CALLS or len(batch.files) >= BATCH_CALLS:
        batch.flush()


def _file_row(path: str, st: os.stat_result, offset: int, lines: int, *,
              head: str | None = None, partial: bool = False) -> dict[str, Any]:
    """The bookkeeping row of a file read up to ``offset``. Its size and time are those
    seen before reading it: a file that grew meanwhile is read on from there next time."""
    if head is None:
        head = _head(path, offset)
    return {"path": path, "device": st.st_dev, "inode": st.st_ino,
            "size": offset if partial else st.st_size,
            "mtime_ns": st.st_mtime_ns, "offset": offset, "head_sha256": head, "lines": lines,
            "imported_ts": time.time()}
