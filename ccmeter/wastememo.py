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
- every insert, update or delete of one of its rows bumps the session's ``version``
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
import os
import sqlite3
import sys
from collections.abc import Iterable, Sequence
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


def _new_sums() -> Sums:
    return [0, 0, 0, 0, 0, 0]


def add_losses(out: dict[Any, Sums], calls: dict[Any, set[str]], losses: Iterable[waste.Loss],
               key: Any) -> None:
    """Add ``losses`` to the sums by group (``key(loss)``); ``calls``: each group's calls."""
    for loss in losses:
        group = key(loss)
        sums = out.get(group)
        if sums is None:
            sums = out[group] = _new_sums()
            calls[group] = set()
        calls[group].add(loss.call.call_uid)
        if loss.kind == waste.REWRITE:
            sums[1] += loss.tokens
        else:
            sums[2] += loss.tokens
        if loss.waste_picousd is not None:
            sums[3] += loss.waste_picousd
            sums[4] += 1
        sums[5] += 1


def as_row(sums: Sums) -> dict[str, Any]:
    """:func:`ccmeter.wastereport._sum`'s dict of these sums."""
    calls, rewrite, never, priced_sum, priced, count = sums
    return {"calls": calls, "rewrite_tokens": rewrite, "never_read_tokens": never,
            "waste": priced_sum if priced or not count else None, "unpriced": count - priced}


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d")


def _key_of(group_by: str) -> Any:
    if group_by == "cause":
        return lambda loss: loss.cause
    if group_by == "project":
        return lambda loss: loss.call.project
    if group_by == "session":
        return lambda loss: loss.call.session_id
    if group_by == "day":
        return lambda loss: _day(loss.call.started_ts)
    return lambda loss: None


class Found:
    """The report's sums by group, for each way asked, and the pending tokens."""

    def __init__(self, group_bys: Sequence[str]) -> None:
        self.sums: dict[str, dict[Any, Sums]] = {g: {} for g in (*group_bys, "total")}
        self.pending = 0

    def add(self, losses: Sequence[waste.Loss]) -> None:
        for group_by, out in self.sums.items():
            calls: dict[Any, set[str]] = {}
            fresh: dict[Any, Sums] = {}
            add_losses(fresh, calls, losses, _key_of(group_by))
            for group, sums in fresh.items():
                sums[0] = len(calls[group])  # a call is in one session: sessions add up
                self._merge(out, group, sums)

    @staticmethod
    def _merge(out: dict[Any, Sums], group: Any, sums: Sequence[int]) -> None:
        mine = out.get(group)
        if mine is None:
            out[group] = list(sums)
        else:
            for index, value in enumerate(sums):
                mine[index] += value

    def add_memo(self, memo: sqlite3.Connection, chosen: list[str], project: str | None
                 ) -> None:
        results = sql.memo_sums(memo, chosen, list(self.sums), project)
        for group_by, rows in results.items():
            out = self.sums[group_by]
            for key, *sums in rows:
                if group_by != "day":
                    self._merge(out, key, sums)
                    continue
                start = key * QUARTER_S
                first, last = _day(start), _day(start + QUARTER_S - 0.001)
                if first == last:
                    self._merge(out, first, sums)
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
                    self._merge(out, day, mine)


def _memo_rows(session_id: str, losses: Sequence[waste.Loss], losses_out: list[Any],
               sums_out: list[Any], calls_out: list[Any]) -> None:
    """One session's rows of the memo's ``losses``, ``sums`` and ``calls`` tables."""
    losses_out.extend((session_id, x.call.call_uid, x.call.started_ts, x.call.project,
                       x.kind, x.cause, x.tokens, x.waste_picousd) for x in losses)
    sums: dict[Any, Sums] = {}
    calls: dict[Any, set[str]] = {}
    add_losses(sums, calls, losses, lambda x: (x.call.project, x.cause))
    sums_out.extend((session_id, project, cause, len(calls[project, cause]), *s[1:])
                    for (project, cause), s in sums.items())
    by_project: dict[Any, set[str]] = {}
    for loss in losses:
        by_project.setdefault(loss.call.project, set()).add(loss.call.call_uid)
    calls_out.extend((session_id, project, len(uids)) for project, uids in by_project.items())


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
    pricer = waste.Pricer(catalog)
    found = Found(group_bys)
    inside: list[tuple[str, int]] = []
    for session_id, version, first, last in sessions:
        final = last + waste.TTL_1H_S <= now
        if (final and (since is None or first >= since)
                and (until is None or last < until)):
            inside.append((session_id, version))
            continue
        rows = sql.session_calls(db, session_id, lo, hi)  # as the whole report reads it
        result = waste.in_range(waste.account([waste.CacheCall.from_row(r) for r in rows],
                                              pricer, now), since, until)
        found.add([x for x in result.losses if project is None or x.call.project == project])
        found.pending += sum(x.tokens for x in result.pending
                             if project is None or x.call.project == project)
    if not inside:
        return found
    memo = None
    with contextlib.suppress(OSError, sqlite3.Error):
        memo = sql.open_memo(memo_path(db_file, catalog),
                             {"format": FORMAT, "epoch": str(sql.epoch(db)),
                              "catalog": catalog.fingerprint()})
    stale: list[tuple[str, int]] = list(inside)
    computed: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
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
                        found._merge(found.sums[group_by], group, sums)
        for session_id, _version in stale:
            rows = sql.session_calls(db, session_id, lo, hi)
            losses = waste.account([waste.CacheCall.from_row(r) for r in rows], pricer,
                                   now).losses
            _memo_rows(session_id, losses, *computed)
            found.add([x for x in losses if project is None or x.call.project == project])
        if memo is not None and stale:
            with contextlib.suppress(sqlite3.Error):
                sql.memo_store(memo, stale, *computed)
    finally:
        if memo is not None:
            memo.close()
    return found
