"""Spend reports: what ccmeter's database says, grouped and totalled. No rendering here.

Design notes (the why):
- SQLite does the heavy part: one ``GROUP BY`` over the filtered rows, keyed on the report's
  dimensions plus a coarse UTC time slot (an hour; a quarter-hour in zones with half-hour
  offsets when a time dimension is asked for). Python then folds the slots
  into *local* hours, days, ISO weeks (starting Monday) and months, calling
  ``datetime.fromtimestamp`` once per distinct slot rather than once per row. That is both
  correct across daylight-saving changes and fast at a million rows.
- The UTC slot also fixes the UTC date, which is what selects a model's price period, so what
  prompt caching saved is computed with the rates that were in force, exactly (``Decimal``).
- Money stays in integer picodollars. A group with no priced call has cost ``None``
  ("unpriced"), never 0; a group with some unpriced calls carries their count.
- What caching saved is computed by :mod:`ccmeter.savings`; sessions and live figures are
  in :mod:`ccmeter.sessions`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ccmeter import store
from ccmeter.periods import bucket_label, bucket_start, next_bucket, slot_seconds
from ccmeter.record import Record
from ccmeter.reportgroup import TOKEN_FIELDS as TOKEN_FIELDS  # re-exported
from ccmeter.reportgroup import Group
from ccmeter.reportread import ROLLUP_SCHEMA as ROLLUP_SCHEMA  # re-exported
from ccmeter.reportread import SOURCE_TABLES as SOURCE_TABLES  # re-exported
from ccmeter.reportread import read_rows
from ccmeter.store import reportsql

if TYPE_CHECKING:
    from ccmeter.pricing import Catalog
    from ccmeter.whatif import Assumption

TIME_DIMENSIONS = ("hour", "day", "week", "month")
DIMENSIONS = ("project", "session", "model", "provider", *TIME_DIMENSIONS)
MAX_FILLED_BUCKETS = 2000
#: What ``--source`` takes: the calls metered on the wire, those imported from Claude Code's
#: transcripts (only the ones no wire row matches: a call seen both ways counts once, from
#: the wire), or both.
SOURCES = ("all", "wire", "transcript")
#: What a table shows where a call has no project (and the same for any other grouping):
#: one name in report, sessions, session, watch and team report. JSON/CSV keep null.
NO_PROJECT = "(no project)"
#: What a table shows for a row whose calls came from more than one project (calls without a
#: Claude Code session: curl, SDK scripts): report --by session, sessions, session. JSON/CSV
#: give ``project`` null and ``projects``, the number of projects.
SEVERAL_PROJECTS = "(several)"


def missing_label(dimension: str) -> str:
    """``(no project)``, ``(no model)``, ``(no session)``: a missing name, as tables show it."""
    return f"(no {dimension})"


# --- pricing helpers -----------------------------------------------------------------------


def current_catalog(cfg: Mapping[str, Any]) -> Catalog:
    """The catalog the proxy prices with: the bundled one plus the config's ``[prices]``.

    Raises ValueError when the overrides are invalid.
    """
    from ccmeter.pricing import Catalog

    catalog = Catalog.bundled()
    overrides = cfg.get("prices")
    if overrides:
        catalog = catalog.with_overrides(overrides)
    return catalog


# --- the report ----------------------------------------------------------------------------


class Filters(Record):
    since: float | None = None
    until: float | None = None
    project: str | None = None
    model: str | None = None
    session: str | None = None
    #: which calls: "all", "wire" or "transcript" (not a WHERE clause: a table to read)
    source: str = "all"

    def sources(self) -> tuple[str, ...]:
        """The sources whose calls this report reads, each from its own table."""
        if self.source not in SOURCES:
            raise ValueError(f"unknown --source {self.source!r}; use one of {', '.join(SOURCES)}")
        return ("wire", "transcript") if self.source == "all" else (self.source,)

    def where(self) -> tuple[str, dict[str, Any]]:
        """The WHERE clause (and its parameters) of these filters."""
        return reportsql.filter_where(self.filter_values())

    def filter_values(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "project": self.project,
                "model": self.model, "session": self.session}


class Report(Record):
    """Grouped rows (dicts ready for :func:`ccmeter.render.emit`) and their totals."""

    dimensions: tuple[str, ...]
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    filters: Filters
    catalog_version: str

    @property
    def has_time(self) -> bool:
        return any(d in TIME_DIMENSIONS for d in self.dimensions)


def validate_dimensions(dimensions: Sequence[str]) -> tuple[str, ...]:
    dims = tuple(dict.fromkeys(d.strip().lower() for d in dimensions))
    if not dims:
        raise ValueError("give at least one --by")
    if len(dims) > 2:
        raise ValueError("at most two --by groupings, e.g. --by model --by day")
    for dim in dims:
        if dim not in DIMENSIONS:
            raise ValueError(f"cannot group by {dim!r}; choose from {', '.join(DIMENSIONS)}")
    if sum(d in TIME_DIMENSIONS for d in dims) > 1:
        raise ValueError("use one time grouping (hour, day, week or month) at a time")
    return dims


def build_report(
    db: Any,
    dimensions: Sequence[str],
    filters: Filters,
    catalog: Catalog,
    *,
    fill_gaps: bool = True,
    assumption: Assumption | None = None,
) -> Report:
    """Group the calls matching ``filters`` by one or two ``dimensions``.

    With an active ``assumption`` the money fields (cost, cache savings) are the calls priced
    again under it (:mod:`ccmeter.whatif`), call by call; tokens and counts stay the facts.
    """
    return build_reports(db, [dimensions], filters, catalog, fill_gaps=fill_gaps,
                         assumption=assumption)[0]


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
    all_dims = [validate_dimensions(dims) for dims in groupings]
    # its queries (the rollup's extent and pieces, the ends, the long prompts, a what-if's
    # calls) see one committed state: a call landing meanwhile is in all of them or none
    with store.snapshot(db):
        return _build(db, all_dims, filters, catalog, fill_gaps, assumption)


def _build(db: Any, all_dims: Sequence[tuple[str, ...]], filters: Filters, catalog: Catalog,
           fill_gaps: bool, assumption: Assumption | None) -> list[Report]:
    from ccmeter.savings import SavingsCalculator, long_context_thresholds

    # without a time dimension only each call's UTC date matters (it picks the price
    # period), and UTC days are whole hours: the index's hourly slot, in any zone (where
    # local hours are not whole UTC hours a time dimension needs finer slots: see _read)
    timed = any(d in TIME_DIMENSIONS for dims in all_dims for d in dims)
    slot = slot_seconds() if timed else reportsql.INDEX_SLOT
    thresholds = long_context_thresholds(catalog)
    savings = SavingsCalculator(catalog, thresholds)
    # one read with every column any grouping needs (session, provider): a finer row folds
    # into a coarser grouping with the same exact sums
    columns = tuple(d for d in ("session", "provider") if any(d in dims for dims in all_dims))
    units = {d for dims in all_dims for d in dims if d in TIME_DIMENSIONS}
    read = read_rows(db, columns, filters, slot, thresholds, savings, units)
    labels: dict[str, dict[int, str]] = {}
    cells = _fold_cells(read, all_dims, slot, labels)
    return [_report(db, read, cells[i], dims, filters, catalog, slot, labels,
                    fill_gaps=fill_gaps, assumption=assumption)
            for i, dims in enumerate(all_dims)]


def _fold_cells(read: Sequence[tuple[Any, ...]], all_dims: Sequence[tuple[str, ...]],
                slot: int, labels: dict[str, dict[int, str]]) -> list[dict[Any, list[Any]]]:
    """Each grouping's cells. A grouping with the session is folded from the read rows; the
    others from one fold of the rows by (time bucket, project, model, provider) per time
    unit: a few thousand cells for a year, not one fold of every row per grouping."""
    from ccmeter.reportgroup import MODEL, PROJECT, PROVIDER, SESSION, SLOT, accumulate

    column = {"project": PROJECT, "model": MODEL, "session": SESSION, "provider": PROVIDER}
    slots = {r[SLOT] for r in read}
    for dims in all_dims:
        for dim in dims:
            if dim in TIME_DIMENSIONS and dim not in labels:
                labels[dim] = {s: bucket_label(bucket_start(s * slot, dim), dim) for s in slots}
    inner: dict[str | None, dict[Any, list[Any]]] = {}  # time unit -> (label, p, m, pr) cells
    # the groupings without a time unit fold from the cells of one that has one, if any
    shared = next((d for dims in all_dims if "session" not in dims for d in dims
                   if d in TIME_DIMENSIONS), None)
    out = []
    for dims in all_dims:
        time_dim = next((d for d in dims if d in TIME_DIMENSIONS), None)
        if "session" in dims:
            out.append(accumulate(read, _key_of(dims, column, labels)))
            continue
        unit = time_dim if time_dim is not None else shared
        if unit not in inner:
            inner[unit] = accumulate(read, _inner_key(labels.get(unit) if unit else None))
        out.append(_merge(inner[unit], dims))
    return out


def _inner_key(lab: Mapping[int, str] | None) -> Any:
    """A read row's inner cell: (time label, project, model, provider)."""
    if lab is None:
        return lambda r: (None, r[1], r[2], r[4])
    return lambda r: (lab[r[0]], r[1], r[2], r[4])


