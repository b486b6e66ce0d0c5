"""What a metering proxy does as it starts and as it stops, around its calls.

- :func:`warm_start`: before the first call, what the database already knows — the calls
  of proxies that died mid-call (their journals folded in), the plan windows the plan caps
  read, and what is cached as earlier proxies saw it written (the forecaster's seed);
- :func:`finalize_in_flight`: a clean stop (SIGTERM/SIGINT, ``ccmeter run`` ending) writes
  the final row of every call still in flight, with what is known.

Glue for :class:`ccmeter.addon.Meter`; SQL stays in :mod:`ccmeter.store`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ccmeter import config, store
from ccmeter.journal import Journal, fold_dead, journal_dir

log = logging.getLogger(__name__)


def warm_start(where: config.Paths, catalog: Any, enforcer: Any, forecaster: Any) -> Journal:
    """Start this process's call journal, after folding in the journals of proxies that
    died mid-call (their billed calls the database does not have yet); then read the
    newest plan windows (``enforcer.plan``) and seed ``forecaster`` from the last hour."""
    directory = journal_dir(where)
    journal = Journal(directory)
    try:
        # Bounded: a database another process keeps locked delays the start by 2 s at
        # most; the journals then wait for the next start (or ``ccmeter report``).
        db = store.connect(where.db_file, wait_ms=2000, lock_attempts=1)
        try:
            fold_dead(directory, db, catalog, own=journal, attempts=1)
            newest = store.newest_plan_row(db)  # the plan caps' reading until an answer
            if newest is not None:
                enforcer.plan.saw(newest)
            now = time.time()  # what is cached, as earlier proxies saw it written
            forecaster.seed(store.cache_calls(db, now - 3600, now + 1), now)
        finally:
            db.conn.close()
    except Exception as exc:
        log.warning("ccmeter: the journals of stopped proxies were not folded in (%s); "
                    "the next start tries again", exc)
    return journal


def finalize_in_flight(calls: Mapping[str, Any], flows: Mapping[str, Any],
                       record: Callable[..., None], stream_type: type[Any]) -> None:
    """The final row of every call in ``calls`` (by flow id; ``flows`` the flows still
    known), through ``record``; a stream still open (``stream_type``) is drained first."""
    for uid, call in calls.items():
        try:
            flow = flows.get(uid)
            if flow is not None and flow.response is not None and isinstance(
                    flow.response.stream, stream_type):
                flow.response.stream.drain()
            if call.blocked:
                record(call, status="blocked", flow=flow, final=True)
                continue
            state = call.state
            if not state.error_type:
                state.error_type = "proxy_stopped"
                state.error_message = "the proxy stopped before the answer ended"
            if state.usage is None and (flow is None or flow.request.timestamp_end):
                # Sent, and maybe billed, but no usage came: the cost is unknown, not $0.
                state.unread("message_start", "not received before the proxy stopped")
            record(call, status="incomplete", flow=flow, final=True)
        except Exception:
            log.exception("ccmeter: finalizing a call in flight at stop failed")
