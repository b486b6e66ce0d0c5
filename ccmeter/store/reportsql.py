"""The SQL behind ``ccmeter report`` (and every page of the dashboard): one aggregate per
source table, keyed on a UTC time slot and the report's dimensions, and the long-prompt query
that goes with it. Text and parameters only; :mod:`ccmeter.reports` runs and folds them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

PROMPT_TOKENS_SQL = (
    "(input_tokens + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens)"
)
#: (filter name, its WHERE clause), in the order they are joined.
FILTER_CLAUSES = (
    ("since", "started_ts >= :since"),
    ("until", "started_ts < :until"),
    ("project", "project = :project"),
    ("model", "instr(lower(COALESCE(model, '')), :model) > 0"),
    ("session", "session_id = :session"),
)
#: The slot (seconds) of the ``api_calls_rollup`` index's first column: an hour.
INDEX_SLOT = 3600
#: The calls of one part of every UTC hour (seconds into the hour, from and to): where local
#: hours are not whole UTC hours (India, Nepal, Newfoundland) a report by day/week/month
#: reads each part of the hour apart, still grouped on the index's hourly slot, instead of
#: grouping on quarter-hours, which the index cannot stream (a sort of every row).
FILTER_PART = ("CAST(started_ts AS INTEGER) % 3600 >= :part_from "
               "AND CAST(started_ts AS INTEGER) % 3600 < :part_to")
#: Redundant slot bounds next to the exact time filters, so the range is served by the
#: ``api_calls_rollup`` expression index (whose first column is the hourly slot).
FILTER_SLOT_SINCE = "CAST(started_ts / {slot} AS INTEGER) >= :slot_since"
FILTER_SLOT_UNTIL = "CAST(started_ts / {slot} AS INTEGER) <= :slot_until"
#: The one aggregate every report runs. Its GROUP BY is a prefix of the ``api_calls_rollup``
#: covering index (migration 2), so SQLite aggregates in index order without sorting a
#: million rows. ``{slot}`` is a literal (3600 normally) so the expression matches the index.
REPORT_SQL = """
SELECT {slot_sql} AS slot,
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
LONG_CONTEXT_SQL = """
SELECT {slot_sql} AS slot,
    project, model AS model_name, speed, service_tier, inference_geo{session},
    {buckets} AS lc_bucket,
    SUM(cache_read_tokens) AS cache_read_tokens,
    SUM(cache_write_5m_tokens) AS cache_write_5m_tokens,
    SUM(cache_write_1h_tokens) AS cache_write_1h_tokens
FROM {table}
{where}
GROUP BY 1, 2, 3, 4, 5, 6{session_group}, lc_bucket
"""
_OVER_THRESHOLD = "(" + PROMPT_TOKENS_SQL + " > :lc{i})"
#: The floor of the ``api_calls_long_prompts`` partial index (migration 11). A literal, and
#: the index's WHERE text exactly: SQLite uses a partial index only for a query whose WHERE
#: holds its term. Added to the long-prompt query when every threshold is at least this (it
#: is then implied by the first threshold's term: the same rows).
LONG_PROMPT_FLOOR = 100_000
LONG_PROMPT_FLOOR_SQL = (
    "(input_tokens + cache_write_5m_tokens + cache_write_1h_tokens\n"
    "                 + cache_read_tokens) > 100000"
)


