"""The only package that touches SQLite: open, migrate, write calls, run named queries.

- :mod:`.db` opens the file (WAL, busy timeout), runs transactions, waits out locks;
- :mod:`.migrations` is the schema, an ordered list (a shipped migration is never edited);
- :mod:`.calls` holds the named writes and reads on ``api_calls`` and ``cost_history``;
- :mod:`.writer` is :class:`CallWriter`, the proxy's one writing thread;
- :mod:`.capspend` is the SQL behind spending caps (window spends, reservations, warnings);
- :mod:`.recovered` inserts the rows folded in from a dead proxy's call journal.

Everything a caller needs is re-exported here, so ``from ccmeter import store`` and
``store.connect(...)`` read the same wherever they are used.
"""

from ccmeter.store.calls import (
    CALL_COLUMNS,
    REPRICE_ROWS_SQL,
    STATUSES,
    bulk_insert_calls,
    cost_history,
    get_call,
    reprice_calls,
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
)
from ccmeter.store.migrations import MIGRATIONS
from ccmeter.store.recovered import insert_missing_calls
from ccmeter.store.writer import CallWriter

__all__ = [
    "BUSY_TIMEOUT_MS",
    "CALL_COLUMNS",
    "CAP_BUCKET_S",
    "CAP_CHECK_WAIT_MS",
    "MIGRATIONS",
    "RELEASE_RESERVATION",
    "REPRICE_ROWS_SQL",
    "STATUSES",
    "CallWriter",
    "MigratedDatabase",
    "Reservation",
    "SpendQuery",
    "SpendWindow",
    "WouldBlock",
    "_spends_sql",
    "bulk_insert_calls",
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
    "insert_missing_calls",
    "migrate",
    "query",
    "reprice_calls",
    "run_spend_query",
    "schema_version",
    "spend_query",
    "upsert_calls",
]
