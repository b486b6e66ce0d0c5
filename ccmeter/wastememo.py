"""The waste report over long ranges without re-accounting a year of calls: each finished
session's losses are kept in a memo file and reused while the session is unchanged.

Exact, by these facts (docs/performance.md, "Waste over long ranges", has the argument):

- chains never cross sessions, so a session's losses depend on its own rows only (and the
  catalog, and ``now``);
- a session whose rows all lie in the report's range [since, until) is accounted over all
  its rows by :func:`ccmeter.wastereport.build` too (the range plus the margin holds them
  all), so its losses are those of the session accounted alone;
- once ``now`` is an hour past its last call (the longest cache lifetime), none of its
  writes is pending: its losses no longer depend on ``now``;
- every insert, update or delete of one of its rows gives the session a new random
  64-bit ``version`` (not a count, which a database restored from an older copy of itself
  would count up again to a version the memo has seen)
  (triggers of migration 13, in the writer's own transaction), and the memo keeps the
  version it was computed at, for this database (its ``waste_epoch``) and this catalog
  (:meth:`ccmeter.pricing.Catalog.fingerprint`): any other version is recomputed.

Every other session that meets the range plus margin (it crosses an edge of the range, or
is still running) is accounted as :func:`ccmeter.wastereport.build` does, over its own rows
of the same window. The memo file lives in the platform's cache folder, so the read-only
dashboard can keep it; any trouble with it falls back to accounting everything.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from hashlib import blake2b
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccmeter import waste
from ccmeter.store import wastememo as sql

if TYPE_CHECKING:
    from ccmeter.pricing import Catalog

#: calls, rewrite tokens, never-read tokens, priced waste sum, priced losses, losses
Sums = list[int]
QUARTER_S = 900
#: The memo file's layout: a file of another layout is emptied and refilled.
FORMAT = "1"


def cache_folder(env: Any = None) -> Path:
    """ccmeter's folder in the platform's cache folder (``$XDG_CACHE_HOME/ccmeter``,
    ``~/Library/Caches/ccmeter``, ``%LOCALAPPDATA%/ccmeter/cache``); with ``CCMETER_HOME``,
    its ``cache`` folder."""
    env = os.environ if env is None else env
    if env.get("CCMETER_HOME"):
        return Path(os.path.expanduser(env["CCMETER_HOME"])) / "cache"
    home = env.get("HOME") or os.path.expanduser("~")
    if sys.platform == "darwin":
        return Path(home) / "Library" / "Caches" / "ccmeter"
    if sys.platform == "win32":
        local = env.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
        return Path(local) / "ccmeter" / "cache"
    return Path(env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")) / "ccmeter"


def memo_path(db_file: str, catalog: Catalog) -> Path:
    name = blake2b(f"{os.path.realpath(db_file)}\0{catalog.fingerprint()}".encode(),
                   digest_size=8).hexdigest()
    return cache_folder() / f"waste-{name}.sqlite"


#: A memo nobody has opened for this long is deleted (another catalog's, a deleted
#: database's): the cache folder does not grow with every price list ever used.
STALE_AFTER_S = 30 * 86400


def tidy(current: Path, now: float | None = None) -> None:
    """Mark ``current`` as in use (its mtime) and delete the other memo files of the
    folder that no one has opened for STALE_AFTER_S. Errors are ignored: a cache."""
    import time

    now = time.time() if now is None else now
    with contextlib.suppress(OSError):
        if current.exists():
            os.utime(current, (now, now))
        for other in current.parent.glob("waste-*.sqlite"):
            if other != current and other.stat().st_mtime < now - STALE_AFTER_S:
                for path in (other, other.with_name(other.name + "-wal"),
                             other.with_name(other.name + "-shm")):
                    path.unlink(missing_ok=True)


def _new_sums() -> Sums:
    return [0, 0, 0, 0, 0, 0]


def as_row(sums: Sums) -> dict[str, Any]:
    """:func:`ccmeter.wastereport._sum`'s dict of these sums."""
    calls, rewrite, never, priced_sum, priced, count = sums
    return {"calls": calls, "rewrite_tokens": rewrite, "never_read_tokens": never,
            "waste": priced_sum if priced or not count else None, "unpriced": count - priced}


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d")