def _key_of(dims: Sequence[str], column: Mapping[str, int],
            labels: Mapping[str, Mapping[int, str]]) -> Any:
    """The report row key of a read row (at most two dimensions)."""
    getters = [(lambda r, lab=labels[d]: lab[r[0]]) if d in TIME_DIMENSIONS
               else (lambda r, i=column[d]: r[i]) for d in dims]
    if len(getters) == 1:
        (one,) = getters
        return lambda r: (one(r),)
    first, second = getters
    return lambda r: (first(r), second(r))


#: where each dimension is in an inner cell's key (time label, project, model, provider)
_INNER = {"project": 1, "model": 2, "provider": 3, **{d: 0 for d in TIME_DIMENSIONS}}


def _merge(inner: Mapping[Any, list[Any]], dims: Sequence[str]) -> dict[Any, list[Any]]:
    from ccmeter.reportgroup import merge_cells

    at = [_INNER[d] for d in dims]
    if len(at) == 1:
        (i,) = at
        return merge_cells(inner, lambda k: (k[i],))
    i, j = at
    return merge_cells(inner, lambda k: (k[i], k[j]))


def _report(db: Any, read: Sequence[tuple[Any, ...]], cells: Mapping[Any, list[Any]],
            dims: tuple[str, ...], filters: Filters, catalog: Catalog, slot: int,
            labels: dict[str, dict[int, str]], *, fill_gaps: bool,
            assumption: Assumption | None) -> Report:
    """One report from its cells."""
    from ccmeter.reportgroup import FIRST, LAST, cell_group

    time_dim = next((d for d in dims if d in TIME_DIMENSIONS), None)
    groups = {key: cell_group(cell) for key, cell in cells.items()}
    if assumption is not None and assumption.active:
        _reprice_groups(db, groups, dims, filters, catalog, assumption, slot, labels)

    if time_dim is not None and len(dims) == 1 and fill_gaps:
        _fill_gaps(groups, time_dim, filters, min((r[FIRST] for r in read), default=None),
                   max((r[LAST] for r in read), default=None))

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
             labels: dict[str, dict[int, str]]) -> tuple[Any, ...]:
    """The report row (group) a call belongs to; ``labels`` caches the time labels."""
    slot_index = int(row["slot"])
    parts: list[Any] = []
    for dim in dims:
        if dim in TIME_DIMENSIONS:
            cache = labels.setdefault(dim, {})
            label = cache.get(slot_index)
            if label is None:
                label = cache[slot_index] = bucket_label(bucket_start(slot_index * slot, dim),
                                                         dim)
            parts.append(label)
        else:
            parts.append(row[_ROW_FIELD[dim]])
    return tuple(parts)


