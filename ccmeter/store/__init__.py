"""The only package that touches SQLite: open, migrate, write calls, run named queries.

- :mod:`.db` opens the file (WAL, busy timeout), runs transactions, waits out locks;
- :mod:`.migrations` is the schema, an ordered list (a shipped migration is never edited);
- :mod:`.calls` holds the named writes and reads on ``api_calls`` and ``cost_history``;
- :mod:`.writer` is :class:`CallWriter`, the proxy's one writing thread;
- :mod:`.capspend` is the SQL behind spending caps (window spends, reservations, warnings);
- :mod:`.metrics` sums the finished calls per label set for the exported metrics;
- :mod:`.recovered` inserts the rows folded in from a dead proxy's call journal;
- :mod:`.transcripts` holds the calls imported from Claude Code's transcripts, the import's
  bookkeeping, and the reconcile query;
- :mod:`.reportsql` is the aggregate behind ``ccmeter report`` and the dashboard.

Everything a caller needs is re-exported here, so ``from ccmeter import store`` and
``store.connect(...)`` read the same wherever they are used. The re-exports are lazy: a
command that only reads (``ccmeter report``) loads :mod:`.db` and not the writer thread, its
logging and the cap SQL, which it would never use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ccmeter.store.calls import (
        CALL_COLUMNS,
        REPRICE_ROWS_SQL,
        STATUSES,
        bulk_insert_calls,
        cost_history,
        get_call,
        reprice_calls,
        run_calls,
        upsert_calls,
    )
    from ccmeter.store.capspend import (
        CAP_BUCKET_S,
        CAP_CHECK_WAIT_MS,
        RELEASE_RESERVATION,
        Reservation,
        SpendQuery,
        SpendWindow,
        WouldBlock,
        _spends_sql,
        cap_check_and_reserve,
        cap_mark_warned,
        cap_release,
        cap_reservations,
        cap_rolling_release_ts,
        cap_spends,
        cap_spent,
        connect_cap_checker,
        run_spend_query,
        spend_query,
    )
    from ccmeter.store.db import (
        BUSY_TIMEOUT_MS,
        MigratedDatabase,
        connect,
        connect_migrated,
        connect_reader,
        data_version,
        migrate,
        query,
        schema_version,
        snapshot,
    )
    from ccmeter.store.metrics import call_totals, repriced_mark
    from ccmeter.store.migrations import MIGRATIONS
    from ccmeter.store.plan import newest_plan_row, plan_calls
    from ccmeter.store.recovered import insert_missing_calls
    from ccmeter.store.rollup import rebuild_rollup, rollup_extent, rollup_out_of_step
    from ccmeter.store.transcripts import (
        TRANSCRIPT_COLUMNS,
        calls_on_wire,
        has_imported_calls,
        known_files,
        prepare_import,
        reconcile_rows,
        save_transcript_batch,
        transcript_calls_by_key,
    )
    from ccmeter.store.waste import (
        cache_calls,
        latest_repeat,
        session_cache_calls,
        session_rate,
        spend,
    )
    from ccmeter.store.whatif import whatif_calls
    from ccmeter.store.writer import CallWriter

#: where each re-exported name lives
_HOMES = {
    "CALL_COLUMNS": "calls",
    "REPRICE_ROWS_SQL": "calls",
    "STATUSES": "calls",
    "bulk_insert_calls": "calls",
    "cost_history": "calls",
    "get_call": "calls",
    "reprice_calls": "calls",
    "run_calls": "calls",
    "upsert_calls": "calls",
    "CAP_BUCKET_S": "capspend",
    "CAP_CHECK_WAIT_MS": "capspend",
    "RELEASE_RESERVATION": "capspend",
    "Reservation": "capspend",
    "SpendQuery": "capspend",
    "SpendWindow": "capspend",
    "WouldBlock": "capspend",
    "_spends_sql": "capspend",
    "cap_check_and_reserve": "capspend",
    "cap_mark_warned": "capspend",
    "cap_release": "capspend",
    "cap_reservations": "capspend",
    "cap_rolling_release_ts": "capspend",
    "cap_spends": "capspend",
    "cap_spent": "capspend",
    "connect_cap_checker": "capspend",
    "run_spend_query": "capspend",
    "spend_query": "capspend",
    "BUSY_TIMEOUT_MS": "db",
    "MigratedDatabase": "db",
    "connect": "db",
    "connect_migrated": "db",
    "connect_reader": "db",
    "data_version": "db",
    "migrate": "db",
    "query": "db",
    "schema_version": "db",
    "snapshot": "db",
    "MIGRATIONS": "migrations",
    "insert_missing_calls": "recovered",
    "rebuild_rollup": "rollup",
    "rollup_extent": "rollup",
    "rollup_out_of_step": "rollup",
    "plan_calls": "plan",
    "newest_plan_row": "plan",
    "CallWriter": "writer",
    "whatif_calls": "whatif",
    "call_totals": "metrics",
    "repriced_mark": "metrics",
    "cache_calls": "waste",
    "latest_repeat": "waste",
    "session_cache_calls": "waste",
    "session_rate": "waste",
    "spend": "waste",
    "TRANSCRIPT_COLUMNS": "transcripts",
    "calls_on_wire": "transcripts",
    "has_imported_calls": "transcripts",
    "known_files": "transcripts",
    "prepare_import": "transcripts",
    "reconcile_rows": "transcripts",
    "save_transcript_batch": "transcripts",
    "transcript_calls_by_key": "transcripts",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CALL_COLUMNS",
    "CAP_BUCKET_S",
    "CAP_CHECK_WAIT_MS",
    "MIGRATIONS",
    "RELEASE_RESERVATION",
    "REPRICE_ROWS_SQL",
    "STATUSES",
    "TRANSCRIPT_COLUMNS",
    "CallWriter",
    "MigratedDatabase",
    "Reservation",
    "SpendQuery",
    "SpendWindow",
    "WouldBlock",
    "_spends_sql",
    "bulk_insert_calls",
    "cache_calls",
    "call_totals",
    "calls_on_wire",
    "cap_check_and_reserve",
    "cap_mark_warned",
    "cap_release",
    "cap_reservations",
    "cap_rolling_release_ts",
    "cap_spends",
    "cap_spent",
    "connect",
    "connect_cap_checker",
    "connect_migrated",
    "connect_reader",
    "cost_history",
    "data_version",
    "get_call",
    "has_imported_calls",
    "insert_missing_calls",
    "known_files",
    "latest_repeat",
    "migrate",
    "newest_plan_row",
    "plan_calls",
    "prepare_import",
    "query",
    "rebuild_rollup",
    "reconcile_rows",
    "reprice_calls",
    "repriced_mark",
    "rollup_extent",
    "rollup_out_of_step",
    "run_calls",
    "run_spend_query",
    "save_transcript_batch",
    "schema_version",
    "session_cache_calls",
    "session_rate",
    "snapshot",
    "spend",
    "spend_query",
    "transcript_calls_by_key",
    "upsert_calls",
    "whatif_calls",
]
