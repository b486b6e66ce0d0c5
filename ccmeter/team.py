"""The team's summaries read back from a share folder, and totalled. Standard library only.

Every part file under ``<share>/ccmeter/v1/month=*/user=*/`` (see :mod:`ccmeter.share` for
the layout and docs/team-share.md for the fields) is read and checked against the schema. A
file that does not parse, or breaks the schema, is skipped whole (never half-counted) and
named in a warning. Rows are then grouped by one or two of :data:`DIMENSIONS`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ccmeter.config import CCMeterError
from ccmeter.share import BASE_KEY, COUNT_FIELDS, SCHEMA_VERSION

log = logging.getLogger(__name__)

DIMENSIONS: tuple[str, ...] = ("user", "project", "model", "day", "week", "month", "team",
                               "group")
TIME_DIMENSIONS = frozenset({"day", "week", "month"})


# --- reading the share ----------------------------------------------------------------------


@dataclass
class TeamData:
    rows: list[dict[str, Any]]
    files: int = 0
    skipped: list[tuple[Path | str, str]] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [f"skipped {path}: {reason}" for path, reason in self.skipped]


class _BadFile(ValueError):
    pass


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH_DIR = re.compile(r"month=(\d{4}-\d{2})")
_PART_NAME = re.compile(r"part-[0-9A-Za-z_-]{1,64}\.jsonl")


def read_share(share: Path | str | Any, *, since: date | None = None, until: date | None = None,
               skip_machine: str | None = None, empty_ok: bool = False,
               cache: dict[str, tuple[str, list[dict[str, Any]]]] | None = None) -> TeamData:
    """Every user's rows in [since, until] (days, inclusive); bad files skipped and named.

    ``skip_machine`` leaves out that machine's part files (a laptop adding its own live
    spend to the others'). With a ``cache`` (key -> (stamp, rows)), a file whose stamp
    (ETag, or mtime and size) is unchanged is not read again."""
    from ccmeter import sharestore

    target = share if isinstance(share, sharestore.FolderShare | sharestore.ObjectShare) \
        else sharestore.open_share(share)
    stamps = target.stamps(BASE_KEY)
    keys = sorted(stamps)
    if not keys:
        target.check()
        folder = target.root / BASE_KEY if isinstance(target, sharestore.FolderShare) else None
        if not empty_ok and folder is not None and not folder.is_dir():
            raise CCMeterError(f"{share} holds no ccmeter share yet "
                               f"({target.where(BASE_KEY)} is missing); "
                               f"run `ccmeter push --to {share}` first")
    lo = since.isoformat() if since else ""
    hi = until.isoformat() if until else "9999-99-99"
    data = TeamData(rows=[])
    for key in keys:
        parts = key.split("/")
        if len(parts) != 5:
            continue
        match = _MONTH_DIR.fullmatch(parts[2])
        if not match or not parts[3].startswith("user="):
            continue
        month = match.group(1)
        if month < lo[:7] or month > hi[:7]:
            continue  # partition pruning
        user = unquote(parts[3][len("user="):])
        name = parts[4]
        if name.startswith(".") or not name.endswith(".jsonl"):
            continue
        path = target.where(key)
        if not _PART_NAME.fullmatch(name):
            data.skipped.append((path, "not a ccmeter part file name (a sync "
                                       "conflict copy?); not counted"))
            continue
        if skip_machine is not None and name == f"part-{skip_machine}.jsonl":
            continue
        try:
            if cache is not None and key in cache and cache[key][0] == stamps[key]:
                rows = cache[key][1]  # unchanged since the last read: not fetched again
            else:
                raw = target.read(key)
                if raw is None:
                    continue  # removed since the listing
                rows = _read_file(raw, month)
                if cache is not None:
                    cache[key] = (stamps[key], rows)
        except (_BadFile, CCMeterError) as exc:
            data.skipped.append((path, str(exc)))
            log.info("skipped %s: %s", path, exc)
            continue
        data.files += 1
        for row in rows:
            if lo <= row["day"] <= hi:
                row["user"] = user
                data.rows.append(row)
    return data


def _read_file(raw: bytes, month: str) -> list[dict[str, Any]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadFile("not UTF-8 text") from exc
    if text and not text.endswith("\n"):
        raise _BadFile("last line is cut short (half-written file?)")
    lines = [line for line in text.splitlines() if line.strip()]
    try:  # one decode for the whole file: several times faster than line by line
        objects = json.loads("[" + ",".join(lines) + "]")
        if len(objects) != len(lines):
            raise ValueError("a line holds more than one value")
    except ValueError:
        objects = None
    rows = []
    for number, line in enumerate(lines, start=1):
        if objects is None:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _BadFile(f"line {number} is not JSON ({exc.msg})") from exc
        else:
            obj = objects[number - 1]
        try:
            rows.append(_check_row(obj, month))
        except (ValueError, KeyError, TypeError) as exc:
            raise _BadFile(f"line {number}: {exc}") from exc
    return rows


def _check_row(obj: Any, month: str) -> dict[str, Any]:
    """The row if it keeps to schema version 1 (extra fields are allowed and ignored)."""
    if type(obj) is not dict:
        raise ValueError("not a JSON object")
    version = obj.get("schema_version")
    if type(version) is not int:
        raise ValueError("schema_version missing")
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version {version}, this ccmeter reads {SCHEMA_VERSION}")
    day = obj.get("day")
    if type(day) is not str or day[:7] != month or not _is_day(day):
        raise ValueError(f"day {day!r} is not a date in month {month}")
    for name in ("project", "model"):
        value = obj.get(name)
        if value is not None and type(value) is not str:
            raise ValueError(f"{name} must be a string or null")
    for name in COUNT_FIELDS:
        value = obj.get(name)
        if type(value) is not int or value < 0:  # type() is int: JSON true is not a count
            raise ValueError(f"{name} must be a non-negative integer")
    cost = obj.get("cost_picousd")
    if cost is not None and type(cost) is not int:
        raise ValueError("cost_picousd must be an integer or null")
    obj.setdefault("project", None)
    obj.setdefault("model", None)
    obj.setdefault("cost_picousd", None)
    for name in ("team", "group"):
        value = obj.get(name)
        if value is not None and type(value) is not str:
            raise ValueError(f"{name} must be a string or null")
        obj[name] = value
    return obj


@functools.lru_cache(maxsize=4096)
def _is_day(text: str) -> bool:
    if not _DAY.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# --- aggregating ----------------------------------------------------------------------------


def dimension_value(row: Mapping[str, Any], dimension: str) -> str | None:
    if dimension == "day":
        return row["day"]
    if dimension == "month":
        return row["day"][:7]
    if dimension == "week":
        return iso_week(row["day"])
    return row[dimension]


@functools.lru_cache(maxsize=4096)
def iso_week(day: str) -> str:
    """``2026-11-27`` -> ``2026-W48`` (ISO 8601 week, Monday first)."""
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def aggregate(rows: Iterable[Mapping[str, Any]], by: Sequence[str]) -> list[dict[str, Any]]:
    """Group share rows by one or two dimensions of :data:`DIMENSIONS`.

    ``cost_picousd`` is the exact sum of priced calls; it is None only when every call in the
    group was unpriced (shown as "unpriced", never $0). Groups are ordered by time when a
    time dimension is asked for, else by cost, highest first.
    """
    by = check_by(by)
    groups: dict[tuple, dict[str, Any]] = {}
    users: dict[tuple, set[str]] = {}
    for row in rows:
        key = tuple(dimension_value(row, dim) for dim in by)
        group = groups.get(key)
        if group is None:
            group = groups[key] = dict(zip(by, key, strict=True)) | {f: 0 for f in COUNT_FIELDS}
            group["cost_picousd"] = 0
            users[key] = set()
        for name in COUNT_FIELDS:
            group[name] += row[name]
        if row["cost_picousd"] is not None:
            group["cost_picousd"] += row["cost_picousd"]
        users[key].add(row["user"])
    out = []
    for key, group in groups.items():
        if group["calls"] and group["unpriced_calls"] == group["calls"]:
            group["cost_picousd"] = None
        group["users"] = len(users[key])
        out.append(group)
    return sort_groups(out, by)


def totals(groups: Sequence[Mapping[str, Any]], rows: Iterable[Mapping[str, Any]]
           ) -> dict[str, Any]:
    total: dict[str, Any] = {f: sum(g[f] for g in groups) for f in COUNT_FIELDS}
    priced = [g["cost_picousd"] for g in groups if g["cost_picousd"] is not None]
    all_unpriced = total["calls"] and total["unpriced_calls"] == total["calls"]
    total["cost_picousd"] = None if all_unpriced else sum(priced)
    total["users"] = len({r["user"] for r in rows})
    return total


def sort_groups(groups: list[dict[str, Any]], by: Sequence[str]) -> list[dict[str, Any]]:
    def text(value: Any) -> tuple[bool, str]:
        return (value is None, value or "")

    if any(dim in TIME_DIMENSIONS for dim in by):
        return sorted(groups, key=lambda g: tuple(text(g[d]) for d in by))
    return sorted(groups, key=lambda g: (
        -(g["cost_picousd"] if g["cost_picousd"] is not None else -1),
        tuple(text(g[d]) for d in by),
    ))


def check_by(by: Sequence[str]) -> list[str]:
    by = [d.strip().lower() for d in by] or ["user"]
    unknown = [d for d in by if d not in DIMENSIONS]
    if unknown:
        raise CCMeterError(f"cannot group by {unknown[0]!r}; choose from {', '.join(DIMENSIONS)}")
    if len(by) > 2 or len(set(by)) != len(by):
        raise CCMeterError("give one or two different --by dimensions, e.g. --by project "
                           "--by model")
    return by
