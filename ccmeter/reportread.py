"""A report's aggregate rows, read: the whole slots of its range from ``call_rollup`` in
pieces (:mod:`ccmeter.reportplan`), the calls at its ends raw, or all of it from the calls
where the rollup cannot serve it; each row with what caching saved on it. The rows are
tuples laid out as :mod:`ccmeter.reportgroup` folds them; :mod:`ccmeter.reports` builds the
reports from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from ccmeter import store
from ccmeter.periods import hour_parts
from ccmeter.store import reportsql

if TYPE_CHECKING:
    from ccmeter.pricing import Catalog
    from ccmeter.reports import Filters

#: The schema version that has ``call_rollup`` (migration 12).
ROLLUP_SCHEMA = 12
#: The table each source's calls are read from.
SOURCE_TABLES = {"wire": "api_calls", "transcript": "imported_calls"}


def read_rows(db: Any, dims: Sequence[str], filters: Filters, slot: int,
              thresholds: Sequence[int], savings: Any, units: set[str]) -> list[tuple[Any, ...]]:
    """The aggregate rows for ``dims``' columns, each with what caching saved on it, as
    tuples laid out as :mod:`ccmeter.reportgroup` reads them."""
    out: list[tuple[Any, ...]] = []
    days: dict[int, date] = {}
    values = filters.filter_values()
    for source in filters.sources():
        table = SOURCE_TABLES[source]
        plan = _rollup_parts(db, values, slot, units, source, savings.catalog)
        if plan is not None:
            for piece in plan:
                queries, long_sql = _part_queries(dims, values, thresholds, slot, source, piece)
                _add_rows(out, db, queries, long_sql, 1, 0, slot, source, savings, days)
            continue
        # where local hours are not whole UTC hours each part of the hour is read apart,
        # still on the index's hourly slot; a row's slot is then its part's first ``slot``
        parts: Sequence[tuple[int, int] | None] = [None]
        query_slot = slot
        if slot < reportsql.INDEX_SLOT:
            parts, query_slot = hour_parts(slot), reportsql.INDEX_SLOT
        for part in parts:
            shift = 0 if part is None else part[0] // slot
            long_sql = reportsql.long_context_sql(dims, values, thresholds, query_slot, table,
                                                  part) if thresholds else None
            queries = [reportsql.report_sql(dims, values, query_slot, table, part)]
            _add_rows(out, db, queries, long_sql, query_slot // slot, shift, slot, source,
                      savings, days)
    return out


def _rollup_parts(db: Any, values: Mapping[str, Any], slot: int, units: set[str],
                  source: str, catalog: Catalog) -> list[Any] | None:
    """How a report reads ``source`` from ``call_rollup`` (:func:`ccmeter.reportplan.plan`);
    None when it reads the calls themselves: one session's (its index finds them at once),
    a database older than the rollup (a read-only connection does not migrate), or a range
    the rollup cannot serve."""
    from ccmeter import reportplan
    from ccmeter.savings import price_change_days

    if values.get("session") is not None or store.schema_version(db) < ROLLUP_SCHEMA:
        return None
    return reportplan.plan(values.get("since"), values.get("until"), slot, units,
                           store.rollup_extent(db, source), price_change_days(catalog))


def _part_queries(dims: Sequence[str], values: dict[str, Any], thresholds: Sequence[int],
                  slot: int, source: str, part: Any
                  ) -> tuple[list[tuple[str, dict[str, Any]]], tuple[str, dict[str, Any]] | None]:
    """One part's aggregate and long-prompt queries, labelling every call alike."""
    table = SOURCE_TABLES[source]
    per = slot // 900
    if part.edge is not None:
        query = reportsql.report_sql(dims, values, slot, table, edge=part.edge,
                                     start=part.start)
        label = reportsql.label_sql(reportsql.QUARTER_SQL, per)
        long_sql = reportsql.part_long_sql(dims, values, thresholds, table, label,
                                           edge=part.edge, start=part.start)
    else:
        query = reportsql.rollup_sql(dims, values, source, reportsql.label_sql(
            "slot", per, part.cuts), part.start, part.end)
        label = reportsql.label_sql(reportsql.QUARTER_SQL, per, part.cuts)
        long_sql = reportsql.part_long_sql(dims, values, thresholds, table, label,
                                           start=part.start, end=part.end)
    return [query], (long_sql if thresholds else None)


def _add_rows(out: list[tuple[Any, ...]], db: Any,
              queries: Sequence[tuple[str, dict[str, Any]]],
              long_sql: tuple[str, dict[str, Any]] | None, per_slot: int, shift: int,
              slot: int, source: str, savings: Any, days: dict[int, date]) -> None:
    """The rows of ``queries`` (REPORT_SQL's columns; no two give the same group in the same
    slot), with what caching saved, appended to ``out``."""
    long_rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    if long_sql is not None:
        for row in store.query(db, *long_sql):
            key = _group_key(row)
            long_rows.setdefault((key[0] * per_slot + shift, *key[1:]), []).append(row)
    transcript = source == "transcript"
    saved_of = savings.saved_tokens
    for sql, params in queries:
        names, rows = reportsql.fetch(db, sql, params)
        at = {name: i for i, name in enumerate(names)}
        session = at.get("session_id")
        provider = at.get("provider")
        calls = at["calls"]
        for r in rows:
            slot_index, project, model, speed, tier, geo = r[:6]
            slot_index = slot_index * per_slot + shift
            count, tokens_in, write_5m, write_1h, read, output, cost, priced, first, last = (
                r[calls:])
            slot_start = slot_index * slot
            utc_day = days.get(slot_start)
            if utc_day is None:
                utc_day = days[slot_start] = datetime.fromtimestamp(slot_start, UTC).date()
            sid = None if session is None else r[session]
            prov = None if provider is None else r[provider]
            lc = long_rows.get((slot_index, project, model, speed, tier, geo, sid, prov))
            saved = saved_of(model, utc_day, speed, tier, geo, read or 0, write_5m or 0,
                             write_1h or 0, lc or ())
            out.append((slot_index, project, model, sid, prov, count,
                        count if transcript else 0, tokens_in or 0, write_5m or 0,
                        write_1h or 0, read or 0, output or 0, priced, cost or 0, first, last,
                        saved))


def _group_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A long-prompt row's aggregate row (in one source's table)."""
    return (row["slot"], row["project"], row["model_name"], row["speed"], row["service_tier"],
            row["inference_geo"], row.get("session_id"), row.get("provider"))
