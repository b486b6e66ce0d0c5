"""Team share: privacy-safe daily summaries written out to a shared folder.

Reading them back is :mod:`ccmeter.team`.

Layout (Hive-style partitions, JSON Lines; see docs/team-share.md for every field)::

    <share>/ccmeter/v1/month=2026-11/user=<user>/part-<machine-id>.jsonl

Design notes (the why):
- One file per user per machine per month, fully rewritten on every push from the local
  database, so a push is idempotent and two machines of one user never write the same file.
- Files are written to a dot-named temporary file in the same folder, fsynced, then
  ``os.replace``-d into place: a reader sees the old file or the new one, never half of
  one, and globbing readers (``*.jsonl``) skip the dot-named temporaries.
- Only the fields of :data:`ROW_FIELDS` leave the laptop: counts, tokens and costs per
  local day x project x model. No prompts, paths, keys, session or request ids.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ccmeter import periods, store
from ccmeter.config import CCMeterError, Paths
from ccmeter.money import usd_string
from ccmeter.share_identity import Identity, ShareSettings, machine_id, settle, write_identity
from ccmeter.untrusted import json_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PUSH_LOCK_FILE = "push.lock"
PUSH_LOCK_TIMEOUT = 120.0
STALE_TEMP_SECONDS = 3600

TOKEN_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)
COUNT_FIELDS: tuple[str, ...] = (
    "calls",
    *TOKEN_FIELDS,
    "unpriced_calls",
    "blocked_calls",
    "cap_hits",
)
#: Every field of a share row, in file order. Nothing else is ever written.
ROW_FIELDS: tuple[str, ...] = (
    "schema_version",
    "day",
    "project",
    "model",
    "calls",
    *TOKEN_FIELDS,
    "cost_usd",
    "cost_picousd",
    "unpriced_calls",
    "blocked_calls",
    "cap_hits",
)

# --- SQL (executed through store.query) -----------------------------------------------------

#: Per local day x project x model. ``calls`` are calls sent upstream (every status but
#: blocked); cost sums priced calls only, and unpriced ones are counted apart, never as $0.
SUMMARY_SQL = """
SELECT
    date(started_ts, 'unixepoch', 'localtime') AS day,
    project,
    COALESCE(model, requested_model) AS model,
    SUM(status != 'blocked') AS calls,
    SUM(input_tokens) AS input_tokens,
    SUM(cache_write_5m_tokens) AS cache_write_5m_tokens,
    SUM(cache_write_1h_tokens) AS cache_write_1h_tokens,
    SUM(cache_read_tokens) AS cache_read_tokens,
    SUM(output_tokens) AS output_tokens,
    SUM(CASE WHEN status != 'blocked' THEN cost_picousd END) AS cost_picousd,
    SUM(status != 'blocked' AND cost_picousd IS NULL) AS unpriced_calls,
    SUM(status = 'blocked') AS blocked_calls
FROM api_calls
WHERE started_ts >= :since_ts
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

CAP_EVENTS_COLUMNS_SQL = "SELECT name FROM pragma_table_info('cap_events')"

#: Used when the caps feature's ``cap_events`` table exists (columns ts, project, model).
CAP_EVENTS_SQL = """
SELECT
    date(ts, 'unixepoch', 'localtime') AS day,
    project,
    model,
    COUNT(*) AS cap_hits
FROM cap_events
WHERE ts >= :since_ts
GROUP BY 1, 2, 3
"""

#: Without a cap-events table, every blocked call is a cap hit.
BLOCKED_AS_CAP_HITS_SQL = """
SELECT
    date(started_ts, 'unixepoch', 'localtime') AS day,
    project,
    COALESCE(model, requested_model) AS model,
    COUNT(*) AS cap_hits
FROM api_calls
WHERE started_ts >= :since_ts AND status = 'blocked'
GROUP BY 1, 2, 3
"""


# --- summarising the local database ---------------------------------------------------------


