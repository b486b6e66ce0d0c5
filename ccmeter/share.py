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
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from ccmeter import periods, sharestore, store
from ccmeter.config import CCMeterError, Paths
from ccmeter.money import usd_string
from ccmeter.share_identity import Identity, ShareSettings, machine_id, settle, write_identity
from ccmeter.untrusted import json_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PUSH_LOCK_FILE = "push.lock"
PUSH_LOCK_TIMEOUT = 120.0

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
#: Written after :data:`ROW_FIELDS` when this machine belongs to a team (``ccmeter team set``).
OPTIONAL_FIELDS: tuple[str, ...] = ("team", "group")

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
            **({"team": settings.team, "group": settings.group} if settings.team else {}),
        })
    return out


def _sort_key(item: tuple[tuple[str, str | None, str | None], Any]) -> tuple:
    day, project, model = item[0]
    return (day, project is not None, project or "", model is not None, model or "")


# --- writing the share ----------------------------------------------------------------------

BASE_KEY = f"ccmeter/v{SCHEMA_VERSION}"


def share_base(share: Path) -> Path:
    return share / BASE_KEY


def encode_partition(value: str) -> str:
    """Hive-style escaping of a partition value (DuckDB, Spark and Athena decode it)."""
    return quote(value, safe="@.+-_~")


def part_key(month: str, user: str, machine: str) -> str:
    return f"{BASE_KEY}/month={month}/user={encode_partition(user)}/part-{machine}.jsonl"


def part_path(share: Path, month: str, user: str, machine: str) -> Path:
    return share / part_key(month, user, machine)


def encode_rows(rows: Iterable[Mapping[str, Any]]) -> bytes:
    lines = [json_text(json.dumps({k: row[k] for k in (*ROW_FIELDS, *OPTIONAL_FIELDS)
                                   if k in row}, separators=(",", ":"), ensure_ascii=False))
             for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


@dataclass
class PushResult:
    user: str
    machine: str
    rows: int = 0
    written: list[Path | str] = field(default_factory=list)
    unchanged: list[Path | str] = field(default_factory=list)
    #: This machine's files under another user name (the user was renamed), per old name:
    #: removed, or with ``--dry-run`` to be removed.
    removed: dict[str, list[Path | str]] = field(default_factory=dict)


def machine_parts(keys: Iterable[str], machine: str) -> dict[tuple[str, str], str]:
    """This machine's part files in a listing of the share: (month, user) -> key."""
    found: dict[tuple[str, str], str] = {}
    name = f"part-{machine}.jsonl"
    for key in keys:
        parts = key.split("/")
        if (len(parts) == 5 and parts[4] == name and parts[2].startswith("month=")
                and parts[3].startswith("user=")):
            found[(parts[2][len("month="):], unquote(parts[3][len("user="):]))] = key
    return found


def push(
    db: Any,
    paths: Paths,
    settings: ShareSettings,
    *,
    since: date | None = None,
    dry_run: bool = False,
    rename: bool = False,
) -> tuple[PushResult, dict[Path | str, list[dict[str, Any]]]]:
    """Rewrite this machine's file for every month the database has (from ``since``'s month).

    The name it publishes under is settled first (:func:`ccmeter.share_identity.settle`):
    a push never moves this machine's files to another name unless ``rename`` says so, and
    only then are its copies under other names removed.
    Returns what was done and, per file, the rows it holds (for ``--dry-run``).
    """
    if settings.share is None:
        raise CCMeterError("no share: pass --to PATH|URL or set [share] path in config.toml")
    target = sharestore.open_share(settings.share)
    if not dry_run:
        target.check()
    since_ts = None
    if since is not None:
        since_ts = periods.month_start(since)
    rows = summarise(db, settings, since_ts=since_ts)
    machine = machine_id(paths)
    by_month: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_month.setdefault(row["day"][:7], []).append(row)
    lock = contextlib.nullcontext() if dry_run else _machine_lock(paths)
    with lock:
        mine = machine_parts(target.keys(BASE_KEY), machine)
        settings = settle(paths, settings, {user for _, user in mine}, rename=rename)
        user = settings.public_user()
        result = PushResult(user=user, machine=machine, rows=len(rows))
        plan = {target.where(part_key(month, user, machine)): month_rows
                for month, month_rows in sorted(by_month.items())}
        others = {(m, u): k for (m, u), k in mine.items() if u != user}
        if dry_run:
            for month in sorted(by_month) if rename else ():
                for (m, old_user), old in sorted(others.items()):
                    if m == month:
                        result.removed.setdefault(old_user, []).append(target.where(old))
            return result, plan
        for month, month_rows in sorted(by_month.items()):
            key = part_key(month, user, machine)
            data = encode_rows(month_rows)
            target.tidy(key)
            if target.read(key) == data:
                result.unchanged.append(target.where(key))  # leave the file (and mtime)
            else:
                target.write(key, data)
                result.written.append(target.where(key))
            if not rename:
                continue
            # Only once this month's file is in place: a reader may see both copies for a
            # moment, never neither.
            for (m, old_user), old in sorted(others.items()):
                if m != month:
                    continue
                try:
                    gone = target.remove(old)
                except CCMeterError as exc:
                    raise CCMeterError(f"{exc} (this machine's copy under {old_user}, "
                                       "counted twice until it goes)") from exc
                if gone:
                    log.info("removed %s: this machine now pushes as %s", old, user)
                    result.removed.setdefault(old_user, []).append(target.where(old))
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


write_atomic = sharestore.write_atomic  # kept here for callers of the folder layout