def _merge(out: dict[Any, Sums], group: Any, sums: Sequence[int]) -> None:
    mine = out.get(group)
    if mine is None:
        out[group] = list(sums)
    else:
        for index, value in enumerate(sums):
            mine[index] += value


class Base:
    """Losses summed by (session, project, cause), and each (session, project)'s calls with
    a loss: every other grouping but the day adds these up (a call is in one session and
    one project, and loses at most once per cause), and the memo keeps them."""

    def __init__(self) -> None:
        self.sums: dict[tuple[Any, Any, str], Sums] = {}
        self.calls: dict[tuple[Any, Any], set[str]] = {}

    def add(self, losses: Iterable[waste.Loss]) -> None:
        sums, calls = self.sums, self.calls
        for loss in losses:
            call = loss.call
            key = (call.session_id, call.project, loss.cause)
            mine = sums.get(key)
            if mine is None:
                mine = sums[key] = _new_sums()
            mine[0] += 1
            mine[1 if loss.kind == waste.REWRITE else 2] += loss.tokens_5m + loss.tokens_1h
            if loss.waste_picousd is not None:
                mine[3] += loss.waste_picousd
                mine[4] += 1
            mine[5] += 1
            where = calls.get(key[:2])
            if where is None:
                where = calls[key[:2]] = set()
            where.add(call.call_uid)


class Found:
    """The report's sums by group, for each way asked, and the pending tokens."""

    def __init__(self, group_bys: Sequence[str]) -> None:
        self.sums: dict[str, dict[Any, Sums]] = {g: {} for g in (*group_bys, "total")}
        self.pending = 0

    def add(self, losses: Sequence[waste.Loss]) -> None:
        base = Base()
        base.add(losses)
        self.add_base(base)
        if "day" in self.sums:
            days: dict[Any, Sums] = {}
            calls: dict[Any, set[str]] = {}
            for loss in losses:
                day = _day(loss.call.started_ts)
                mine = days.get(day)
                if mine is None:
                    mine = days[day] = _new_sums()
                    calls[day] = set()
                calls[day].add(loss.call.call_uid)
                mine[1 if loss.kind == waste.REWRITE else 2] += loss.tokens
                if loss.waste_picousd is not None:
                    mine[3] += loss.waste_picousd
                    mine[4] += 1
                mine[5] += 1
            for day, mine in days.items():
                mine[0] = len(calls[day])  # a call is in one session: sessions add up
                _merge(self.sums["day"], day, mine)

    def add_base(self, base: Base) -> None:
        position = {"session": 0, "project": 1, "total": None}
        for group_by, out in self.sums.items():
            if group_by == "day":
                continue
            if group_by == "cause":
                for (_s, _p, cause), sums in base.sums.items():
                    _merge(out, cause, sums)
                continue
            at = position[group_by]
            for key, sums in base.sums.items():
                _merge(out, None if at is None else key[at], [0, *sums[1:]])
            for pair, uids in base.calls.items():
                _merge(out, None if at is None else pair[at], [len(uids), 0, 0, 0, 0, 0])

    def add_memo(self, memo: sqlite3.Connection, chosen: list[str], project: str | None
                 ) -> None:
        results = sql.memo_sums(memo, chosen, list(self.sums), project)
        for group_by, rows in results.items():
            out = self.sums[group_by]
            for key, *sums in rows:
                if group_by != "day":
                    _merge(out, key, sums)
                    continue
                start = key * QUARTER_S
                first, last = _day(start), _day(start + QUARTER_S - 0.001)
                if first == last:
                    _merge(out, first, sums)
                    continue
                # a local midnight inside this quarter hour: its losses one by one
                by_day: dict[Any, Sums] = {}
                calls: dict[Any, set[str]] = {}
                for ts, uid, kind, tokens, lost in sql.memo_quarter(memo, start,
                                                                     start + QUARTER_S,
                                                                     project):
                    day = _day(ts)
                    mine = by_day.get(day)
                    if mine is None:
                        mine = by_day[day] = _new_sums()
                        calls[day] = set()
                    calls[day].add(uid)
                    mine[1 if kind == waste.REWRITE else 2] += tokens
                    if lost is not None:
                        mine[3] += lost
                        mine[4] += 1
                    mine[5] += 1
                for day, mine in by_day.items():
                    mine[0] = len(calls[day])
                    _merge(out, day, mine)


