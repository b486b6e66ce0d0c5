"""``call_rollup``: every source's calls summed per UTC quarter-hour and report group, kept
exact by triggers, so a report over a year reads ~100k sums instead of a million calls.

How it stays exact (the why):
- The two common writes are O(1): a new call is added to its rollup row, and a call whose
  time and group stay put (its usage written at the end, a reprice) moves its row's sums by
  the difference; counts, tokens and picodollars are integers, so both are exact.
- Every other change (a delete, the project filled in later, a call moved in time) makes
  its trigger *recompute* the quarter-hours it touches from the calls themselves: their
  rollup rows are deleted and summed again with the report's own aggregate (a quarter-hour
  holds few calls). A first or last call time is never "un-added": it is only recomputed.
- Whatever the writers do, the rollup is what a ``GROUP BY`` of the calls gives:
  tests/test_rollup.py checks it against a fresh sum after random writes of every kind.
- The transcript source is the view ``imported_calls``: transcript rows that no wire row
  matches (by request id or message id). A wire row that arrives, changes its ids or goes
  away moves transcript rows in or out of the view, so the wire table's triggers also
  recompute the quarter-hours of the transcript rows its ids match (before and after).
- UPSERTs (``INSERT ... ON CONFLICT DO UPDATE``) fire the UPDATE triggers. ``INSERT OR
  REPLACE`` fires no delete trigger for the row it replaces where recursive_triggers is off
  (plain sqlite3 connections) and the insert trigger only adds: the call would count twice.
  No writer uses it on these tables (tests/test_rollup_adversarial.py checks).
- ``slot`` is ``CAST(started_ts / 900 AS INTEGER)``, the expression the reports use; the
  quarter-hour holds every local hour boundary of every zone whose offset is a whole number
  of quarter-hours (all current zones).

The reads are in :mod:`ccmeter.store.reportsql`; this module is the table and its triggers
(migration 12 creates them: a shipped migration is never edited).
"""

from __future__ import annotations

from typing import Any

#: The rollup's width in seconds: a quarter-hour.
ROLLUP_SLOT = 900
#: The report groups a rollup row is the sum of (the report's dimensions and price keys).
GROUP_COLUMNS = ("project", "model", "speed", "service_tier", "inference_geo", "provider",
                 "session_id")
SUM_COLUMNS = ("input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
               "cache_read_tokens", "output_tokens", "cost_picousd")
#: A change to any of these (or to the match ids, for the transcript side) moves a call's sums.
WATCHED_COLUMNS = ("started_ts", *GROUP_COLUMNS, *SUM_COLUMNS)

CREATE_TABLE = """
CREATE TABLE call_rollup (
    source TEXT NOT NULL,              -- 'wire' (api_calls) or 'transcript' (imported_calls)
    slot INTEGER NOT NULL,             -- CAST(started_ts / 900 AS INTEGER): a UTC quarter-hour
    group_key TEXT NOT NULL,           -- json_array() of the group columns (tells NULL from '')
    project TEXT,
    model TEXT,
    speed TEXT,
    service_tier TEXT,
    inference_geo TEXT,
    provider TEXT,
    session_id TEXT,
    calls INTEGER NOT NULL,
    priced_calls INTEGER NOT NULL,     -- calls with a cost (the rest are unpriced)
    input_tokens INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_picousd INTEGER,              -- SUM of the priced calls; NULL when none is priced
    first_ts REAL NOT NULL,
    last_ts REAL NOT NULL,
    PRIMARY KEY (source, slot, group_key)
) WITHOUT ROWID
"""

_COLUMNS = ("source, slot, group_key, " + ", ".join(GROUP_COLUMNS) + ", calls, priced_calls, "
            + ", ".join(SUM_COLUMNS) + ", first_ts, last_ts")


