"""One report row's totals (or a whole report's), accumulated from aggregate rows: counts
and tokens summed, money in exact integer picodollars, what caching saved as an exact
``Decimal`` until it is shown. Used by :mod:`ccmeter.reports` and :mod:`ccmeter.sessions`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decimal import Decimal

TOKEN_FIELDS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)


class Group:
    """The totals of one report row (or of the whole report)."""

    __slots__ = ("cache_read_tokens", "cache_write_1h_tokens", "cache_write_5m_tokens", "calls",
                 "cost_sum", "first_ts", "input_tokens", "last_ts", "output_tokens",
                 "priced_calls", "project_names", "saved", "transcript_calls")

    def __init__(self) -> None:
        self.calls = 0
        self.input_tokens = 0
        self.cache_write_5m_tokens = 0
        self.cache_write_1h_tokens = 0
        self.cache_read_tokens = 0
        self.output_tokens = 0
        self.priced_calls = 0
        self.cost_sum = 0
        self.saved: Decimal | None = None
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.project_names: set[str] = set()
        #: of ``calls``, those imported from transcripts (the rest were metered on the wire)
        self.transcript_calls = 0

    @property
    def source(self) -> str | None:
        """``wire``, ``transcript``, or ``wire+transcript`` when the calls mix; None without."""
        if not self.calls:
            return None
        if not self.transcript_calls:
            return "wire"
        return "transcript" if self.transcript_calls == self.calls else "wire+transcript"

    @property
    def project(self) -> str | None:
        """The one project of the group's calls; None when none has one or they mix."""
        return next(iter(self.project_names)) if len(self.project_names) == 1 else None

    @property
    def projects(self) -> int:
        """How many projects the group's calls came from (calls without one not counted)."""
        return len(self.project_names)

    def add(self, row: Mapping[str, Any], saved: Decimal | None) -> None:
        self.calls += int(row["calls"])
        if row.get("source") == "transcript":
            self.transcript_calls += int(row["calls"])
        for name in TOKEN_FIELDS:
            setattr(self, name, getattr(self, name) + int(row[name] or 0))
        self.priced_calls += int(row["priced_calls"])
        self.cost_sum += int(row["cost_picousd"] or 0)
        if saved is not None:
            self.saved = saved if self.saved is None else self.saved + saved
        first, last = row.get("first_ts"), row.get("last_ts")
        if first is not None and (self.first_ts is None or first < self.first_ts):
            self.first_ts = first
        if last is not None and (self.last_ts is None or last > self.last_ts):
            self.last_ts = last
        if row.get("project"):
            self.project_names.add(row["project"])

    def merge(self, other: Group) -> None:
        self.calls += other.calls
        self.transcript_calls += other.transcript_calls
        for name in TOKEN_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.priced_calls += other.priced_calls
        self.cost_sum += other.cost_sum
        if other.saved is not None:
            self.saved = other.saved if self.saved is None else self.saved + other.saved
        for ts in (other.first_ts, other.last_ts):
            if ts is None:
                continue
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        self.project_names |= other.project_names

    @property
    def cost_picousd(self) -> int | None:
        """Sum of the priced calls; None when the group has calls and none is priced.

        A group without calls (an idle bucket, an empty database) costs 0, not "unpriced".
        """
        return self.cost_sum if self.priced_calls or not self.calls else None

    @property
    def saved_picousd(self) -> int | None:
        """What caching saved; 0 without calls, None when no call's model has a price."""
        if self.saved is None:
            return None if self.calls else 0
        from ccmeter.savings import to_pico

        return to_pico(self.saved)

    @property
    def unpriced_calls(self) -> int:
        return self.calls - self.priced_calls

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            **{name: getattr(self, name) for name in TOKEN_FIELDS},
            "cache_write_tokens": self.cache_write_5m_tokens + self.cache_write_1h_tokens,
            "cost": self.cost_picousd,
            "unpriced_calls": self.unpriced_calls,
            "cache_savings": self.saved_picousd,
            "first_call": self.first_ts,
            "last_call": self.last_ts,
            "source": self.source,
            "transcript_calls": self.transcript_calls,
        }


# --- the fast fold: a year of aggregate rows into report groups ------------------------------
#
# ``ccmeter.reports`` reads its aggregate rows as plain tuples laid out as below and folds them
# into *cells* (lists: the same sums as a Group, without an attribute lookup per field), which
# become Groups only once per report row. A cell is ``row[CALLS:SAVED + 1]`` plus the set of
# project names. Every sum is exact (ints, and Decimal sums well inside its precision), so
# folding rows into cells and cells into coarser cells gives the Group that adding each row
# to it gives.

#: Positions in a read row.
(SLOT, PROJECT, MODEL, SESSION, PROVIDER, CALLS, TRANSCRIPT_CALLS, INPUT, WRITE_5M, WRITE_1H,
 READ, OUTPUT, PRICED, COST, FIRST, LAST, SAVED) = range(17)


def accumulate(rows: Iterable[Sequence[Any]],
               key_of: Callable[[Sequence[Any]], Hashable]) -> dict[Any, list[Any]]:
    """Read rows summed into one cell per ``key_of(row)``."""
    cells: dict[Any, list[Any]] = {}
    get = cells.get
    for r in rows:
        key = key_of(r)
        c = get(key)
        if c is None:
            cells[key] = [*r[CALLS:], {r[PROJECT]} if r[PROJECT] else set()]
            continue
        c[0] += r[5]
        c[1] += r[6]
        c[2] += r[7]
        c[3] += r[8]
        c[4] += r[9]
        c[5] += r[10]
        c[6] += r[11]
        c[7] += r[12]
        c[8] += r[13]
        if r[14] < c[9]:
            c[9] = r[14]
        if r[15] > c[10]:
            c[10] = r[15]
        saved = r[16]
        if saved is not None:
            c[11] = saved if c[11] is None else c[11] + saved
        if r[PROJECT]:
            c[12].add(r[PROJECT])
    return cells


def merge_cells(cells: Mapping[Any, list[Any]],
                key_of: Callable[[Any], Hashable]) -> dict[Any, list[Any]]:
    """Cells summed again into one per ``key_of(cell's key)`` (a coarser grouping)."""
    out: dict[Any, list[Any]] = {}
    for key, cell in cells.items():
        new = key_of(key)
        c = out.get(new)
        if c is None:
            out[new] = [*cell[:12], set(cell[12])]
            continue
        c[0] += cell[0]
        c[1] += cell[1]
        c[2] += cell[2]
        c[3] += cell[3]
        c[4] += cell[4]
        c[5] += cell[5]
        c[6] += cell[6]
        c[7] += cell[7]
        c[8] += cell[8]
        if cell[9] < c[9]:
            c[9] = cell[9]
        if cell[10] > c[10]:
            c[10] = cell[10]
        if cell[11] is not None:
            c[11] = cell[11] if c[11] is None else c[11] + cell[11]
        c[12] |= cell[12]
    return out


def cell_group(cell: Sequence[Any]) -> Group:
    """The Group a cell's sums make."""
    group = Group()
    (group.calls, group.transcript_calls, group.input_tokens, group.cache_write_5m_tokens,
     group.cache_write_1h_tokens, group.cache_read_tokens, group.output_tokens,
     group.priced_calls, group.cost_sum, group.first_ts, group.last_ts, group.saved,
     group.project_names) = cell
    return group
