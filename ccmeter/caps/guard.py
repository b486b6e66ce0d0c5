"""The check before a call: every applicable cap summed and, with an estimate, a reservation
made, in one statement through named SQL functions of :mod:`ccmeter.store`.

The store is imported when a :class:`Guard` is made (or :func:`cap_statuses` runs), so
importing this module pulls in no database code.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccmeter.caps.messages import (
    desktop_notify,
    error_refusal_message,
    refusal_message,
    warning_message,
)
from ccmeter.caps.policy import (
    CapStatus,
    Check,
    Policy,
    checks_for,
    most_constraining,
    parse_policy,
    status_of,
)
from ccmeter.caps.windows import ROLLING_SPAN_S
from ccmeter.record import Record

if TYPE_CHECKING:
    import logging


def _log() -> logging.Logger:
    """This module's logger; logging is imported on first use (`ccmeter caps` never logs)."""
    import logging

    return logging.getLogger(__name__)


class Decision(Record):
    """The answer for one request. ``headroom`` maps a check to what the call may still
    spend before that cap is reached (hard mode cuts the stream there)."""

    allowed: bool
    message: str | None = None
    statuses: Sequence[CapStatus] = ()
    headroom: Sequence[tuple[CapStatus, int]] = ()
    reserved: bool = False
    reason: str = "ok"  # ok | paused | cap | db_error | off

class _Plan(Record):
    """A Guard's checks for one (policy, project, session), valid in [valid_from, until)."""

    policy: Policy
    checks: tuple[Check, ...]
    query: Any  # store.SpendQuery, summing every check's window
    limits: tuple[int, ...]
    valid_from: float
    until: float