def _aggregate(source: str, slot: str, rows: str, where: str, alias: str = "") -> str:
    """``INSERT`` of the sums of ``rows`` (a table or view, with ``alias.`` prefix) matching
    ``where``, grouped by ``slot`` (an SQL expression) and the group columns."""
    group = ", ".join(alias + c for c in GROUP_COLUMNS)
    sums = ", ".join(f"SUM({alias}{c})" for c in SUM_COLUMNS)
    return f"""INSERT INTO call_rollup ({_COLUMNS})
        SELECT '{source}', {slot}, json_array({group}), {group}, COUNT(*),
            COUNT({alias}cost_picousd), {sums}, MIN({alias}started_ts), MAX({alias}started_ts)
        FROM {rows}
        WHERE {where}
        GROUP BY {slot}, {group};"""


def _slot_of(rec: str) -> str:
    return f"CAST({rec}.started_ts / {ROLLUP_SLOT} AS INTEGER)"


def _in_slot(slot: str, alias: str = "") -> str:
    """The calls of quarter-hour ``slot``: a started_ts range (served by its index) and the
    slot expression itself (so a call is in exactly the slot the reports put it in)."""
    return (f"{alias}started_ts >= {slot} * {ROLLUP_SLOT} - 1 "
            f"AND {alias}started_ts < {slot} * {ROLLUP_SLOT} + {ROLLUP_SLOT + 1} "
            f"AND CAST({alias}started_ts / {ROLLUP_SLOT} AS INTEGER) = {slot}")


def _recompute(source: str, rows: str, rec: str, when: str = "1") -> str:
    """Trigger body: the quarter-hour of ``rec`` (NEW or OLD) summed again from ``rows``."""
    slot = _slot_of(rec)
    return f"""
        DELETE FROM call_rollup WHERE source = '{source}' AND slot = {slot} AND ({when});
        {_aggregate(source, slot, rows, f"{_in_slot(slot)} AND ({when})")}"""


def _matched_slots(rec: str) -> str:
    """The quarter-hours of the transcript rows ``rec``'s request or message id matches."""
    slot = "CAST(started_ts / 900 AS INTEGER)"
    return (f"SELECT {slot} AS s FROM transcript_calls WHERE request_id = {rec}.request_id "
            f"UNION SELECT {slot} FROM transcript_calls WHERE message_id = {rec}.message_id")


def _recompute_matched(rec: str) -> str:
    """Trigger body: the transcript quarter-hours a wire row's ids touch, summed again."""
    return f"""
        DELETE FROM call_rollup WHERE source = 'transcript'
            AND slot IN ({_matched_slots(rec)});
        {_aggregate("transcript", "m.s", f"({_matched_slots(rec)}) AS m JOIN imported_calls AS i",
                    _in_slot("m.s", "i."), alias="i.")}"""


def _changed(columns: tuple[str, ...]) -> str:
    return " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)


def _visible(rec: str) -> str:
    """A transcript row ``rec`` is in ``imported_calls`` (the view's own test)."""
    return (f"NOT EXISTS (SELECT 1 FROM api_calls w WHERE w.request_id = {rec}.request_id) "
            f"AND NOT EXISTS (SELECT 1 FROM api_calls w WHERE w.message_id = {rec}.message_id)")


def _key(rec: str) -> str:
    return f"json_array({', '.join(f'{rec}.{c}' for c in GROUP_COLUMNS)})"


def _add(source: str, when: str = "1") -> str:
    """Trigger body: NEW added to its rollup row (a new call: no recompute needed)."""
    values = ", ".join(f"NEW.{c}" for c in GROUP_COLUMNS)
    sums = ", ".join(f"NEW.{c}" for c in SUM_COLUMNS)
    added = ", ".join(f"{c} = {c} + excluded.{c}" for c in SUM_COLUMNS[:-1])
    return f"""
        INSERT INTO call_rollup ({_COLUMNS})
        SELECT '{source}', {_slot_of("NEW")}, {_key("NEW")}, {values}, 1,
            NEW.cost_picousd IS NOT NULL, {sums}, NEW.started_ts, NEW.started_ts
        WHERE {when}
        ON CONFLICT (source, slot, group_key) DO UPDATE SET calls = calls + 1,
            priced_calls = priced_calls + excluded.priced_calls, {added},
            cost_picousd = CASE WHEN excluded.cost_picousd IS NULL THEN cost_picousd
                ELSE COALESCE(cost_picousd, 0) + excluded.cost_picousd END,
            first_ts = MIN(first_ts, excluded.first_ts),
            last_ts = MAX(last_ts, excluded.last_ts);"""


