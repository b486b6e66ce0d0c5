"""Which parts of a report's time range are read from ``call_rollup``, and how coarsely they
are summed: pure arithmetic on quarter-hours, no SQL (the queries are in
:mod:`ccmeter.store.reportsql`).

A report stays exact when no sum it takes crosses a boundary that matters to it: the start
of a bucket of its time grouping (a local hour, day, ISO week or month), and a day on which a
model's prices change (the price period picks what caching saved). Between two such *cuts*
the rollup's quarter-hours can be summed in SQL as one *piece*: a year by week is ~53
pieces per group, a year by project one or two, instead of 35,040 quarter-hours. That keeps
the rows Python folds to a few thousand.

- The whole report slots inside ``--since``/``--until`` are read from the rollup as one
  *span*; the calls at the range's ends (less than a slot each) are read raw, as *edges*.
- A piece is labelled by its first quarter-hour (in report slots), so every query of a part
  labels a call the same way, and edges (outside the span) never share a label with it.
- The cuts come from :mod:`ccmeter.periods`, the code that labels the buckets, so they hold
  every daylight-saving change; a report by hour is summed per hour.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime

QUARTER = 900
#: More cuts than this (decades by day) and the report reads the calls themselves.
MAX_CUTS = 20_000


class Part:
    """One part of a report's range: an ``edge`` read raw (``before`` or ``after`` the
    quarter-hour ``start``), or the rollup's quarter-hours ``start`` to before ``end``
    summed into pieces starting at ``cuts`` (None: per report slot)."""

    __slots__ = ("cuts", "edge", "end", "start")

    def __init__(self, *, start: int, end: int | None = None,
                 cuts: tuple[int, ...] | None = None, edge: str | None = None) -> None:
        self.start, self.end, self.cuts, self.edge = start, end, cuts, edge

    def __repr__(self) -> str:
        return f"Part(edge={self.edge}, start={self.start}, end={self.end}, cuts={self.cuts})"


def bounds(since: float | None, until: float | None, slot: int) -> tuple[int | None, int | None]:
    """The quarter-hours (from, to; None: open) of the whole report slots in the range."""
    per = slot // QUARTER
    start = None if since is None else math.ceil(since / slot) * per
    end = None if until is None else math.floor(until / slot) * per
    return start, end


def plan(since: float | None, until: float | None, slot: int, units: Iterable[str],
         extent: tuple[int, int] | None, price_days: Sequence[date] = ()) -> list[Part] | None:
    """The parts of a report over [since, until) with slots of ``slot`` seconds and the
    time groupings ``units``, given the rollup's first and last quarter-hour (``extent``;
    None when empty) and the days prices change. None when the rollup cannot serve it: a
    slot that is not whole quarter-hours, a range inside two slots, a bucket that does not
    start on a quarter-hour, or too many cuts."""
    if slot % QUARTER:
        return None
    per = slot // QUARTER
    start, end = bounds(since, until, slot)
    if start is not None and end is not None and start >= end:
        return None
    parts = []
    if start is not None:
        parts.append(Part(edge="before", start=start))
    if end is not None:
        parts.append(Part(edge="after", start=end))
    if extent is None:
        return parts
    low = start if start is not None else extent[0] - extent[0] % per
    high = end if end is not None else extent[1] + 1
    if low >= high:
        return parts
    units = set(units)
    if "hour" in units:
        return [*parts, Part(start=low, end=high)]
    cuts = piece_starts(low, high, units, price_days)
    if cuts is None or any(cut % per for cut in cuts):
        return None
    return [*parts, Part(start=low, end=high, cuts=cuts)]


def piece_starts(low: int, high: int, units: Iterable[str], price_days: Sequence[date]
                 ) -> tuple[int, ...] | None:
    """The first quarter-hour of every piece of [low, high): ``low``, each local bucket
    start of ``units`` and each UTC midnight prices change on, inside it. None when a
    bucket starts off a quarter-hour or there are more than MAX_CUTS."""
    from ccmeter.periods import bucket_start, next_bucket

    cuts = {low}
    for unit in units:
        current = bucket_start(low * QUARTER, unit)
        while (ts := current.timestamp()) < high * QUARTER:
            if ts > low * QUARTER:
                if ts % QUARTER:
                    return None
                cuts.add(int(ts) // QUARTER)
                if len(cuts) > MAX_CUTS:
                    return None
            current = next_bucket(current, unit)
    for day in price_days:
        cut = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) // QUARTER
        if low < cut < high:
            cuts.add(cut)
    return tuple(sorted(cuts))