def summarise(
    db: Any, settings: ShareSettings, *, since_ts: float | None = None
) -> list[dict[str, Any]]:
    """Share rows (see :data:`ROW_FIELDS`) for this user's database, names made public."""
    params = {"since_ts": float("-inf") if since_ts is None else since_ts}
    merged: dict[tuple[str, str | None, str | None], dict[str, Any]] = {}

    def slot(day: str, project: str | None, model: str | None) -> dict[str, Any]:
        key = (day, settings.public_project(project), model)
        if key not in merged:
            merged[key] = {f: 0 for f in COUNT_FIELDS} | {"cost_picousd": 0}
        return merged[key]

    for row in store.query(db, SUMMARY_SQL, params):
        target = slot(row["day"], row["project"], row["model"])
        for name in ("calls", *TOKEN_FIELDS, "unpriced_calls", "blocked_calls"):
            target[name] += int(row[name] or 0)
        target["cost_picousd"] += int(row["cost_picousd"] or 0)
    cap_columns = {r["name"] for r in store.query(db, CAP_EVENTS_COLUMNS_SQL)}
    cap_sql = (CAP_EVENTS_SQL if {"ts", "project", "model"} <= cap_columns
               else BLOCKED_AS_CAP_HITS_SQL)
    for row in store.query(db, cap_sql, params):
        slot(row["day"], row["project"], row["model"])["cap_hits"] += int(row["cap_hits"])

    out = []
    for (day, project, model), sums in sorted(merged.items(), key=_sort_key):
        cost = sums["cost_picousd"]
        if sums["calls"] and sums["unpriced_calls"] == sums["calls"]:
            cost = None
        out.append({
            "schema_version": SCHEMA_VERSION,
            "day": day,
            "project": project,
            "model": model,
            "calls": sums["calls"],
            **{name: sums[name] for name in TOKEN_FIELDS},
            "cost_usd": None if cost is None else usd_string(cost),
            "cost_picousd": cost,
            "unpriced_calls": sums["unpriced_calls"],
            "blocked_calls": sums["blocked_calls"],
            "cap_hits": sums["cap_hits"],
        })
    return out


def _sort_key(item: tuple[tuple[str, str | None, str | None], Any]) -> tuple:
    day, project, model = item[0]
    return (day, project is not None, project or "", model is not None, model or "")


# --- writing the share ----------------------------------------------------------------------


def share_base(share: Path) -> Path:
    return share / "ccmeter" / f"v{SCHEMA_VERSION}"


def encode_partition(value: str) -> str:
    """Hive-style escaping of a partition value (DuckDB, Spark and Athena decode it)."""
    return quote(value, safe="@.+-_~")


def part_path(share: Path, month: str, user: str, machine: str) -> Path:
    return (share_base(share) / f"month={month}" / f"user={encode_partition(user)}"
            / f"part-{machine}.jsonl")


