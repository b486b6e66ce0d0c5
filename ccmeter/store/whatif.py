"""The read behind what-if repricing (``ccmeter report --as-model`` / ``--cache-ttl``): every
call a report covers, one row each, with what pricing it again needs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ccmeter.store.db import query

#: The calls of one source's ``{table}`` matching a report's ``{where}`` (its filters), with
#: the same hourly ``{slot}`` the report's aggregate groups on. Read in pages of
#: ``:limit`` rows after ``(:after_ts, :after_key)``, the key being ``{key}``.
WHATIF_CALLS_SQL = """
SELECT {key} AS row_key, CAST(started_ts / {slot} AS INTEGER) AS slot, started_ts,
    project, session_id, model AS model_name, provider, input_tokens, cache_write_5m_tokens,
    cache_write_1h_tokens, cache_read_tokens, output_tokens, web_search_requests,
    web_fetch_requests, service_tier, inference_geo, speed, hops_json, cost_picousd,
    pricing_note
FROM {table}
{where}{joiner}(started_ts > :after_ts OR (started_ts = :after_ts AND {key} > :after_key))
ORDER BY started_ts, {key}
LIMIT :limit
"""
#: the tables the report reads, and each one's key
_KEYS = {"api_calls": "call_uid", "imported_calls": "call_key"}


def whatif_calls(db: Any, table: str, where: str, params: dict[str, Any], slot: int,
                 page: int = 5000) -> Iterator[dict[str, Any]]:
    """Each call of ``table`` matching ``where``/``params`` (a report's filters), oldest first."""
    key = _KEYS.get(table)
    if key is None:
        raise ValueError(f"not a calls table: {table!r}")
    sql = WHATIF_CALLS_SQL.format(key=key, slot=int(slot), table=table, where=where,
                                  joiner=" AND " if where else "WHERE ")
    after_ts, after_key = float("-inf"), ""
    while True:
        rows = query(db, sql, {**params, "after_ts": after_ts, "after_key": after_key,
                               "limit": page})
        yield from rows
        if len(rows) < page:
            return
        after_ts, after_key = rows[-1]["started_ts"], rows[-1]["row_key"]