class Guard:
    """Check-and-reserve for one process, one check at a time: on the proxy's event loop
    when the check need not wait (a connection that never waits for a lock), else on a
    single-worker executor (a connection that waits up to ``CAP_CHECK_WAIT_MS``)."""

    def __init__(self, db_path: Path | str, notify: Any = desktop_notify) -> None:
        import threading  # here: `ccmeter caps` imports this module and makes no Guard

        from ccmeter import store

        self._store = store  # imported once here, not in each check: it is on the hot path
        self.db_path = Path(db_path)
        self._dbs: dict[bool, Any] = {}  # wait? -> connection
        self._lock = threading.Lock()
        self._warned: set[tuple[str, float, float]] = set()
        self._notify = notify
        self._plans: dict[tuple[int, str | None, str | None], _Plan] = {}

    def _conn(self, wait: bool = True) -> Any:
        store = self._store
        db = self._dbs.get(wait)
        if db is None:
            db = self._dbs[wait] = store.connect_cap_checker(
                self.db_path, wait_ms=store.CAP_CHECK_WAIT_MS if wait else 0)
        return db

    def close(self) -> None:
        with self._lock:
            self._drop_conn()

    def check(
        self, policy: Policy, *, call_uid: str, project: str | None, session_id: str | None,
        model: str | None, now: float | None = None, wait: bool = True,
    ) -> Decision | None:
        """Check every applicable cap and, when the policy has an estimate for the model,
        reserve for the call (see :func:`ccmeter.store.cap_check_and_reserve`).

        With ``wait=False`` (the proxy's event loop) it returns None instead of waiting for
        this guard's other user or for another process's write lock.
        """
        store = self._store
        now = time.time() if now is None else now
        if not policy.enabled:
            return Decision(True, reason="off")
        if policy.paused(now):
            return Decision(True, reason="paused")
        plan = self._plan(policy, now, project, session_id)
        checks = plan.checks
        if not checks:
            return Decision(True, reason="off")
        estimate = policy.estimate_for(model)
        reservation = store.Reservation(call_uid, now, estimate, now + policy.reservation_ttl_s,
                                        project, session_id) if estimate > 0 else None
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            try:
                conn = self._conn(wait)
                spents, allowed = store.cap_check_and_reserve(
                    conn, plan.query, now,
                    lambda spent: all(s < lim for s, lim in zip(spent, plan.limits, strict=True)),
                    reservation, wait=wait,
                )
            except store.WouldBlock:
                return None
            except Exception as exc:
                self._drop_conn()
                return self._on_error(policy, exc)
            statuses = [_measured(conn, policy, c, s, now)
                        for c, s in zip(checks, spents, strict=True)]
            if not allowed:
                worst = most_constraining([s for s in statuses if s.reached])
                assert worst is not None
                message = refusal_message(worst, now, policy.tz)
                _log().warning("ccmeter: refused a call: %s", message.removeprefix("ccmeter: "))
                return Decision(False, message, statuses, reason="cap")
            self._warn(policy, statuses, now, wait)
        finally:
            self._lock.release()
        headroom = [(s, s.limit_picousd - s.spent_picousd) for s in statuses]
        return Decision(True, None, statuses, headroom, reserved=True)

    def _plan(self, policy: Policy, now: float, project: str | None,
              session_id: str | None) -> _Plan:
        """:func:`checks_for` and the query that sums their windows, worked out once per
        window: calendar bounds hold until the window ends (rolling ones move every call)."""
        store = self._store
        key = (id(policy), project, session_id)
        plan = self._plans.get(key)
        if plan is not None and plan.policy is policy and plan.valid_from <= now < plan.until:
            return plan
        checks = tuple(checks_for(policy, now, project=project, session_id=session_id))
        query = store.spend_query([store.SpendWindow(c.start, c.project, c.session_id)
                                   for c in checks], reservations=policy.reserves)
        plan = _Plan(policy, checks, query,
                     tuple(c.cap.limit_picousd - c.cap.others_picousd for c in checks),
                     max((c.start for c in checks), default=0.0),
                     min((c.end for c in checks if c.end is not None), default=math.inf))
        if policy.window == "calendar" or all(c.cap.name == "total" for c in checks):
            if len(self._plans) >= 1024:  # per-session caps: one plan per session
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _drop_conn(self) -> None:
        dbs, self._dbs = self._dbs, {}
        for db in dbs.values():
            with contextlib.suppress(Exception):
                db.conn.close()

    def _on_error(self, policy: Policy, exc: Exception) -> Decision:
        reason = f"database error: {type(exc).__name__}: {exc}"[:200]
        if policy.on_error == "block":
            _log().error("ccmeter: cannot check caps (%s); refusing (on_error = block)", reason)
            return Decision(False, error_refusal_message(reason), reason="db_error")
        _log().error("ccmeter: cannot check caps (%s); allowing (on_error = allow)", reason)
        return Decision(True, reason="db_error")

    def _warn(self, policy: Policy, statuses: Sequence[CapStatus], now: float,
              wait: bool = True) -> None:
        """Warn once per cap, window and threshold, across processes (``cap_warnings``).
        On the event loop (``wait=False``) a locked database is not waited for: the warning
        is given, at the risk of another process giving it too."""
        store = self._store
        for status in statuses:
            passed = [t for t in policy.warn_at if status.fraction >= t]
            if not passed:
                continue
            threshold = max(passed)
            window_key = (status.window_start if status.window != "rolling"
                          else float(int(now // ROLLING_SPAN_S[status.name])))
            memo = (f"{status.scope}/{status.name}", window_key, threshold)
            if memo in self._warned:
                continue
            self._warned.add(memo)
            try:
                first = store.cap_mark_warned(self._conn(wait), memo[0], window_key, threshold,
                                              now, wait=wait)
            except Exception as exc:
                _log().warning("ccmeter: could not record a cap warning (%s); giving it anyway",
                               exc)
                first = True
            if first:
                text = warning_message(status, threshold, now, policy.tz)
                _log().warning("ccmeter: %s", text)
                if policy.notify:
                    self._notify(text)

def _measured(conn: Any, policy: Policy, check: Check, spent: int, now: float) -> CapStatus:
    """``status_of``, with a rolling cap's reset time looked up when it is reached: the
    moment enough of the oldest spend has left the window."""
    resets_at = None
    if check.end is None and check.cap.name != "total" and spent >= check.cap.limit_picousd:
        from ccmeter import store

        excess = spent - check.cap.limit_picousd + 1
        oldest = store.cap_rolling_release_ts(
            conn, store.SpendWindow(check.start, check.project, check.session_id), excess)
        if oldest is not None:
            resets_at = max(now, oldest + ROLLING_SPAN_S[check.cap.name])
    return status_of(check, spent, policy, resets_at)

def cap_statuses(
    db: Any, cfg: Mapping[str, Any], now: float | None = None, *,
    project: str | None = None, session_id: str | None = None,
) -> list[CapStatus]:
    """Every configured cap's status (for ``ccmeter caps``, ``watch`` and the status line).

    ``db`` is a store connection or a database path; ``cfg`` the loaded config (its
    ``[caps]`` table is read). Project caps of every project are listed; per-session caps
    only for ``session_id``. Spend includes in-flight calls' reservations.
    """
    from ccmeter import store
    from ccmeter.tiers import with_cached_view

    now = time.time() if now is None else now
    policy = with_cached_view(parse_policy(cfg), cfg, now)  # team budgets, as last seen
    conn = store.connect(db) if isinstance(db, str | Path) else db
    try:
        out = []
        for check in checks_for(policy, now, project=project, session_id=session_id,
                                all_projects=True):
            spent = store.cap_spent(conn, store.SpendWindow(check.start, check.project,
                                                            check.session_id), now)
            out.append(_measured(conn, policy, check, spent, now))
        return out
    finally:
        if conn is not db:
            conn.conn.close()
