"""The schema, as an ordered list of migrations.

A shipped migration is never edited: add a new function at the end of :data:`MIGRATIONS`
(``ccmeter.store.db.migrate`` applies the ones a database has not seen, in order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils


def _m001_calls(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE api_calls (
            call_uid TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,          -- ISO 8601 UTC, e.g. 2026-11-27T09:15:02.123Z
            started_ts REAL NOT NULL,          -- the same instant as Unix seconds (for ranges)
            ttfb_ms REAL,
            duration_ms REAL,
            provider TEXT NOT NULL DEFAULT 'anthropic',
            host TEXT,
            endpoint TEXT NOT NULL DEFAULT 'messages',
            session_id TEXT,
            project TEXT,
            working_dir_name TEXT,
            agent_id TEXT,
            parent_agent_id TEXT,
            call_kind TEXT,
            client_name TEXT,
            client_version TEXT,
            auth_kind TEXT,
            requested_model TEXT,
            model TEXT,
            stream INTEGER,
            status TEXT NOT NULL,
            http_status INTEGER,
            stop_reason TEXT,
            error_type TEXT,
            request_id TEXT,
            message_id TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_5m_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            thinking_tokens INTEGER,
            web_search_requests INTEGER NOT NULL DEFAULT 0,
            web_fetch_requests INTEGER NOT NULL DEFAULT 0,
            service_tier TEXT,
            inference_geo TEXT,
            speed TEXT,
            hops_json TEXT,
            cost_picousd INTEGER,              -- exact cost in 1e-12 USD; NULL = unpriced
            cost_basis TEXT,                   -- 'api' or 'subscription_list_equivalent'
            catalog_version TEXT,
            pricing_note TEXT,
            plan_status TEXT,
            plan_5h_utilization REAL,
            plan_5h_reset INTEGER,
            plan_7d_utilization REAL,
            plan_7d_reset INTEGER,
            plan_binding_window TEXT,
            plan_overage_status TEXT,
            plan_headers_json TEXT,
            metering_error TEXT,
            updated_ts REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX api_calls_started_ts ON api_calls (started_ts)")
    db.execute("CREATE INDEX api_calls_session ON api_calls (session_id, started_ts)")
    db.execute("CREATE INDEX api_calls_project ON api_calls (project, started_ts)")
    db.execute(
        """
        CREATE VIEW calls AS
        SELECT
            call_uid, started_at, session_id, project, model, input_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
            cost_picousd / 1e12 AS cost_usd, cost_picousd, status,
            provider, endpoint, call_kind, agent_id, parent_agent_id, requested_model,
            stop_reason, error_type, http_status, request_id, message_id,
            ttfb_ms, duration_ms, web_search_requests, web_fetch_requests,
            service_tier, inference_geo, speed, cost_basis, catalog_version, pricing_note,
            auth_kind, client_name, client_version,
            plan_status, plan_5h_utilization, plan_7d_utilization
        FROM api_calls
        """
    )


def _m002_cost_history(db: sqlite_utils.Database) -> None:
    """``ccmeter reprice`` keeps each replaced cost here; a partial index for plan figures."""
    db.execute(
        """
        CREATE TABLE cost_history (
            id INTEGER PRIMARY KEY,
            call_uid TEXT NOT NULL,
            repriced_ts REAL NOT NULL,         -- when the cost was replaced (Unix seconds)
            old_cost_picousd INTEGER,          -- NULL = it was unpriced
            old_catalog_version TEXT,
            old_pricing_note TEXT,
            new_cost_picousd INTEGER,
            new_catalog_version TEXT
        )
        """
    )
    db.execute("CREATE INDEX cost_history_call ON cost_history (call_uid, repriced_ts)")
    # The status line and `watch` read the latest plan utilization; without this index that
    # is a scan of every row when no call ever carried plan headers.
    db.execute(
        "CREATE INDEX api_calls_plan ON api_calls (started_ts) "
        "WHERE plan_5h_utilization IS NOT NULL"
    )


def _m003_caps(db: sqlite_utils.Database) -> None:
    """Spending caps: in-flight reservations, once-per-window warnings, and 15-minute spend
    buckets kept by triggers so a cap check sums a few thousand buckets, not every row."""
    db.execute(
        """
        CREATE TABLE cap_reservations (
            call_uid TEXT PRIMARY KEY,
            created_ts REAL NOT NULL,
            estimate_picousd INTEGER NOT NULL DEFAULT 0,
            expires_ts REAL NOT NULL,          -- a process that died leaves these behind
            project TEXT,
            session_id TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE cap_warnings (
            cap_key TEXT NOT NULL,             -- e.g. 'global/daily', 'project:api/weekly'
            window_start REAL NOT NULL,
            threshold REAL NOT NULL,
            warned_ts REAL NOT NULL,
            PRIMARY KEY (cap_key, window_start, threshold)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE cap_spend (
            scope TEXT NOT NULL,               -- '' (all), 'p:' || project, 's:' || session_id
            bucket INTEGER NOT NULL,           -- CAST(started_ts / 900 AS INTEGER)
            cost_picousd INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (scope, bucket)
        ) WITHOUT ROWID
        """
    )
    for sql in _CAP_SPEND_TRIGGERS:
        db.execute(sql)
    for scope, where in (("''", "1"), ("'p:' || project", "project IS NOT NULL"),
                         ("'s:' || session_id", "session_id IS NOT NULL")):
        db.execute(
            f"INSERT INTO cap_spend (scope, bucket, cost_picousd) "
            f"SELECT {scope}, CAST(started_ts / 900 AS INTEGER), SUM(COALESCE(cost_picousd, 0)) "
            f"FROM api_calls WHERE {where} GROUP BY 1, 2"
        )


def _cap_spend_add(sign: str, rec: str) -> str:
    """Trigger body lines adding (``+``) or removing (``-``) one row's cost from its buckets."""
    bucket = f"CAST({rec}.started_ts / 900 AS INTEGER)"
    cost = f"{sign}COALESCE({rec}.cost_picousd, 0)"
    upsert = ("ON CONFLICT (scope, bucket) DO UPDATE SET "
              "cost_picousd = cost_picousd + excluded.cost_picousd;")
    return f"""
        INSERT INTO cap_spend (scope, bucket, cost_picousd) VALUES ('', {bucket}, {cost})
            {upsert}
        INSERT INTO cap_spend (scope, bucket, cost_picousd)
            SELECT 'p:' || {rec}.project, {bucket}, {cost} WHERE {rec}.project IS NOT NULL
            {upsert}
        INSERT INTO cap_spend (scope, bucket, cost_picousd)
            SELECT 's:' || {rec}.session_id, {bucket}, {cost} WHERE {rec}.session_id IS NOT NULL
            {upsert}"""


_CAP_SPEND_TRIGGERS = (
    f"""CREATE TRIGGER cap_spend_insert AFTER INSERT ON api_calls
        WHEN COALESCE(NEW.cost_picousd, 0) != 0
        BEGIN {_cap_spend_add("+", "NEW")}
        END""",
    f"""CREATE TRIGGER cap_spend_update
        AFTER UPDATE OF cost_picousd, started_ts, project, session_id ON api_calls
        WHEN COALESCE(OLD.cost_picousd, 0) != COALESCE(NEW.cost_picousd, 0)
            OR OLD.started_ts != NEW.started_ts
            OR OLD.project IS NOT NEW.project OR OLD.session_id IS NOT NEW.session_id
        BEGIN {_cap_spend_add("-", "OLD")} {_cap_spend_add("+", "NEW")}
        END""",
    f"""CREATE TRIGGER cap_spend_delete AFTER DELETE ON api_calls
        WHEN COALESCE(OLD.cost_picousd, 0) != 0
        BEGIN {_cap_spend_add("-", "OLD")}
        END""",
)


def _m004_report_index(db: sqlite_utils.Database) -> None:
    """A covering index whose leading columns match the report aggregate's GROUP BY.

    ``ccmeter report`` groups on (hourly UTC slot, project, model, speed, tier, geo[, session]);
    with every summed column in the index SQLite streams the aggregate in index order instead
    of reading the wide rows and sorting a million of them (1.5 s -> well under 1 s).
    """
    db.execute(
        """
        CREATE INDEX api_calls_rollup ON api_calls (
            CAST(started_ts / 3600 AS INTEGER), project, model, speed, service_tier,
            inference_geo, session_id, started_ts, input_tokens, cache_write_5m_tokens,
            cache_write_1h_tokens, cache_read_tokens, output_tokens, cost_picousd
        )
        """
    )


def _m005_fallback_from_model(db: sqlite_utils.Database) -> None:
    """The model an answer began with when a server-side fallback handed it to another one
    (a ``fallback`` content block); ``model`` is then the model that served and priced it,
    ``requested_model`` what the request asked for."""
    db.execute("ALTER TABLE api_calls ADD COLUMN fallback_from_model TEXT")


def _m006_calls_view_fallback(db: sqlite_utils.Database) -> None:
    """The ``calls`` view with ``fallback_from_model`` (added to ``api_calls`` by m005),
    appended last so that a query reading the view's columns by position still works."""
    db.execute("DROP VIEW IF EXISTS calls")
    db.execute(
        """
        CREATE VIEW calls AS
        SELECT
            call_uid, started_at, session_id, project, model, input_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
            cost_picousd / 1e12 AS cost_usd, cost_picousd, status,
            provider, endpoint, call_kind, agent_id, parent_agent_id, requested_model,
            stop_reason, error_type, http_status, request_id, message_id,
            ttfb_ms, duration_ms, web_search_requests, web_fetch_requests,
            service_tier, inference_geo, speed, cost_basis, catalog_version, pricing_note,
            auth_kind, client_name, client_version,
            plan_status, plan_5h_utilization, plan_7d_utilization,
            fallback_from_model
        FROM api_calls
        """
    )


def _m007_run_id(db: sqlite_utils.Database) -> None:
    """Which ``ccmeter run`` sent a call (NULL for calls from anything else), so that runs
    sharing one resident proxy each sum their own calls for their exit summary."""
    db.execute("ALTER TABLE api_calls ADD COLUMN run_id TEXT")
    db.execute("CREATE INDEX api_calls_run ON api_calls (run_id) WHERE run_id IS NOT NULL")


def _m008_transcripts(db: sqlite_utils.Database) -> None:
    """Calls imported from Claude Code's transcripts (``ccmeter import``), beside the wire's.

    ``transcript_calls`` holds one row per API call a transcript records (its numbers, ids,
    model, time and project: no text). ``transcript_files`` is the import's own bookkeeping
    (which file was read up to where). A call the proxy also metered counts once, from the
    wire: the view ``imported_calls`` is the transcript rows no wire row matches (by request
    id or message id, both indexed here), whichever was written first. The ``calls`` view
    gains those rows and a ``source`` column ('wire' or 'transcript'), appended last."""
    db.execute(
        """
        CREATE TABLE transcript_calls (
            call_key TEXT PRIMARY KEY,         -- the message id, else the request id
            started_at TEXT NOT NULL,          -- ISO 8601 UTC: the earliest line's timestamp
            started_ts REAL NOT NULL,
            provider TEXT NOT NULL DEFAULT 'anthropic',
            session_id TEXT,
            project TEXT,                      -- the cwd's git repository folder name
            agent_id TEXT,
            call_kind TEXT,                    -- 'main', or 'subagent' for sidechain lines
            model TEXT,
            request_id TEXT,
            message_id TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_5m_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_1h_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            thinking_tokens INTEGER,
            web_search_requests INTEGER NOT NULL DEFAULT 0,
            web_fetch_requests INTEGER NOT NULL DEFAULT 0,
            service_tier TEXT,
            inference_geo TEXT,
            speed TEXT,
            hops_json TEXT,
            usage_problems TEXT,               -- counts that were not counts: unpriced
            stop_reason TEXT,
            cost_picousd INTEGER,              -- exact cost in 1e-12 USD; NULL = unpriced
            catalog_version TEXT,
            pricing_note TEXT,
            updated_ts REAL NOT NULL
        )
        """
    )
    # a message id is found through call_key (the message id whenever a line has one)
    db.execute("CREATE INDEX transcript_calls_request ON transcript_calls (request_id) "
               "WHERE request_id IS NOT NULL")
    db.execute("CREATE INDEX transcript_calls_session ON transcript_calls (session_id, started_ts)")
    db.execute("CREATE INDEX transcript_calls_started_ts ON transcript_calls (started_ts)")
    db.execute("CREATE INDEX api_calls_request ON api_calls (request_id) "
               "WHERE request_id IS NOT NULL")
    db.execute("CREATE INDEX api_calls_message ON api_calls (message_id) "
               "WHERE message_id IS NOT NULL")
    db.execute(
        """
        CREATE TABLE transcript_files (
            path TEXT PRIMARY KEY,
            device INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            size INTEGER NOT NULL,             -- the file's size when last read
            mtime_ns INTEGER NOT NULL,
            offset INTEGER NOT NULL,           -- read up to here (the end of a whole line)
            head_sha256 TEXT NOT NULL,         -- of the first min(offset, 4096) bytes
            lines INTEGER NOT NULL DEFAULT 0,  -- whole lines read so far
            imported_ts REAL NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE VIEW imported_calls AS
        SELECT * FROM transcript_calls t
        WHERE NOT EXISTS (SELECT 1 FROM api_calls w WHERE w.request_id = t.request_id)
            AND NOT EXISTS (SELECT 1 FROM api_calls w WHERE w.message_id = t.message_id)
        """
    )
    db.execute("DROP VIEW IF EXISTS calls")
    db.execute(
        """
        CREATE VIEW calls AS
        SELECT
            call_uid, started_at, session_id, project, model, input_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
            cost_picousd / 1e12 AS cost_usd, cost_picousd, status,
            provider, endpoint, call_kind, agent_id, parent_agent_id, requested_model,
            stop_reason, error_type, http_status, request_id, message_id,
            ttfb_ms, duration_ms, web_search_requests, web_fetch_requests,
            service_tier, inference_geo, speed, cost_basis, catalog_version, pricing_note,
            auth_kind, client_name, client_version,
            plan_status, plan_5h_utilization, plan_7d_utilization,
            fallback_from_model, 'wire' AS source
        FROM api_calls
        UNION ALL
        SELECT
            'transcript:' || call_key, started_at, session_id, project, model, input_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
            cost_picousd / 1e12, cost_picousd, 'ok',
            provider, 'messages', call_kind, agent_id, NULL, NULL,
            stop_reason, NULL, NULL, request_id, message_id,
            NULL, NULL, web_search_requests, web_fetch_requests,
            service_tier, inference_geo, speed, NULL, catalog_version, pricing_note,
            NULL, NULL, NULL,
            NULL, NULL, NULL,
            NULL, 'transcript'
        FROM imported_calls
        """
    )
def _m009_cache_keys(db: sqlite_utils.Database) -> None:
    """What each call's prompt cache keyed on, as fingerprints (no text), and the loop
    guard's count: ``ccmeter waste`` prices every cache re-write and unread write from them.

    - ``cache_key_json``: fingerprints of the tools, the system prompt, and the prefix up to
      each ``cache_control`` breakpoint with its TTL (see ccmeter.cachekeys);
    - ``cache_change``: what changed against the previous call of the same conversation as
      the proxy saw it (``tools``, ``system``, ``model``, ``message:N``; NULL: nothing);
    - ``tool_call_fp``: the newest tool call the request reports back (name:fingerprint);
    - ``tool_repeats``: how many times the session had made that tool call.
    """
    for column, kind in (("cache_key_json", "TEXT"), ("cache_change", "TEXT"),
                         ("tool_call_fp", "TEXT"), ("tool_repeats", "INTEGER")):
        db.execute(f"ALTER TABLE api_calls ADD COLUMN {column} {kind}")


def _m010_forecast(db: sqlite_utils.Database) -> None:
    """Each call's input-side cost as forecast before it was sent (see ccmeter.forecast):
    ``forecast_picousd`` (NULL: not forecast, or the model is not priced) and
    ``forecast_note``, the one line on what drove it (no prompt text). The ``calls`` view
    gains ``forecast_usd``, ``forecast_picousd`` and ``forecast_note``, appended last (NULL
    for imported transcript calls: nothing was forecast for them)."""
    db.execute("ALTER TABLE api_calls ADD COLUMN forecast_picousd INTEGER")
    db.execute("ALTER TABLE api_calls ADD COLUMN forecast_note TEXT")
    db.execute("DROP VIEW IF EXISTS calls")
    db.execute(
        """
        CREATE VIEW calls AS
        SELECT
            call_uid, started_at, session_id, project, model, input_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
            cost_picousd / 1e12 AS cost_usd, cost_picousd, status,
            provider, endpoint, call_kind, agent_id, parent_agent_id, requested_model,
            stop_reason, error_type, http_status, request_id, message_id,
            ttfb_ms, duration_ms, web_search_requests, web_fetch_requests,
            service_tier, inference_geo, speed, cost_basis, catalog_version, pricing_note,
            auth_kind, client_name, client_version,
            plan_status, plan_5h_utilization, plan_7d_utilization,
            fallback_from_model, 'wire' AS source,
            forecast_picousd / 1e12 AS forecast_usd, forecast_picousd, forecast_note
        FROM api_calls
        UNION ALL
        SELECT
            'transcript:' || call_key, started_at, session_id, project, model, input_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, output_tokens,
            cost_picousd / 1e12, cost_picousd, 'ok',
            provider, 'messages', call_kind, agent_id, NULL, NULL,
            stop_reason, NULL, NULL, request_id, message_id,
            NULL, NULL, web_search_requests, web_fetch_requests,
            service_tier, inference_geo, speed, NULL, catalog_version, pricing_note,
            NULL, NULL, NULL,
            NULL, NULL, NULL,
            NULL, 'transcript',
            NULL, NULL, NULL
        FROM imported_calls
        """
    )


def _m011_long_prompt_index(db: sqlite_utils.Database) -> None:
    """A partial covering index of the long prompts (over 100,000 prompt tokens, the lowest
    long-context threshold), in the report's group order: the report's long-prompt query
    (``store.reportsql.LONG_CONTEXT_SQL``) reads these few rows instead of scanning every
    call's index entry (a year of 1M calls: 0.18 s -> 0.03 s). Its WHERE must stay the same
    text as ``reportsql.LONG_PROMPT_FLOOR_SQL`` for SQLite to use it."""
    db.execute(
        """
        CREATE INDEX api_calls_long_prompts ON api_calls (
            CAST(started_ts / 3600 AS INTEGER), project, model, speed, service_tier,
            inference_geo, session_id, provider, started_ts, input_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens
        ) WHERE (input_tokens + cache_write_5m_tokens + cache_write_1h_tokens
                 + cache_read_tokens) > 100000
        """
    )


def _m012_call_rollup(db: sqlite_utils.Database) -> None:
    """``call_rollup``: the calls of both sources summed per UTC quarter-hour and report
    group, recomputed by triggers on every change (:mod:`ccmeter.store.rollup`), so a report
    over a year sums ~100k rows, not a million (the dashboard's one-second target)."""
    from ccmeter.store import rollup

    rollup.create(db)


def _m013_waste_sessions(db: sqlite_utils.Database) -> None:
    """What lets ``ccmeter waste`` and the dashboard's waste page reuse the accounting of a
    session that has not changed (see ccmeter.wastememo), kept by triggers, so no writer
    has to remember it:

    - ``waste_sessions``: per session, a ``version`` that every insert, update or delete
      of one of its rows sets to a new random 64-bit number (never a count: a database
      restored from an older copy of itself would count up to versions a memo has seen),
      and the span of its rows' ``started_ts`` (only ever widened: a superset of the true
      span);
    - ``waste_epoch``: one random token made with the table: a memo of another database
      file (or of this one re-created) never matches.

    Self-contained (numbered 13: 12 is the report rollup); idempotent (IF NOT EXISTS)."""
    db.execute("""CREATE TABLE IF NOT EXISTS waste_sessions (
        session_id TEXT PRIMARY KEY, version INTEGER NOT NULL,
        first_ts REAL NOT NULL, last_ts REAL NOT NULL) WITHOUT ROWID""")
    db.execute("CREATE TABLE IF NOT EXISTS waste_epoch (epoch TEXT NOT NULL)")
    db.execute("INSERT INTO waste_epoch (epoch) SELECT lower(hex(randomblob(16))) "
               "WHERE NOT EXISTS (SELECT 1 FROM waste_epoch)")
    db.execute("""INSERT OR IGNORE INTO waste_sessions (session_id, version, first_ts, last_ts)
        SELECT session_id, random(), MIN(started_ts), MAX(started_ts) FROM api_calls
        WHERE session_id IS NOT NULL GROUP BY session_id""")
    touch = """INSERT INTO waste_sessions (session_id, version, first_ts, last_ts)
            SELECT {row}.session_id, random(), {row}.started_ts, {row}.started_ts
            WHERE {row}.session_id IS NOT NULL
            ON CONFLICT (session_id) DO UPDATE SET version = excluded.version,
                first_ts = MIN(first_ts, excluded.first_ts),
                last_ts = MAX(last_ts, excluded.last_ts);"""
    for name, event, rows in (("insert", "INSERT", ("NEW",)),
                              ("update", "UPDATE", ("OLD", "NEW")),
                              ("delete", "DELETE", ("OLD",))):
        body = "\n".join(touch.format(row=row) for row in rows)
        when = " OR ".join(f"{row}.session_id IS NOT NULL" for row in rows)
        db.execute(f"""CREATE TRIGGER IF NOT EXISTS api_calls_waste_{name}
            AFTER {event} ON api_calls WHEN {when}
            BEGIN {body} END""")


#: Ordered migrations. A shipped migration is never edited; add a new one at the end.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_calls,
    _m002_cost_history,
    _m003_caps,
    _m004_report_index,
    _m005_fallback_from_model,
    _m006_calls_view_fallback,
    _m007_run_id,
    _m008_transcripts,
    _m009_cache_keys,
    _m010_forecast,
    _m011_long_prompt_index,
    _m012_call_rollup,
    _m013_waste_sessions,
]