def _reprice_groups(db: Any, groups: Mapping[tuple[Any, ...], Group], dims: Sequence[str],
                    filters: Filters, catalog: Catalog, assumption: Assumption, slot: int,
                    labels: dict[str, dict[int, str]]) -> None:
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


def _where(filters: Filters, slot: int) -> tuple[str, dict[str, Any]]:
    return reportsql.slotted_where(filters.filter_values(), slot)


def report_sql(dims: Sequence[str], filters: Filters, slot: int,
               table: str = "api_calls") -> tuple[str, dict[str, Any]]:
    """The aggregate query (and its parameters) for a report on one source's ``table``."""
    return reportsql.report_sql(dims, filters.filter_values(), slot, table)


def long_context_sql(
    dims: Sequence[str], filters: Filters, thresholds: Sequence[int], slot: int,
    table: str = "api_calls",
) -> tuple[str, dict[str, Any]]:
    """The long-prompt query (and its parameters) matching :func:`report_sql`'s groups."""
    return reportsql.long_context_sql(dims, filters.filter_values(), thresholds, slot, table)


def _fill_gaps(groups: dict[tuple[Any, ...], Group], unit: str, filters: Filters,
               first: float | None, last: float | None) -> None:
    """Add empty rows for buckets without calls, so a time series shows its idle stretches.

    From ``--since`` (else the first call) to ``--until`` (else now); skipped when that would
    be more than ``MAX_FILLED_BUCKETS`` rows.
    """
    since = filters.since if filters.since is not None else first
    if since is None:
        return
    until = filters.until
    if until is None:
        until = max(time.time(), (last if last is not None else since) + 1)
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
