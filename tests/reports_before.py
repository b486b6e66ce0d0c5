"""The report code as it was before the fast fold (main at dac4e76), kept verbatim where it
computes (its SQL, its Group, its fold, one dict per row): tests/test_reports_equal.py checks
that the reports of today's code are identical to what this gives, field for field.
Only the names it shares with ccmeter.reports are imported from there (constants, Filters,
Report, validate_dimensions, _fill_gaps's pieces)."""


from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from ccmeter import store
from ccmeter.periods import bucket_label, bucket_start, next_bucket, slot_seconds
from ccmeter.reports import (
    MAX_FILLED_BUCKETS,
    SOURCE_TABLES,
    TIME_DIMENSIONS,
    Filters,
    Report,
    validate_dimensions,
)

if TYPE_CHECKING:
    from decimal import Decimal

    from ccmeter.pricing import Catalog
    from ccmeter.whatif import Assumption

TOKEN_FIELDS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)
# --- SQL -----------------------------------------------------------------------------------

_PROMPT_TOKENS_SQL = (
    "(input_tokens + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens)"
)
_FILTER_SINCE = "started_ts >= :since"
_FILTER_UNTIL = "started_ts < :until"
_FILTER_PROJECT = "project = :project"
_FILTER_MODEL = "instr(lower(COALESCE(model, '')), :model) > 0"
_FILTER_SESSION = "session_id = :session"
#: Redundant slot bounds next to the exact time filters, so the range is served by the
#: ``api_calls_rollup`` expression index (whose first column is the hourly slot).
_FILTER_SLOT_SINCE = "CAST(started_ts / {slot} AS INTEGER) >= :slot_since"
_FILTER_SLOT_UNTIL = "CAST(started_ts / {slot} AS INTEGER) <= :slot_until"
#: The one aggregate every report runs. Its GROUP BY is a prefix of the ``api_calls_rollup``
#: covering index (migration 2), so SQLite aggregates in index order without sorting a
#: million rows. ``{slot}`` is a literal (3600 normally) so the expression matches the index.
REPORT_SQL = """
SELECT CAST(started_ts / {slot} AS INTEGER) AS slot,
    project, model AS model_name, speed, service_tier, inference_geo{session},
    COUNT(*) AS calls,
    SUM(input_tokens) AS input_tokens,
    SUM(cache_write_5m_tokens) AS cache_write_5m_tokens,
    SUM(cache_write_1h_tokens) AS cache_write_1h_tokens,
    SUM(cache_read_tokens) AS cache_read_tokens,
    SUM(output_tokens) AS output_tokens,
    SUM(cost_picousd) AS cost_picousd,
    COUNT(cost_picousd) AS priced_calls,
    MIN(started_ts) AS first_ts,
    MAX(started_ts) AS last_ts
FROM {table}
{where}
GROUP BY 1, 2, 3, 4, 5, 6{session_group}
"""

#: The cache tokens of long prompts, by how many long-context thresholds (``{buckets}``: a
#: sum of ``prompt > :lcN`` terms) the prompt is over. A separate query because only the
#: rare long prompts reach its GROUP BY; conditional sums in REPORT_SQL would cost every row.
#: (One change since it was kept: its GROUP BY named column 7 for ``lc_bucket``, which is
#: ``session_id`` or ``provider`` when those are read: the long prompts of a session or
#: provider report were summed over both thresholds. Fixed here and in the code alike.)
LONG_CONTEXT_SQL = """
SELECT CAST(started_ts / {slot} AS INTEGER) AS slot,
    project, model AS model_name, speed, service_tier, inference_geo{session},
    {buckets} AS lc_bucket,
    SUM(cache_read_tokens) AS cache_read_tokens,
    SUM(cache_write_5m_tokens) AS cache_write_5m_tokens,
    SUM(cache_write_1h_tokens) AS cache_write_1h_tokens
FROM {table}
{where}
GROUP BY 1, 2, 3, 4, 5, 6{session_group}, lc_bucket
"""
_OVER_THRESHOLD = "(" + _PROMPT_TOKENS_SQL + " > :lc{i})"


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


def build_reports(
    db: Any,
    groupings: Sequence[Sequence[str]],
    filters: Filters,
    catalog: Catalog,
    *,
    fill_gaps: bool = True,
    assumption: Assumption | None = None,
) -> list[Report]:
    """The same calls grouped several ways: each report exactly what :func:`build_report`
    gives for its grouping, from one read of the database (and one savings computation per
    row) for all groupings that need the same columns. A page that shows spend by project,
    by model and by day reads a year of calls once, not three times.
    """
    from ccmeter.savings import SavingsCalculator, long_context_thresholds

    all_dims = [validate_dimensions(dims) for dims in groupings]
    slot = slot_seconds()
    thresholds = long_context_thresholds(catalog)
    savings = SavingsCalculator(catalog, thresholds)
    # one read with every column any grouping needs (session, provider): a finer row folds
    # into a coarser grouping with the same exact sums
    columns = tuple(d for d in ("session", "provider") if any(d in dims for dims in all_dims))
    read = _read(db, columns, filters, slot, thresholds, savings)
    labels: dict[int, str] = {}
    return [_fold(db, read, dims, filters, catalog, slot, labels, fill_gaps=fill_gaps,
                  assumption=assumption) for dims in all_dims]