def _memo_rows(session_ids: set[str], losses: Sequence[waste.Loss]
               ) -> tuple[list[Any], list[Any], list[Any]]:
    """The memo's ``losses``, ``sums`` and ``calls`` rows of these sessions' losses."""
    mine = [x for x in losses if x.call.session_id in session_ids]
    rows = [(x.call.session_id, x.call.call_uid, x.call.started_ts, x.call.project, x.kind,
             x.cause, x.tokens_5m + x.tokens_1h, x.waste_picousd) for x in mine]
    base = Base()
    base.add(mine)
    sums = [(*key, *values) for key, values in base.sums.items()]
    calls = [(*key, len(uids)) for key, uids in base.calls.items()]
    return rows, sums, calls


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: Above this many sessions to account, one read of the whole window beats one per session.
BULK_SESSIONS = 100


def account(db: Any, group_bys: Sequence[str], since: float | None, until: float | None,
            project: str | None, catalog: Catalog, now: float, margin: float
            ) -> Found | None:
    """The sums of :func:`ccmeter.wastereport.build` for these groupings, reusing the memo;
    None when the database cannot say which sessions changed (older schema, in memory)."""
    lo = (since if since is not None else 0.0) - margin
    hi = (until if until is not None else now) + margin
    sessions = sql.sessions(db, lo, hi)
    db_file = sql.db_file(db)
    if sessions is None or not db_file:
        return None
    found = Found(group_bys)
    live: list[str] = []  # accounted over the window, as the whole report does
    inside: list[tuple[str, int]] = []  # all of it in the range, finished: memo
    for session_id, version, first, last in sessions:
        if (last + waste.TTL_1H_S <= now and (since is None or first >= since)
                and (until is None or last < until)):
            inside.append((session_id, version))
        else:
            live.append(session_id)
    memo = None
    stale: list[tuple[str, int]] = list(inside)
    if inside:
        with contextlib.suppress(OSError, sqlite3.Error):
            path = memo_path(db_file, catalog)
            memo = sql.open_memo(path, {"format": FORMAT, "epoch": str(sql.epoch(db)),
                                        "catalog": catalog.fingerprint()})
            tidy(path)
    try:
        if memo is not None:
            try:
                memo.execute("BEGIN")  # one snapshot of the memo
                known = sql.memo_versions(memo)
                valid = [s for s, v in inside if known.get(s) == v]
                from_memo = Found(group_bys)
                from_memo.add_memo(memo, valid, project)
                memo.execute("COMMIT")
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    memo.execute("ROLLBACK")
            else:
                stale = [(s, v) for s, v in inside if known.get(s) != v]
                for group_by, groups in from_memo.sums.items():
                    for group, sums in groups.items():
                        _merge(found.sums[group_by], group, sums)
        wanted = set(live) | {s for s, _ in stale}
        if not wanted:
            return found
        if len(wanted) > BULK_SESSIONS:
            rows = [r for r in sql.range_calls(db, lo, hi) if r[2] in wanted]
        else:
            rows = [r for s in wanted for r in sql.session_calls(db, s, lo, hi)]
        with _no_gc():  # many acyclic objects: collections would only rescan them
            result = waste.account_rows(rows, waste.Pricer(catalog), now)
        if memo is not None and stale:
            with contextlib.suppress(sqlite3.Error):
                sql.memo_store(memo, stale, *_memo_rows({s for s, _ in stale}, result.losses))
        # the memo's sessions lie wholly in the range; the others are cut to it
        result = waste.in_range(result, since, until)
        found.add([x for x in result.losses if project is None or x.call.project == project])
        found.pending += sum(x.tokens for x in result.pending
                             if project is None or x.call.project == project)
    finally:
        if memo is not None:
            memo.close()
    return found
