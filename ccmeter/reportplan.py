"""Which parts of a report's time range are read from ``call_rollup`` and how coarsely: pure
arithmetic on quarter-hours, no SQL (the queries are in :mod:`ccmeter.store.reportsql`).

A report is exact when no group it sums crosses a boundary that matters to it: a UTC day
(which picks a model's price period, so what caching saved), and the start of a local bucket
of its time grouping. So a report by project (no time grouping) can sum the rollup per UTC
day; one by day, week or month per *piece*, the part of a UTC day inside one local day (two
pieces a day in India, one in London in winter); one by hour per hour. Summing that coarsely
in SQL is what keeps a year of calls to a few thousand rows in Python.

- The whole report slots inside ``--since``/``--until`` are read from the rollup in *spans*
  of one UTC offset (a daylight-saving change starts a new span); the calls at the range's
  ends (less than a slot each) are read raw, as *edges*.
- A piece is labelled by its first quarter-hour (never before its span's start), so labels of
  different parts never meet, and every query of a part labels a call the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

QUARTER = 900
DAY_QUARTERS = 96
#: How coarsely a part is summed: per report slot, per UTC day, or per piece of one.
SLOT, UTC_DAY, LOCAL_DAY = "slot", "utc_day", "local_day"


class Part:
    """One part of a report's range: an ``edge`` read raw (its side ``before``/``after``
    the rollup and the quarter-hour bound), or a ``span`` of the rollup, quarter-hours
    ``start`` to before ``end``, summed per ``grain`` at UTC ``offset`` (seconds east)."""

    __slots__ = ("edge", "end", "grain", "offset", "start")

    def __init__(self, *, start: int, end: int | None = None, grain: str = SLOT,
                 offset: int = 0, edge: str | None = None) -> None:
        self.start, self.end, self.grain, self.offset, self.edge = start, end, grain, offset, edge

    def __repr__(self) -> str:
        return (f"Part(edge={self.edge}, start={self.start}, end={self.end}, "
                f"grain={self.grain}, offset={self.offset})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Part) and repr(self) == repr(other)


def grain_for(time_dimensions: set[str]) -> str:
    """The coarsest grain that keeps the report's groupings exact."""
    if "hour" in time_dimensions:
        return SLOT
    return LOCAL_DAY if time_dimensions else UTC_DAY


def bounds(since: float | None, until: float | None, slot: int) -> tuple[int | None, int | None]:
    """The quarter-hours (from, to; None: open) of the whole report slots in the range."""
    per = slot // QUARTER
    start = None if since is None else math.ceil(since / slot) * per
    end = None if until is None else math.floor(until / slot) * per
    return start, end


def plan(since: float | None, until: float | None, slot: int, grain: str,
         extent: tuple[int, int] | None,
         offset_at: Callable[[float], int] | None = None) -> list[Part] | None:
    """The parts of a report over [since, until) with slots of ``slot`` seconds, given the
    rollup's first and last quarter-hour (``extent``; None when it is empty). None when the
    rollup cannot serve it: a slot that is not whole quarter-hours, a range inside two
    slots, a zone whose offset is not whole quarter-hours."""
    if slot % QUARTER:
        return None
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
    low = start if start is not None else extent[0] - extent[0] % (slot // QUARTER)
    high = end if end is not None else extent[1] + 1
    if low >= high:
        return parts
    if grain != LOCAL_DAY:
        return [*parts, Part(start=low, end=high, grain=grain)]
    spans = offset_spans(low, high, offset_at or local_offset)
    if spans is None:
        return None
    return parts + [Part(start=a, end=b, grain=LOCAL_DAY, offset=off) for a, b, off in spans]


def local_offset(ts: float) -> int:
    """The system zone's UTC offset (seconds east) at ``ts``."""
    return time.localtime(ts).tm_gmtoff


def offset_spans(low: int, high: int, offset_at: Callable[[float], int]
                 ) -> list[tuple[int, int, int]] | None:
    """[low, high) in quarter-hours cut where the UTC offset changes: (from, to, offset)
    each. None when an offset is not whole quarter-hours. Offsets are sampled at every UTC
    midnight; a change between two is found to the quarter-hour (zones change at most a
    few times a year, never twice in a day)."""
    spans = []
    begin, current = low, offset_at(low * QUARTER)
    # every UTC midnight inside the range, and its last quarter-hour
    first_day = low // DAY_QUARTERS + 1
    samples = [*range(first_day * DAY_QUARTERS, high, DAY_QUARTERS), high - 1]
    previous = low
    for sample in samples:
        if sample > previous and offset_at(sample * QUARTER) != current:
            # the first quarter-hour of the new offset, after the previous sample
            lo, hi = previous, sample
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset_at(mid * QUARTER) == current:
                    lo = mid
                else:
                    hi = mid
            spans.append((begin, hi, current))
            begin, current = hi, offset_at(hi * QUARTER)
        previous = max(previous, sample)
    spans.append((begin, high, current))
    if any(off % QUARTER for _, _, off in spans):
        return None
    return spans