def _read(db: Any, dims: Sequence[str], filters: Filters, slot: int, thresholds: Sequence[int],
          savings: Any) -> list[tuple[dict[str, Any], Decimal | None]]:
    """The aggregate rows for ``dims``' columns, each with what caching saved on it."""
    raw: list[dict[str, Any]] = []
    long_rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for source in filters.sources():
        table = SOURCE_TABLES[source]
        sql, params = report_sql(dims, filters, slot, table)
        raw += [{**row, "source": source} for row in store.query(db, sql, params)]
        if thresholds:
            long_sql = long_context_sql(dims, filters, thresholds, slot, table)
            for row in store.query(db, *long_sql):
                long_rows.setdefault(_group_key({**row, "source": source}), []).append(row)
    days: dict[int, date] = {}
    out = []
    for row in raw:
        slot_start = int(row["slot"]) * slot
        utc_day = days.get(slot_start)
        if utc_day is None:
            utc_day = days[slot_start] = datetime.fromtimestamp(slot_start, UTC).date()
        out.append((row, savings.saved(row, utc_day, long_rows.get(_group_key(row), ()))))
    return out


def _fold(db: Any, read: Sequence[tuple[dict[str, Any], Decimal | None]], dims: tuple[str, ...],
          filters: Filters, catalog: Catalog, slot: int, labels: dict[int, str], *,
          fill_gaps: bool, assumption: Assumption | None) -> Report:
    """One report from the rows :func:`_read` gave."""
    time_dim = next((d for d in dims if d in TIME_DIMENSIONS), None)
    groups: dict[tuple[Any, ...], Group] = {}
    for row, saved in read:
        key = _row_key(row, dims, slot, labels)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group()
        group.add(row, saved)
    if assumption is not None and assumption.active:
        _reprice_groups(db, groups, dims, filters, catalog, assumption, slot, labels)

    if time_dim is not None and len(dims) == 1 and fill_gaps:
        _fill_gaps(groups, time_dim, filters, [row for row, _ in read])

    total = Group()
    for group in groups.values():
        total.merge(group)
    rows = _ordered_rows(dims, groups)
    if time_dim is not None:
        top = max((r["cost"] or 0 for r in rows), default=0)
        for row in rows:
            row["bar"] = (row["cost"] or 0) / top if top else 0.0
    return Report(dims, rows, total.as_dict(), filters, catalog.version)


def _row_key(row: Mapping[str, Any], dims: Sequence[str], slot: int,
             labels: dict[int, str]) -> tuple[Any, ...]:
    """The report row (group) a query row belongs to; ``labels`` caches the time labels."""
    slot_start = int(row["slot"]) * slot
    parts: list[Any] = []
    for dim in dims:
        if dim in TIME_DIMENSIONS:
            label = labels.get(slot_start)
            if label is None:
                label = labels[slot_start] = bucket_label(bucket_start(slot_start, dim), dim)
            parts.append(label)
        else:
            parts.append(row[_ROW_FIELD[dim]])
    return tuple(parts)


def _reprice_groups(db: Any, groups: Mapping[tuple[Any, ...], Group], dims: Sequence[str],
                    filters: Filters, catalog: Catalog, assumption: Assumption, slot: int,
                    labels: dict[int, str]) -> None:
    """Replace each group's cost and savings with its calls priced under ``assumption``."""
    from decimal import Decimal

    from ccmeter.whatif import reprice

    repriced: dict[tuple[Any, ...], list[Any]] = {}  # key -> [cost, priced, saved|None]
    for source in filters.sources():
        where, params = _where(filters, slot)
        for row in store.whatif_calls(db, SOURCE_TABLES[source], where, params, slot):
            result = reprice(catalog, row, assumption)
            entry = repriced.setdefault(_row_key(row, dims, slot, labels), [0, 0, None])
            if result.cost is not None:
                entry[0] += result.cost
                entry[1] += 1
            if result.saved is not None:
                entry[2] = result.saved + (entry[2] or 0)
    for key, group in groups.items():
        cost, priced, saved = repriced.get(key, (0, 0, None))
        group.cost_sum, group.priced_calls = cost, priced
        group.saved = None if saved is None else Decimal(saved)


_ROW_FIELD = {"project": "project", "session": "session_id", "model": "model_name",
              "provider": "provider"}


def _group_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["slot"], row["project"], row["model_name"], row["speed"], row["service_tier"],
            row["inference_geo"], row.get("session_id"), row.get("provider"), row["source"])


