"""The proxy's side of cache accounting and the loop guard: glue over pure modules.

When the meter reads a request's JSON (off the byte path: after the request has gone
upstream, or while a buffered one waits for its cap check) it hands the parsed body here:

- :func:`ccmeter.cachekeys.shape` fingerprints what the prompt cache keys on; against the
  last call of the same chain (session, agent, kind) it says what changed
  (``cache_change``), and the row keeps the fingerprints (``cache_key_json``), no text;
- :class:`ccmeter.forecast.Forecaster` forecasts the call's input-side cost from the same
  shape (``forecast_picousd``, ``forecast_note``), and learns from each answer's usage; the
  per-call cap (:mod:`ccmeter.enforce`) refuses a call on that forecast;
- :class:`ccmeter.loops.LoopDetector` counts the session's newest tool call
  (``tool_call_fp``, ``tool_repeats``) and warns — in the log, and on the desktop when
  ``[caps] notify`` allows — when a session repeats itself; the loop cap itself is enforced
  with the spending caps (:mod:`ccmeter.enforce`).

Nothing here touches mitmproxy, SQLite or the network.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ccmeter import cachekeys, forecast, loops
from ccmeter.usage import TokenCounts

if TYPE_CHECKING:
    from ccmeter.attribution import Attribution
    from ccmeter.callrow import Call
    from ccmeter.caps.policy import Policy
    from ccmeter.pricing import Catalog

log = logging.getLogger(__name__)

#: Chains whose last shape is remembered (the least recently used are forgotten first).
MAX_CHAINS = 2000


class CacheWatch:
    def __init__(self, policy: Callable[[], Policy],
                 catalog: Callable[[], Catalog] | None = None) -> None:
        self._policy = policy
        self._catalog = catalog
        self.forecaster = forecast.Forecaster()
        self.loops = loops.LoopDetector()
        self._last: OrderedDict[tuple[Any, ...], cachekeys.Shape] = OrderedDict()
        self.warnings: list[str] = []  # the last few, for tests and the log's reader

    def read(self, call: Call, body: Mapping[str, Any], who: Attribution) -> None:
        """Fingerprint one request (its body parsed, about to be dropped)."""
        try:
            shape = cachekeys.shape(body)
        except Exception:  # never let accounting stop metering
            log.exception("ccmeter: could not fingerprint a request's cache prefix")
            return
        columns: dict[str, Any] = {"cache_key_json": shape.key_json()}
        chain = (who.session_id, who.agent_id, who.call_kind)
        call.shape = shape
        if who.session_id is not None:
            previous = self._last.get(chain)
            if previous is not None:
                columns["cache_change"] = shape.change_from(previous)
            self._last[chain] = shape
            self._last.move_to_end(chain)
            while len(self._last) > MAX_CHAINS:
                self._last.popitem(last=False)
            seen = self.loops.observe(who.session_id, messages=len(shape.messages),
                                      tool_call=shape.tool_call,
                                      failed_result=shape.failed_result)
            call.loop_seen = seen
            if seen.tool_call is not None:
                columns["tool_call_fp"] = seen.tool_call
                columns["tool_repeats"] = seen.repeats
            self._warn(self.loops.first_warning(seen, self._warn_at()))
        call.columns.update(columns)
        self._forecast(call, body, shape, chain, columns.get("cache_change"))

    def _forecast(self, call: Call, body: Mapping[str, Any], shape: cachekeys.Shape,
                  chain: tuple[Any, ...], change: str | None) -> None:
        """The call's input-side cost before it is answered (never stops metering)."""
        if self._catalog is None:
            return
        try:
            estimate = self.forecaster.estimate(shape, chain, call.started_ts)
            prices = self._catalog().for_endpoint(call.endpoint.provider,
                                                  call.endpoint.region_kind)
            speed = body.get("speed") if isinstance(body.get("speed"), str) else None
            model = shape.model or call.attribution.requested_model
            call.columns["forecast_picousd"] = forecast.price(prices, model, estimate,
                                                              call.started_ts, speed=speed)
            call.columns["forecast_note"] = forecast.reason(estimate, change)
        except Exception:
            log.exception("ccmeter: could not forecast a call's cost")

    def finished(self, call: Call, row: Mapping[str, Any]) -> None:
        """A call's final row: its cost goes into its session's spend rate, and its usage
        teaches the forecaster the prompt's size and what is cached now."""
        session, cost = row.get("session_id"), row.get("cost_picousd")
        if session and cost:
            self._warn(self.loops.spent(session, row["started_ts"], cost))
        shape, call.shape = call.shape, None
        if shape is None or row.get("input_tokens") is None or not (
                200 <= (row.get("http_status") or 0) < 300):
            return
        try:
            who = call.attribution
            self.forecaster.learn(shape, (who.session_id, who.agent_id, who.call_kind),
                                  row["started_ts"], TokenCounts(
                                      row["input_tokens"], row.get("cache_write_5m_tokens") or 0,
                                      row.get("cache_write_1h_tokens") or 0,
                                      row.get("cache_read_tokens") or 0))
        except Exception:
            log.exception("ccmeter: the forecaster could not learn from an answer")

    def _warn_at(self) -> int:
        limit = self._policy().loop
        return min(loops.DEFAULT_WARN_AT, limit) if limit else loops.DEFAULT_WARN_AT

    def warn(self, text: str | None) -> None:
        """Log ``text`` as a warning (and notify the desktop when ``[caps] notify``)."""
        self._warn(text)

    def _warn(self, text: str | None) -> None:
        if text is None:
            return
        log.warning("ccmeter: %s", text)
        self.warnings = [*self.warnings[-9:], text]
        if self._policy().notify:
            from ccmeter.caps.messages import desktop_notify

            desktop_notify(text)