def _in_place(source: str, when: str = "1") -> str:
    """Trigger body: a call whose time and group stayed put, its sums changed (the usage at
    the end of a call, a reprice): its rollup row takes the difference."""
    moved = ", ".join(f"{c} = {c} - OLD.{c} + NEW.{c}" for c in SUM_COLUMNS[:-1])
    priced = ("priced_calls - (OLD.cost_picousd IS NOT NULL) "
              "+ (NEW.cost_picousd IS NOT NULL)")
    return f"""
        UPDATE call_rollup SET priced_calls = {priced}, {moved},
            cost_picousd = CASE WHEN {priced} = 0 THEN NULL ELSE COALESCE(cost_picousd, 0)
                - COALESCE(OLD.cost_picousd, 0) + COALESCE(NEW.cost_picousd, 0) END
        WHERE source = '{source}' AND slot = {_slot_of("NEW")} AND group_key = {_key("NEW")}
            AND ({when});"""


_MOVED = f"{_slot_of('OLD')} != {_slot_of('NEW')}"
_IDS = ("request_id", "message_id")
#: What places a call in its rollup row (and, for a transcript row, in the view at all).
_PLACE = ("started_ts", *GROUP_COLUMNS)


def _same(columns: tuple[str, ...]) -> str:
    return " AND ".join(f"OLD.{c} IS NEW.{c}" for c in columns)


TRIGGERS = (
    f"""CREATE TRIGGER call_rollup_wire_insert AFTER INSERT ON api_calls
        BEGIN {_add("wire")}
        END""",
    f"""CREATE TRIGGER call_rollup_wire_update
        AFTER UPDATE OF {", ".join(WATCHED_COLUMNS)} ON api_calls
        WHEN {_same(_PLACE)} AND ({_changed(SUM_COLUMNS)})
        BEGIN {_in_place("wire")}
        END""",
    f"""CREATE TRIGGER call_rollup_wire_move
        AFTER UPDATE OF {", ".join(_PLACE)} ON api_calls
        WHEN {_changed(_PLACE)}
        BEGIN {_recompute("wire", "api_calls", "NEW")}
              {_recompute("wire", "api_calls", "OLD", _MOVED)}
        END""",
    f"""CREATE TRIGGER call_rollup_wire_delete AFTER DELETE ON api_calls
        BEGIN {_recompute("wire", "api_calls", "OLD")}
        END""",
    # a wire row's ids decide which transcript rows the view imported_calls shows
    f"""CREATE TRIGGER call_rollup_match_insert AFTER INSERT ON api_calls
        WHEN NEW.request_id IS NOT NULL OR NEW.message_id IS NOT NULL
        BEGIN {_recompute_matched("NEW")}
        END""",
    f"""CREATE TRIGGER call_rollup_match_update AFTER UPDATE OF {", ".join(_IDS)} ON api_calls
        WHEN {_changed(_IDS)}
        BEGIN {_recompute_matched("OLD")} {_recompute_matched("NEW")}
        END""",
    f"""CREATE TRIGGER call_rollup_match_delete AFTER DELETE ON api_calls
        WHEN OLD.request_id IS NOT NULL OR OLD.message_id IS NOT NULL
        BEGIN {_recompute_matched("OLD")}
        END""",
    f"""CREATE TRIGGER call_rollup_transcript_insert AFTER INSERT ON transcript_calls
        BEGIN {_add("transcript", _visible("NEW"))}
        END""",
    f"""CREATE TRIGGER call_rollup_transcript_update
        AFTER UPDATE OF {", ".join(WATCHED_COLUMNS)} ON transcript_calls
        WHEN {_same((*_PLACE, *_IDS))} AND ({_changed(SUM_COLUMNS)})
        BEGIN {_in_place("transcript", _visible("NEW"))}
        END""",
    f"""CREATE TRIGGER call_rollup_transcript_move
        AFTER UPDATE OF {", ".join((*_PLACE, *_IDS))} ON transcript_calls
        WHEN {_changed((*_PLACE, *_IDS))}
        BEGIN {_recompute("transcript", "imported_calls", "NEW")}
              {_recompute("transcript", "imported_calls", "OLD", _MOVED)}
        END""",
    f"""CREATE TRIGGER call_rollup_transcript_delete AFTER DELETE ON transcript_calls
        BEGIN {_recompute("transcript", "imported_calls", "OLD")}
        END""",
)