def _filters_where(filters: Filters) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for name, clause in (
        ("since", _FILTER_SINCE),
        ("until", _FILTER_UNTIL),
        ("project", _FILTER_PROJECT),
        ("model", _FILTER_MODEL),
        ("session", _FILTER_SESSION),
    ):
        value = getattr(filters, name)
        if value is None:
            continue
        clauses.append(clause)
        params[name] = value.lower() if name == "model" else value
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _where(filters: Filters, slot: int) -> tuple[str, dict[str, Any]]:
    where, params = _filters_where(filters)
    extra = []
    if filters.since is not None:
        extra.append(_FILTER_SLOT_SINCE.format(slot=int(slot)))
        params["slot_since"] = int(filters.since // slot)
    if filters.until is not None:
        extra.append(_FILTER_SLOT_UNTIL.format(slot=int(slot)))
        params["slot_until"] = int(filters.until // slot)
    if extra:
        where = (where + " AND " if where else "WHERE ") + " AND ".join(extra)
    return where, params


def _optional_columns(dims: Sequence[str]) -> tuple[str, str]:
    """Columns grouped on only when asked for (``session_id``, ``provider``), as the SELECT
    and GROUP BY additions: other reports keep the rollup index's exact GROUP BY."""
    names = [c for d, c in (("session", "session_id"), ("provider", "provider")) if d in dims]
    return "".join(f",\n    {c}" for c in names), "".join(f", {c}" for c in names)


def report_sql(dims: Sequence[str], filters: Filters, slot: int,
               table: str = "api_calls") -> tuple[str, dict[str, Any]]:
    """The aggregate query (and its parameters) for a report on one source's ``table``."""
    where, params = _where(filters, slot)
    columns, group = _optional_columns(dims)
    sql = REPORT_SQL.format(slot=int(slot), session=columns, where=where, session_group=group,
                            table=table)
    return sql, params


def long_context_sql(
    dims: Sequence[str], filters: Filters, thresholds: Sequence[int], slot: int,
    table: str = "api_calls",
) -> tuple[str, dict[str, Any]]:
    """The long-prompt query (and its parameters) matching :func:`report_sql`'s groups."""
    where, params = _where(filters, slot)
    terms = []
    for index, threshold in enumerate(thresholds):
        params[f"lc{index}"] = threshold
        terms.append(_OVER_THRESHOLD.format(i=index))
    where = (where + " AND " if where else "WHERE ") + terms[0]
    columns, group = _optional_columns(dims)
    sql = LONG_CONTEXT_SQL.format(slot=int(slot), session=columns, buckets=" + ".join(terms),
                                  where=where, session_group=group, table=table)
    return sql, params


def _fill_gaps(
    groups: dict[tuple[Any, ...], Group], unit: str, filters: Filters, raw: Sequence[Mapping]
) -> None:
    """Add empty rows for buckets without calls, so a time series shows its idle stretches.

    From ``--since`` (else the first call) to ``--until`` (else now); skipped when that would
    be more than ``MAX_FILLED_BUCKETS`` rows.
    """
    starts = [r["first_ts"] for r in raw]
    ends = [r["last_ts"] for r in raw]
    since = filters.since if filters.since is not None else min(starts, default=None)
    if since is None:
        return
    until = filters.until
    if until is None:
        until = max(time.time(), max(ends, default=since) + 1)
    labels: list[str] = []
    current = bucket_start(since, unit)
    while current.timestamp() < until:
        if len(labels) >= MAX_FILLED_BUCKETS:
            return
        labels.append(bucket_label(current, unit))
        current = next_bucket(current, unit)
    for label in labels:
        groups.setdefault((label,), Group())


def _ordered_rows(dims: Sequence[str], groups: Mapping[tuple[Any, ...], Group]) -> list[dict]:
    """Time buckets in order; other dimensions by cost (then calls), largest first."""
    rank: list[dict[Any, Any]] = []
    for index, dim in enumerate(dims):
        if dim in TIME_DIMENSIONS:
            rank.append({})
            continue
        weight: dict[Any, tuple[int, int]] = {}
        for key, group in groups.items():
            cost, calls = weight.get(key[index], (0, 0))
            weight[key[index]] = (cost + group.cost_sum, calls + group.calls)
        ordered = sorted(weight, key=lambda v: (-weight[v][0], -weight[v][1], str(v)))
        rank.append({value: position for position, value in enumerate(ordered)})

    def sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            key[i] if dims[i] in TIME_DIMENSIONS else rank[i][key[i]] for i in range(len(dims))
        )

    rows = []
    for key in sorted(groups, key=sort_key):
        group = groups[key]
        row: dict[str, Any] = {}
        for dim, value in zip(dims, key, strict=True):
            row[dim] = value
        row.update(group.as_dict())
        if "session" in dims and "project" not in dims:
            row["project"] = group.project
            row["projects"] = group.projects
        rows.append(row)
    return rows
