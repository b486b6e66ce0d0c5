"""Spending-cap enforcement in the proxy: the glue between mitmproxy's flows and ``caps``.

The policy (re-read when config.toml changes), the check-and-reserve before a call goes
upstream (on the event loop when it cannot wait, else on one caps thread), the refusal a
client sees, and hard mode's cut of the upstream connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http

from ccmeter import config, loops, pricing, providers, store
from ccmeter.callrow import Call
from ccmeter.caps.callcaps import PlanSeen, per_call_refusal
from ccmeter.caps.guard import Decision, Guard
from ccmeter.caps.hardmode import RunningCost, StreamLimit
from ccmeter.caps.messages import error_refusal_message, utc_iso
from ccmeter.caps.policy import Policy, parse_policy

log = logging.getLogger(__name__)

#: While metering is failing, one call in this many seconds waits (within the cap check's
#: bound) for the writer to try the database again; the others follow ``on_error`` at once.
RETRY_EVERY_S = 0.25
#: How often the caps thread looks again at a database another process holds locked.
LOCK_POLL_S = 0.005
#: A team view is used this many refresh intervals after the share stopped answering;
#: then the laptop falls back to its personal caps (or, with on_error = block, refuses).
STALE_REFRESHES = 3


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def refusal_response(message: str, provider: str = providers.ANTHROPIC) -> http.Response:
    """The proxy's own answer to a call a spending cap refuses, in the provider's shape.

    Claude Code shows a 429 ``rate_limit_error`` with ``x-should-retry: false`` at once as
    ``API Error: Request rejected (429) · <message>`` and does not retry. Bedrock gets a
    ``ThrottlingException`` (see :func:`ccmeter.providers.refusal`).
    """
    answer = providers.refusal(provider, message)
    return http.Response.make(answer.status, answer.body, answer.headers)


def close_upstream(flow: http.HTTPFlow) -> bool:
    """Close a flow's server connection while its response streams (hard mode's cut).

    mitmproxy has no public way to kill a flow in transit (mitmproxy#4711), so this reaches
    into the proxyserver addon's connection handler (same in 11.0 and 12.x).
    """
    try:
        handler = ctx.master.addons.get("proxyserver").connections.get(flow.client_conn.id)
        if handler is not None and flow.server_conn in handler.transports:
            handler.close_connection(flow.server_conn)
            return True
    except Exception:
        log.exception("ccmeter: could not close the upstream connection of a cut stream")
    return False


class Enforcer:
    """The spending caps of one running proxy."""

    def __init__(self) -> None:
        self.policy = Policy()
        self.guard: Guard | None = None
        self._config_file: Path | None = None
        self._config_stamp: tuple[int, int] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pause_logged: float | None = None
        self._on_change: Callable[[dict[str, Any]], str | None] | None = None
        self._on_problem: Callable[[str | None], None] | None = None
        self._unknown_told: str | None = None
        #: Why the config last read could not be applied (None: it was), for the status file.
        self.config_problem: str | None = None
        self._db_file: Path | None = None
        self._generation = 0
        self._retried = 0.0
        self._unmetered_logged: tuple[str, str] | None = None
        #: Told each paused session's id as its calls come (the loop guard forgets its
        #: repeats: after the pause it counts anew).
        self.on_session_paused: Callable[[str], None] | None = None
        self._session_pause_logged: set[tuple[str, float]] = set()
        # --- team budgets (ccmeter.tiers): the [caps] policy plus the share's tiers
        self._base_policy = Policy()
        self._team: Any = None  # a ccmeter.teamsync.TeamSync once in a team
        self._team_view: dict[str, Any] | None = None
        self._team_refresh_s = 60.0
        #: Why the team share cannot be read now (None: it can, or no team), for doctor.
        self.team_problem: str | None = None
        self.on_team_problem: Callable[[str | None], None] | None = None
        self._tier_refusal: str | None = None
        self._compose_lock = threading.Lock()
        #: The plan windows as the newest answers reported them (the plan caps' reading).
        self.plan = PlanSeen()
        self._unforecast_told: set[str | None] = set()

    def open(self, db_file: Path) -> None:
        self.guard = Guard(db_file)
        self._db_file = db_file

    def watch(self, config_file: Path,
              on_change: Callable[[dict[str, Any]], str | None] | None = None,
              on_problem: Callable[[str | None], None] | None = None) -> None:
        """Take the caps from ``config_file`` (now, and whenever it changes); ``on_change``
        gets the whole config each time it is read (the meter re-reads ``[prices]``) and
        returns why some of it was not applied, if so; ``on_problem`` hears what was not
        applied (None once everything is), for the status file that ``doctor`` reads."""
        self._config_file, self._config_stamp = config_file, None
        self._on_change = on_change
        self._on_problem = on_problem
        self.reload()

    def close(self) -> None:
        if self._team is not None:
            self._team.close()
            self._team = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.guard is not None:
            self.guard.close()
            self.guard = None

    @property
    def needs_request_body(self) -> bool:
        """Only per-project, per-session and per-model cap rules, hard mode, the loop cap
        and the per-call cap (the forecast) read the request's contents before it is
        forwarded; global caps and plan caps need nothing."""
        policy = self.policy
        return ((policy.enabled or policy.forecasts_first) and policy.needs_request_details
                ) or policy.loop is not None

    def reload(self) -> None:
        """Re-read ``[caps]`` when config.toml changed (one stat per request), so that
        ``ccmeter caps set`` takes effect on running proxies."""
        if self._config_file is None:
            return
        try:
            st = self._config_file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        if stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        problems: list[str] = []
        try:
            self._apply(problems)
        finally:
            problem = "; ".join(problems) or None
            if problem != self.config_problem and self._on_problem is not None:
                self._on_problem(problem)
            self.config_problem = problem

    def _apply(self, problems: list[str]) -> None:
        assert self._config_file is not None
        where = config.Paths(self._config_file.parent, self._config_file.parent)
        try:
            cfg = config.load_config(where, quiet=True)
        except config.CCMeterError as exc:
            log.error("ccmeter: config not applied, keeping the previous caps and prices: %s",
                      exc)
            problems.append(str(exc))
            return
        unknown = config.unknown_keys_text(config.unknown_keys(cfg), self._config_file)
        if unknown and unknown != self._unknown_told:
            log.warning("ccmeter: %s", unknown)
        self._unknown_told = unknown
        if self._on_change is not None:
            problem = self._on_change(cfg)
            if problem:
                problems.append(problem)
        try:
            policy = parse_policy(cfg)
        except config.CCMeterError as exc:
            log.error("ccmeter: [caps] config not applied, keeping the previous caps: %s", exc)
            problems.append(f"[caps]: {exc} (the previous caps stay)")
            return
        if policy != self._base_policy:
            others = [*(["per-call"] if policy.forecasts_first else []),
                      *(f"plan {name} {limit:.0%}" for name, limit in policy.plan_caps()),
                      *([f"loop {policy.loop}"] if policy.loop else [])]
            log.info("ccmeter: caps: %d spend cap(s)%s, mode %s, window %s%s",
                     len(policy.caps), f" + {', '.join(others)}" if others else "",
                     policy.mode, policy.window,
                     f", paused until {utc_iso(policy.paused_until)}"
                     if policy.paused(time.time()) and policy.paused_until else "")
        self._base_policy = policy
        self._team_config(cfg, problems)
        self._compose()

    # --- team budgets ----------------------------------------------------------------------

    def _team_config(self, cfg: dict[str, Any], problems: list[str]) -> None:
        """Start, change or stop the team share thread as ``[share]`` says."""
        section = cfg.get("share")
        if self._team is None and not (isinstance(section, dict) and section.get("team")):
            return  # no team: nothing of the share is imported
        from ccmeter.teamsync import TeamSync, sync_settings

        try:
            settings = sync_settings(cfg)
        except config.CCMeterError as exc:
            problems.append(f"[share]: {exc}")
            return
        if settings is None and self._team is None:
            return
        if self._team is None:
            assert self._config_file is not None and self._db_file is not None
            from ccmeter import tiers

            paths = config.Paths(self._config_file.parent, self._db_file.parent)
            s = settings.settings if settings is not None else None
            if s is not None:  # the last view, until the thread makes a new one
                self._team_view = tiers.load_view(paths.data_dir, share=str(s.share),
                                                  team=s.team, group=s.group)
            self._team = TeamSync(paths, self._on_team_view)
        if settings is not None:
            self._team_refresh_s = settings.refresh_s
        self._team.configure(settings)

    def _on_team_view(self, view: dict[str, Any] | None, problem: str | None) -> None:
        """From the team thread: a new view of the others' spend, or why there is none."""
        if view is not None or problem is None:
            self._team_view = view
        if problem != self.team_problem and self.on_team_problem is not None:
            self.on_team_problem(problem)
        self.team_problem = problem
        self._compose()

    def _compose(self) -> None:
        """The policy in force: ``[caps]`` plus the team budgets of the current view. A view
        older than STALE_REFRESHES refreshes while the share fails is dropped: personal
        caps only (on_error = allow) or every call refused (on_error = block)."""
        with self._compose_lock:  # the team thread and the config reload both compose
            self._compose_locked()

    def _compose_locked(self) -> None:
        base, view, now = self._base_policy, self._team_view, time.time()
        caps: tuple = ()
        refusal = None
        if view is not None and self._team is not None:
            age = now - float(view.get("refreshed_at", 0))
            if self.team_problem is None or age < STALE_REFRESHES * self._team_refresh_s:
                from ccmeter import tiers

                caps = tiers.tier_caps(view, now, base.tz)
        if (not caps and self.team_problem and self._team is not None
                and base.on_error == "block"):
            refusal = (f"ccmeter: team budgets cannot be checked ({self.team_problem}) "
                       "and caps.on_error is \"block\". Fix the share, or allow calls "
                       "meanwhile with: ccmeter caps set --on-error allow")
        self._tier_refusal = refusal
        self.policy = base._replace(caps=base.caps + caps) if caps else base

    async def enforce(self, flow: http.HTTPFlow, call: Call, *,
                      writer: store.CallWriter | None, catalog: pricing.Catalog) -> bool:
        """Refuse the call here if a cap is reached; else reserve for it (off the loop).
        True when it was refused with its whole body in: the caller records it now."""
        policy = self.policy
        if self._session_paused(policy, call):
            return False
        seen = call.loop_seen
        if (policy.loop is not None and seen is not None and seen.repeats >= policy.loop
                and not policy.paused(time.time())):
            message = loops.refusal_message(seen, policy.loop)
            log.warning("ccmeter: refused a call: %s", message)
            return self.refuse(flow, call, message, error_type="loop")
        if self._tier_refusal is not None and not policy.paused(time.time()):
            return self.refuse(flow, call, self._tier_refusal, error_type="db_error")
        if not policy.paused(time.time()):
            refusal = self.plan.refusal(policy, time.time()) or per_call_refusal(
                policy, project=call.project, session_id=call.attribution.session_id,
                forecast_picousd=call.columns.get("forecast_picousd"),
                note=call.columns.get("forecast_note"))
            if refusal is not None:
                log.warning("ccmeter: refused a call: %s", refusal)
                return self.refuse(flow, call, refusal)
            self._unforecast(policy, call)
        if not policy.enabled or self.guard is None:
            return False
        if policy.paused(time.time()):
            if self._pause_logged != policy.paused_until:
                self._pause_logged = policy.paused_until
                log.warning("ccmeter: caps paused until %s; not enforcing",
                            utc_iso(policy.paused_until or 0))
            return False
        if writer is not None and writer.generation != self._generation:
            self._generation = writer.generation  # the file was made anew: so are the checks
            if self._db_file is not None and writer.generation > 1:
                self.guard = Guard(self._db_file)
        guard = self.guard
        assert guard is not None
        deadline = time.monotonic() + store.CAP_CHECK_WAIT_MS / 1000
        decision = None
        if writer is not None and writer.failing and (
                time.monotonic() - self._retried < RETRY_EVERY_S):
            # metering is off and was tried moments ago: on_error decides, without waiting
            decision = self._unmetered(policy, writer.failing)
        elif writer is None or (writer.idle and not writer.failing):
            # Usually the check is a ~0.1 ms transaction: do it right here, unless it would
            # wait for a lock (another proxy writing) — then it moves off the event loop.
            decision = guard.check(policy, call_uid=call.uid, project=call.project,
                                   session_id=call.attribution.session_id,
                                   model=call.attribution.requested_model, wait=False)
        if decision is None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="ccmeter-caps")
            decision = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._check, policy, call, writer, guard, deadline)
        if not decision.allowed:
            return self.refuse(flow, call, decision.message or "ccmeter: spending cap reached")
        if policy.mode == "hard" and decision.headroom and call.attribution.stream:
            status, room = min(decision.headroom, key=lambda item: item[1])
            started = datetime.fromtimestamp(call.started_ts, UTC)
            prices = catalog.for_endpoint(call.endpoint.provider, call.endpoint.region_kind)
            call.limit = StreamLimit(status, room, RunningCost(prices, started),
                                          policy.tz)
            if call.endpoint.provider != providers.BEDROCK:  # never touch a signed request
                flow.request.headers["accept-encoding"] = "identity"  # so a cut can be written
        return False

    def _unforecast(self, policy: Policy, call: Call) -> None:
        """A per-call cap cannot judge a call with no forecast (its model has no price, or
        its body could not be read): it goes; said once per model in the log."""
        if policy.per_call_limit(call.project) is None or call.columns.get("forecast_picousd"
                                                                           ) is not None:
            return
        model = call.attribution.requested_model
        if model not in self._unforecast_told:
            self._unforecast_told.add(model)
            log.warning("ccmeter: per-call cap: a call of %s could not be forecast (%s); "
                        "let through", model or "an unknown model",
                        "no price for it" if model else "its request was not read")

    def saw_plan(self, row: Mapping[str, Any]) -> str | None:
        """A final row: its plan headers are what the plan caps read; the plan warning to
        give, if this row crossed ``plan_warn_at``."""
        if row.get("plan_5h_utilization") is None and row.get("plan_7d_utilization") is None:
            return None
        self.plan.saw(row)
        return self.plan.warning(self.policy, time.time())

    def _session_paused(self, policy: Policy, call: Call) -> bool:
        """``ccmeter caps pause --session ID``: this session's caps, loop cap included, are
        not enforced until then (logged once per pause)."""
        session = call.attribution.session_id
        if not policy.paused_sessions or not policy.session_paused(session, time.time()):
            return False
        assert session is not None
        until = dict(policy.paused_sessions)[session]
        if (session, until) not in self._session_pause_logged:
            self._session_pause_logged.add((session, until))
            log.warning("ccmeter: caps paused for session %s until %s; not enforcing",
                        session, utc_iso(until))
        if self.on_session_paused is not None:
            self.on_session_paused(session)
        return True

    def _check(self, policy: Policy, call: Call, writer: store.CallWriter | None,
               guard: Guard, deadline: float) -> Decision:
        """Runs on the caps thread: this process's queued rows first, then the check; all
        of it by ``deadline`` (CAP_CHECK_WAIT_MS after the call asked, however many calls
        wait here), else ``on_error`` decides."""
        if writer is not None:
            if writer.failing:
                self._retried = time.monotonic()
                if not writer.retry(_left(deadline)):  # the next call tries again
                    return self._unmetered(policy, writer.failing or "rows cannot be written")
            if not writer.flush(_left(deadline), until_failure=True):
                return self._unmetered(policy, writer.failing or (
                    "this proxy's rows were not written within "
                    f"{store.CAP_CHECK_WAIT_MS / 1000:g} s (the database is busy)"))
        while True:  # never waits inside SQLite: a locked database is polled up to deadline
            decision = guard.check(policy, call_uid=call.uid, project=call.project,
                                   session_id=call.attribution.session_id,
                                   model=call.attribution.requested_model, wait=False)
            if decision is not None:
                return decision
            if _left(deadline) <= 0:
                return self._unmetered(policy, "the database is locked by another process "
                                       f"for more than {store.CAP_CHECK_WAIT_MS / 1000:g} s")
            time.sleep(min(LOCK_POLL_S, _left(deadline)))

    def _unmetered(self, policy: Policy, reason: str) -> Decision:
        """Metering or the check cannot work now: ``on_error`` decides (logged once a
        reason; the writer logs when metering stops and when it works again)."""
        block = policy.on_error == "block"
        if self._unmetered_logged != (reason, policy.on_error):
            self._unmetered_logged = (reason, policy.on_error)
            log.error("ccmeter: cannot check caps (%s); %s calls (on_error = %s)", reason,
                      "refusing" if block else "allowing", policy.on_error)
        if block:
            return Decision(False, error_refusal_message(reason), reason="db_error")
        return Decision(True, reason="db_error")

    @staticmethod
    def refuse(flow: http.HTTPFlow, call: Call, message: str,
               error_type: str = "cap_reached") -> bool:
        """Answer the call ourselves. Refused as its headers came, it is recorded once its
        body is in (``request``); mitmproxy then sends this answer instead of the request.
        True when the body is already in: the caller records the call as blocked now."""
        flow.response = refusal_response(message, call.endpoint.provider)
        call.state.error_type, call.state.error_message = error_type, message[:500]
        if flow.request.raw_content is None:  # only the headers so far
            call.blocked = True
            return False
        return True