#: Every rollup row again, from the calls (the migration's fill; also a repair).
REBUILD = (
    "DELETE FROM call_rollup",
    _aggregate("wire", "CAST(started_ts / 900 AS INTEGER)", "api_calls", "1"),
    _aggregate("transcript", "CAST(started_ts / 900 AS INTEGER)", "imported_calls", "1"),
)


#: Two subqueries: SQLite finds a lone MIN or MAX at one end of the index, not both at once.
EXTENT_SQL = ("SELECT (SELECT MIN(slot) FROM call_rollup WHERE source = :source), "
              "(SELECT MAX(slot) FROM call_rollup WHERE source = :source)")


def rollup_extent(db: Any, source: str) -> tuple[int, int] | None:
    """The first and last quarter-hour ``source`` has rows in; None when it has none."""
    first, last = db.execute(EXTENT_SQL, {"source": source}).fetchone()
    return None if first is None else (first, last)


_TOTALS = ("COUNT(*), COUNT(cost_picousd), " + ", ".join(f"SUM({c})" for c in SUM_COLUMNS)
           + ", MIN(started_ts), MAX(started_ts)")
_ROLLUP_TOTALS = ("SUM(calls), SUM(priced_calls), " + ", ".join(f"SUM({c})" for c in SUM_COLUMNS)
                  + ", MIN(first_ts), MAX(last_ts)")


def rollup_out_of_step(db: Any) -> list[str]:
    """The sources whose rollup differs from their calls in some UTC hour's totals (count,
    priced, every token, cost, first and last call) (``ccmeter doctor``): none unless
    something wrote around the triggers. Reads every call once, in the order of the
    report index's hourly slot (no sort)."""
    wrong = []
    for source, rows in (("wire", "api_calls"), ("transcript", "imported_calls")):
        calls = db.execute(f"SELECT CAST(started_ts / 3600 AS INTEGER), {_TOTALS} FROM {rows} "
                           "GROUP BY 1").fetchall()
        summed = db.execute(f"SELECT slot / 4, {_ROLLUP_TOTALS} FROM call_rollup "
                            "WHERE source = ? GROUP BY 1", (source,)).fetchall()
        if {tuple(r) for r in calls} != {tuple(r) for r in summed}:
            wrong.append(source)
    return wrong


def rebuild_rollup(db: Any) -> None:
    """Every rollup row summed again from the calls (the caller holds a transaction)."""
    for sql in REBUILD:
        db.execute(sql)


def create(db: Any) -> None:
    """Migration 12's body: the table, the index the triggers' transcript lookups need, the
    triggers, and the rows of the calls already stored."""
    db.execute(CREATE_TABLE)
    # a report of one project (the dashboard's project filter and page)
    db.execute("CREATE INDEX call_rollup_project ON call_rollup (source, project, slot)")
    db.execute("CREATE INDEX transcript_calls_message ON transcript_calls (message_id) "
               "WHERE message_id IS NOT NULL")
    for sql in TRIGGERS:
        db.execute(sql)
    for sql in REBUILD:
        db.execute(sql)