#: The same aggregate from the ``call_rollup`` table (migration 12): one part of a report
#: (quarter-hours ``:rollup_from`` to before ``:rollup_to``) of one source, summed into the
#: part's grain (``{label}``: see :func:`label_sql`). Same columns, same order as REPORT_SQL.
ROLLUP_SQL = """
SELECT {label} AS slot,
    project, model AS model_name, speed, service_tier, inference_geo{session},
    SUM(calls) AS calls,
    SUM(input_tokens) AS input_tokens,
    SUM(cache_write_5m_tokens) AS cache_write_5m_tokens,
    SUM(cache_write_1h_tokens) AS cache_write_1h_tokens,
    SUM(cache_read_tokens) AS cache_read_tokens,
    SUM(output_tokens) AS output_tokens,
    SUM(cost_picousd) AS cost_picousd,
    SUM(priced_calls) AS priced_calls,
    MIN(first_ts) AS first_ts,
    MAX(last_ts) AS last_ts
FROM call_rollup
WHERE source = :source AND slot >= :rollup_from AND slot < :rollup_to{where}
GROUP BY 1, 2, 3, 4, 5, 6{session_group}
"""
#: A call's quarter-hour, as ``call_rollup.slot`` holds it.
QUARTER_SQL = "CAST(started_ts / 900 AS INTEGER)"
#: The raw calls at a range's ends, beside the rollup's whole slots.
EDGE_SQL = {
    "before": QUARTER_SQL + " < :rollup_from AND started_ts < :rollup_from * 900 + 1",
    "after": QUARTER_SQL + " >= :rollup_to AND started_ts >= :rollup_to * 900 - 1",
}
#: The raw calls of a rollup span (its long prompts), found as the rollup found them.
SPAN_SQL = (QUARTER_SQL + " >= :rollup_from AND " + QUARTER_SQL + " < :rollup_to "
            "AND started_ts >= :rollup_from * 900 - 1 AND started_ts < :rollup_to * 900 + 1 "
            "AND CAST(started_ts / 3600 AS INTEGER) >= :hour_from "
            "AND CAST(started_ts / 3600 AS INTEGER) <= :hour_to")