def encode_rows(rows: Iterable[Mapping[str, Any]]) -> bytes:
    lines = [json_text(json.dumps({k: row[k] for k in ROW_FIELDS}, separators=(",", ":"),
                                  ensure_ascii=False)) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


@dataclass
class PushResult:
    user: str
    machine: str
    rows: int = 0
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    #: This machine's files under another user name (the user was renamed), per old name:
    #: removed, or with ``--dry-run`` to be removed.
    removed: dict[str, list[Path]] = field(default_factory=dict)


def other_user_copies(share: Path, month: str, user: str, machine: str) -> dict[str, Path]:
    """This machine's part file of ``month`` under every user folder but ``user``'s.

    A machine id belongs to one data folder, hence one database: such a file is an older
    push of the same calls under a former user name, and would count them twice.
    """
    folder = share_base(share) / f"month={month}"
    mine = f"user={encode_partition(user)}"
    found: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not entry.name.startswith("user=") or entry.name == mine:
                continue
            path = Path(entry.path) / f"part-{machine}.jsonl"
            if path.is_file():
                found[unquote(entry.name[len("user="):])] = path
    return found


def remove_part(path: Path) -> bool:
    """Withdraw a part file with one unlink: readers see it whole or not at all. False if
    it was already gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):
        _fsync_dir(path.parent)
    return True


def machine_folders(share: Path, machine: str) -> set[str]:
    """The ``user=`` folders (decoded) that hold this machine's part file of any month."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for month in os.scandir(share_base(share)):
            if not month.name.startswith("month=") or not month.is_dir():
                continue
            for entry in os.scandir(month.path):
                if (entry.name.startswith("user=")
                        and os.path.isfile(os.path.join(entry.path, f"part-{machine}.jsonl"))):
                    found.add(unquote(entry.name[len("user="):]))
    return found


def push(
    db: Any,
    paths: Paths,
    settings: ShareSettings,
    *,
    since: date | None = None,
    dry_run: bool = False,
    rename: bool = False,
) -> tuple[PushResult, dict[Path, list[dict[str, Any]]]]:
    """Rewrite this machine's file for every month the database has (from ``since``'s month).

    The name it publishes under is settled first (:func:`ccmeter.share_identity.settle`):
    a push never moves this machine's files to another name unless ``rename`` says so, and
    only then are its copies under other names removed.
    Returns what was done and, per file, the rows it holds (for ``--dry-run``).
    """
    share = settings.share
    if share is None:
        raise CCMeterError("no share folder: pass --to PATH or set [share] path in config.toml")
    if not dry_run and not share.is_dir():
        raise CCMeterError(f"share folder {share} does not exist (is it mounted?); "
                           "ccmeter creates folders inside it but never the share itself")
    since_ts = None
    if since is not None:
        since_ts = periods.month_start(since)
    rows = summarise(db, settings, since_ts=since_ts)
    machine = machine_id(paths)
    by_month: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_month.setdefault(row["day"][:7], []).append(row)
    if dry_run:
        settings = settle(paths, settings, machine_folders(share, machine), rename=rename)
        user = settings.public_user()
        result = PushResult(user=user, machine=machine, rows=len(rows))
        plan = {part_path(share, month, user, machine): month_rows
                for month, month_rows in sorted(by_month.items())}
        for month in sorted(by_month) if rename else ():
            for old_user, old in other_user_copies(share, month, user, machine).items():
                result.removed.setdefault(old_user, []).append(old)
        return result, plan
    with _machine_lock(paths):
        settings = settle(paths, settings, machine_folders(share, machine), rename=rename)
        user = settings.public_user()
        result = PushResult(user=user, machine=machine, rows=len(rows))
        plan = {part_path(share, month, user, machine): month_rows
                for month, month_rows in sorted(by_month.items())}
        for month, month_rows in sorted(by_month.items()):
            path = part_path(share, month, user, machine)
            data = encode_rows(month_rows)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _clean_stale_temps(path)
                unchanged = False
                with contextlib.suppress(OSError):
                    unchanged = path.read_bytes() == data  # then leave the file (and mtime)
                if unchanged:
                    result.unchanged.append(path)
                else:
                    write_atomic(path, data)
                    result.written.append(path)
            except OSError as exc:
                raise CCMeterError(f"cannot write {path}: {exc.strerror or exc}") from exc
            if not rename:
                continue
            # Only once this month's file is in place: a reader may see both copies for a
            # moment, never neither.
            for old_user, old in other_user_copies(share, month, user, machine).items():
                try:
                    gone = remove_part(old)
                except OSError as exc:
                    raise CCMeterError(f"cannot remove {old} (this machine's copy under "
                                       f"{old_user}, counted twice until it goes): "
                                       f"{exc.strerror or exc}") from exc
                if gone:
                    log.info("removed %s: this machine now pushes as %s", old, user)
                    result.removed.setdefault(old_user, []).append(old)
        try:
            write_identity(paths, Identity(public=user, user=settings.user))
        except OSError as exc:
            raise CCMeterError(f"pushed, but cannot keep the name this machine publishes as "
                               f"in {paths.data_dir}: {exc.strerror or exc}") from exc
    return result, plan


@contextlib.contextmanager
def _machine_lock(paths: Paths, timeout: float = PUSH_LOCK_TIMEOUT) -> Iterator[None]:
    """One push at a time from one data folder (one machine id), so that two pushes under
    two user names cannot each remove the other's fresh file. The lock file lives in the
    local data folder, never on the share; the OS releases it if the process dies."""
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with open(paths.data_dir / PUSH_LOCK_FILE, "a+b") as handle:
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                raise CCMeterError(f"another `ccmeter push` from this machine has held "
                                   f"{paths.data_dir / PUSH_LOCK_FILE} for over "
                                   f"{timeout:.0f} s; try again when it is done")
            time.sleep(0.05)
        try:
            yield
        finally:
            _unlock(handle)


def _try_lock(handle: Any) -> bool:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import msvcrt

        handle.seek(0)
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(handle: Any) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder (dot-named), fsync, rename over; fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # teammates read it; mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _clean_stale_temps(path: Path) -> None:
    """Remove this machine's own temporaries left by a push that died (never others')."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