def label_sql(quarter: str, per: int, cuts: Sequence[int] | None = None) -> str:
    """The report slot a part labels a call (or rollup row) with, from its quarter-hour
    ``quarter`` (an SQL expression): its own slot (``per`` quarter-hours), or with ``cuts``
    (ascending quarter-hours, the first at or before every row) the first quarter-hour of
    its piece, in slots: a binary search written as nested CASEs. Integers only."""
    if cuts is None:
        return f"({quarter} / {int(per)})"

    def pick(lo: int, hi: int) -> str:
        if hi - lo == 1:
            return str(int(cuts[lo]) // int(per))
        mid = (lo + hi) // 2
        return (f"CASE WHEN {quarter} >= {int(cuts[mid])} THEN {pick(mid, hi)} "
                f"ELSE {pick(lo, mid)} END")

    return f"({pick(0, len(cuts))})"


def fetch(db: Any, sql: str, params: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a report query: its column names and its rows as plain tuples (a year of
    aggregate rows is tens of thousands: no dict per row)."""
    conn = db if isinstance(db, sqlite3.Connection) else db.conn
    cursor = conn.execute(sql, params)
    return [column[0] for column in cursor.description or ()], cursor.fetchall()


def filter_where(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (and parameters) of a report's filters (``None``: no such filter)."""
    clauses, params = _filter_clauses(values)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _filter_clauses(values: dict[str, Any], skip: tuple[str, ...] = ()
                    ) -> tuple[list[str], dict[str, Any]]:
    """The clauses (and parameters) of the filters set in ``values``, but those in ``skip``."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    for name, clause in FILTER_CLAUSES:
        value = values.get(name)
        if value is None or name in skip:
            continue
        clauses.append(clause)
        params[name] = value.lower() if name == "model" else value
    return clauses, params


def slotted_where(values: dict[str, Any], slot: int,
                  part: tuple[int, int] | None = None) -> tuple[str, dict[str, Any]]:
    """:func:`filter_where` plus the redundant slot bounds that let the index serve it
    (and, with ``part``, only the calls in that part of their hour)."""
    where, params = filter_where(values)
    extra = []
    if part is not None:
        extra.append(FILTER_PART)
        params["part_from"], params["part_to"] = part
    since, until = values.get("since"), values.get("until")
    if since is not None:
        extra.append(FILTER_SLOT_SINCE.format(slot=int(slot)))
        params["slot_since"] = int(since // slot)
    if until is not None:
        extra.append(FILTER_SLOT_UNTIL.format(slot=int(slot)))
        params["slot_until"] = int(until // slot)
    if extra:
        where = (where + " AND " if where else "WHERE ") + " AND ".join(extra)
    return where, params


def optional_columns(dims: Sequence[str]) -> tuple[str, str]:
    """Columns grouped on only when asked for (``session_id``, ``provider``), as the SELECT
    and GROUP BY additions: other reports keep the rollup index's exact GROUP BY."""
    names = [c for d, c in (("session", "session_id"), ("provider", "provider")) if d in dims]
    return "".join(f",\n    {c}" for c in names), "".join(f", {c}" for c in names)


def report_sql(dims: Sequence[str], values: dict[str, Any], slot: int,
               table: str = "api_calls", part: tuple[int, int] | None = None,
               edge: str | None = None, start: int = 0) -> tuple[str, dict[str, Any]]:
    """The aggregate query (and its parameters) for a report on one source's ``table``;
    with ``edge`` ("before"/"after" the quarter-hour ``start``) the calls at one end of a
    rollup read, labelled by their quarter-hour's slot as the rollup labels its rows."""
    if edge is None:
        where, params = slotted_where(values, slot, part)
        label = f"CAST(started_ts / {int(slot)} AS INTEGER)"
    else:
        where, params = filter_where(values)
        where = (where + " AND " if where else "WHERE ") + EDGE_SQL[edge]
        params["rollup_from" if edge == "before" else "rollup_to"] = start
        label = label_sql(QUARTER_SQL, slot // 900)
    columns, group = optional_columns(dims)
    sql = REPORT_SQL.format(slot_sql=label, session=columns, where=where, session_group=group,
                            table=table)
    return sql, params


def _plain_filters(values: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The filters other than the time range (rollup parts have their own bounds)."""
    return _filter_clauses(values, ("since", "until"))


def rollup_sql(dims: Sequence[str], values: dict[str, Any], source: str, label: str,
               start: int, end: int) -> tuple[str, dict[str, Any]]:
    """One rollup part's aggregate (and its parameters): quarter-hours ``start`` to before
    ``end`` of ``source``, labelled ``label`` (:func:`label_sql` over ``slot``)."""
    clauses, params = _plain_filters(values)
    params.update(source=source, rollup_from=start, rollup_to=end)
    columns, group = optional_columns(dims)
    where = "".join(" AND " + c for c in clauses)
    return ROLLUP_SQL.format(label=label, session=columns, where=where,
                             session_group=group), params


def part_long_sql(dims: Sequence[str], values: dict[str, Any], thresholds: Sequence[int],
                  table: str, label: str, *, edge: str | None = None, start: int,
                  end: int | None = None) -> tuple[str, dict[str, Any]]:
    """The long-prompt query of one part: an ``edge`` (its bound ``start``) or a span of
    the rollup (``start`` to ``end``), labelled as the part's aggregate labels calls."""
    if edge is not None:
        where, params = filter_where(values)
        bound = "rollup_from" if edge == "before" else "rollup_to"
        where = (where + " AND " if where else "WHERE ") + EDGE_SQL[edge]
        params[bound] = start
    else:
        assert end is not None
        clauses, params = _plain_filters(values)
        where = "WHERE " + " AND ".join([*clauses, SPAN_SQL])
        params.update(rollup_from=start, rollup_to=end, hour_from=(start * 900 - 1) // 3600,
                      hour_to=(end * 900 + 1) // 3600)
    return _long_sql(dims, where, params, thresholds, label, table)


def long_context_sql(
    dims: Sequence[str], values: dict[str, Any], thresholds: Sequence[int], slot: int,
    table: str = "api_calls", part: tuple[int, int] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The long-prompt query (and its parameters) matching :func:`report_sql`'s groups."""
    where, params = slotted_where(values, slot, part)
    return _long_sql(dims, where, params, thresholds, f"CAST(started_ts / {int(slot)} AS INTEGER)",
                     table)


def _long_sql(dims: Sequence[str], where: str, params: dict[str, Any],
              thresholds: Sequence[int], label: str, table: str
              ) -> tuple[str, dict[str, Any]]:
    terms = []
    for index, threshold in enumerate(thresholds):
        params[f"lc{index}"] = threshold
        terms.append(_OVER_THRESHOLD.format(i=index))
    where = (where + " AND " if where else "WHERE ") + terms[0]
    if min(thresholds) >= LONG_PROMPT_FLOOR:
        where += " AND " + LONG_PROMPT_FLOOR_SQL
    columns, group = optional_columns(dims)
    sql = LONG_CONTEXT_SQL.format(slot_sql=label, session=columns, buckets=" + ".join(terms),
                                  where=where, session_group=group, table=table)
    return sql, params
