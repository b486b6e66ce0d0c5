"""ccmeter's figures pushed to an OpenTelemetry collector over OTLP/HTTP (``ccmeter[otel]``),
configured as every OpenTelemetry program is: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``…_METRICS_ENDPOINT``), ``…_HEADERS``, ``…_TIMEOUT``, ``…_METRICS_TEMPORALITY_PREFERENCE``,
``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``.

Claude Code's own metric names carry ccmeter's exact numbers, so a dashboard built for
Claude Code's telemetry shows them unchanged: ``claude_code.cost.usage`` (USD) and
``claude_code.token.usage`` (``type`` = input, output, cacheRead, cacheCreation), with
``model`` and ``session.id``. ``ccmeter.*`` metrics add what Claude Code has not: calls by
status, refusals, unpriced calls, tokens by cache lifetime, cache waste, plan use, caps.

Counting: each proxy pushes the calls it metered itself (as each Claude Code process pushes
its own), from the moment it started, with a ``service.instance.id`` of its own; a collector
summing several proxies gets every call once. The event loop only appends a finished call's
figures to a deque (:meth:`Exporter.record`); the SDK's reader thread sums them when it
collects, and sends. A collector that is down or slow costs that thread, never a call: a
stop waits for the last push at most :data:`STOP_WAIT_S`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from ccmeter import desk
from ccmeter.metrics.snapshot import PICO_PER_USD, Reader

log = logging.getLogger(__name__)

#: The longest a proxy's stop waits for the last push (a dead collector: then it gives up).
STOP_WAIT_S = 2.0
#: Sessions whose cache waste is reported: those with a call in this long.
WASTE_SESSIONS_S = 2 * 3600.0
#: A session's series (cost and tokens by session.id) are dropped once it has had no call
#: for this long, so a proxy that runs for months does not push every session it ever saw
#: (a cumulative series that stops is fine for OTLP and Prometheus alike).
SESSION_SERIES_S = 24 * 3600.0
PRUNE_EVERY_S = 600.0
PROTOCOLS = ("http/protobuf", "")

# Claude Code's token types, from ccmeter's columns.
_CLAUDE_TYPES = (("input", ("input",)), ("output", ("output",)), ("cacheRead", ("cache_read",)),
                 ("cacheCreation", ("cache_write_5m", "cache_write_1h")))
_TOKEN_COLUMNS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")


def wanted(env: Mapping[str, str]) -> bool:
    """Do the standard variables ask for OTLP metrics?"""
    return desk.otlp_endpoint(env) is not None


class _Totals:
    """This process's finished calls, summed per attribute set (the reader thread's)."""

    def __init__(self) -> None:
        self.cost: dict[tuple, int] = collections.defaultdict(int)  # picodollars
        self.tokens: dict[tuple, int] = collections.defaultdict(int)
        self.calls: dict[tuple, int] = collections.defaultdict(int)
        self.refusals: dict[tuple, int] = collections.defaultdict(int)
        self.unpriced: dict[tuple, int] = collections.defaultdict(int)
        self.plan: dict[str, float] = {}
        self.sessions: dict[str, float] = {}  # session id -> its last call's time
        self.pruned = time.time()

    def prune(self, now: float) -> None:
        """Forget the sessions without a call in :data:`SESSION_SERIES_S`."""
        self.pruned = now
        stale = {s for s, ts in self.sessions.items() if ts < now - SESSION_SERIES_S}
        if not stale:
            return
        for table in (self.cost, self.tokens):
            for key in [k for k in table if k[1] in stale]:
                del table[key]
        for session in stale:
            del self.sessions[session]

    def add(self, row: tuple) -> None:
        (session, project, model, provider, kind, status, reason, cost, tokens, plan_5h,
         plan_7d, started) = row
        who = (model, session, project)
        if cost is not None:
            self.cost[who] += cost
        elif status != "blocked":
            self.unpriced[(model, project, provider, kind)] += 1
        for column, n in zip(_TOKEN_COLUMNS, tokens, strict=True):
            if n:
                self.tokens[(*who, column)] += n
        self.calls[(model, project, provider, kind, status)] += 1
        if status == "blocked":
            self.refusals[(project, reason or "cap_reached")] += 1
        if plan_5h is not None:
            self.plan["5h"] = plan_5h
        if plan_7d is not None:
            self.plan["7d"] = plan_7d
        if session:
            self.sessions[session] = max(self.sessions.get(session, 0.0),
                                         started or time.time())


class Exporter:
    """The meter provider, its instruments and the rows they count (see the module doc)."""

    def __init__(self, paths: Any, env: Mapping[str, str]) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        self.endpoint = desk.otlp_endpoint(env)
        self._queue: collections.deque[tuple] = collections.deque()
        self._lock = threading.Lock()
        self._totals = _Totals()
        self._reader = Reader(paths.db_file, paths, max_age_s=1.0, calls=False)  # caps
        self._catalog: Any = None
        from ccmeter import __version__

        # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, and the
        # attributes given to it win: so ccmeter's defaults go in only where the user's
        # variables name none.
        named = {pair.split("=", 1)[0].strip()
                 for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if "=" in pair}
        defaults = {"service.name": "ccmeter", "service.version": __version__,
                    "service.instance.id": str(uuid.uuid4())}
        if env.get("OTEL_SERVICE_NAME"):
            named.add("service.name")
        resource = Resource.create({k: v for k, v in defaults.items() if k not in named})
        exporter = OTLPMetricExporter(endpoint=self.endpoint)
        self._metric_reader = PeriodicExportingMetricReader(exporter)
        self._provider = MeterProvider(resource=resource, metric_readers=[self._metric_reader])
        self._instruments(self._provider.get_meter("ccmeter"))

    # --- the event loop's side: one append per finished call --------------------------

    def record(self, row: Mapping[str, Any]) -> None:
        """A call's final row (called on the proxy's event loop: O(1), never raises)."""
        try:
            self._queue.append((
                row.get("session_id") or "", row.get("project") or "",
                row.get("model") or "", row.get("provider") or "",
                row.get("call_kind") or "", row.get("status") or "",
                row.get("error_type") or "", row.get("cost_picousd"),
                tuple(int(row.get(f"{c}_tokens") or 0) for c in _TOKEN_COLUMNS),
                row.get("plan_5h_utilization"), row.get("plan_7d_utilization"),
                row.get("started_ts")))
        except Exception:
            log.exception("ccmeter: OTLP: a call could not be counted")

    # --- the reader thread's side ------------------------------------------------------

    def _drained(self) -> _Totals:
        with self._lock:
            while self._queue:
                self._totals.add(self._queue.popleft())
            now = time.time()
            if now - self._totals.pruned >= PRUNE_EVERY_S:
                self._totals.prune(now)
            return self._totals

    def _instruments(self, meter: Any) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        def cost(_: CallbackOptions) -> Iterator[Observation]:
            for (model, session, project), pico in list(self._drained().cost.items()):
                yield Observation(pico / PICO_PER_USD, {
                    "model": model, "session.id": session, "project": project})

        def claude_tokens(_: CallbackOptions) -> Iterator[Observation]:
            sums: dict[tuple, int] = collections.defaultdict(int)
            for (model, session, project, column), n in list(self._drained().tokens.items()):
                for name, columns in _CLAUDE_TYPES:
                    if column in columns:
                        sums[(model, session, project, name)] += n
            for (model, session, project, name), n in sums.items():
                yield Observation(n, {"type": name, "model": model, "session.id": session,
                                      "project": project})

        def tokens(_: CallbackOptions) -> Iterator[Observation]:
            for (model, session, project, column), n in list(self._drained().tokens.items()):
                yield Observation(n, {"type": column, "model": model, "session.id": session,
                                      "project": project})

        def calls(_: CallbackOptions) -> Iterator[Observation]:
            for (model, project, provider, kind, status), n in list(
                    self._drained().calls.items()):
                yield Observation(n, {"model": model, "project": project,
                                      "provider": provider, "kind": kind, "status": status})

        def refusals(_: CallbackOptions) -> Iterator[Observation]:
            for (project, reason), n in list(self._drained().refusals.items()):
                yield Observation(n, {"project": project, "reason": reason})

        def unpriced(_: CallbackOptions) -> Iterator[Observation]:
            for (model, project, provider, kind), n in list(self._drained().unpriced.items()):
                yield Observation(n, {"model": model, "project": project,
                                      "provider": provider, "kind": kind})

        def plan(_: CallbackOptions) -> Iterator[Observation]:
            for window, used in list(self._drained().plan.items()):
                yield Observation(float(used), {"window": window})

        def caps(figure: str) -> Any:
            def observe(_: CallbackOptions) -> Iterator[Observation]:
                for cap in self._reader.snapshot().caps:
                    pico = {"spend": cap.spent_picousd, "limit": cap.limit_picousd,
                            "remaining": cap.remaining_picousd}[figure]
                    yield Observation(pico / PICO_PER_USD, {
                        "cap": cap.cap, "scope": cap.scope, "window": cap.window})
            return observe

        def waste(_: CallbackOptions) -> Iterator[Observation]:
            yield from self._waste()

        meter.create_observable_counter(
            "claude_code.cost.usage", [cost], unit="USD",
            description="Cost of the calls this ccmeter proxy metered, exact (priced calls)")
        meter.create_observable_counter(
            "claude_code.token.usage", [claude_tokens], unit="tokens",
            description="Tokens of the calls this ccmeter proxy metered")
        meter.create_observable_counter(
            "ccmeter.token.usage", [tokens], unit="tokens",
            description="Tokens by ccmeter's types (cache writes by lifetime)")
        meter.create_observable_counter(
            "ccmeter.calls", [calls], unit="{call}", description="Finished calls by status")
        meter.create_observable_counter(
            "ccmeter.refusals", [refusals], unit="{call}",
            description="Calls ccmeter refused (cap_reached, loop)")
        meter.create_observable_counter(
            "ccmeter.unpriced_calls", [unpriced], unit="{call}",
            description="Calls whose cost is unknown (not in claude_code.cost.usage)")
        meter.create_observable_gauge(
            "ccmeter.plan.utilization", [plan], unit="1",
            description="Subscription plan use in its 5-hour and 7-day windows (0 to 1), "
            "from the newest answer's headers")
        meter.create_observable_gauge(
            "ccmeter.cache.waste", [waste], unit="USD",
            description="Money lost on the prompt cache (re-writes, writes never read) per "
            "session active in the last two hours")
        for figure in ("spend", "limit", "remaining"):
            meter.create_observable_gauge(
                f"ccmeter.cap.{figure}", [caps(figure)], unit="USD",
                description=f"Each spending cap's {figure} in its current window")

    def _waste(self) -> Iterator[Any]:
        from opentelemetry.metrics import Observation

        now = time.time()
        recent = [s for s, ts in list(self._drained().sessions.items())
                  if ts >= now - WASTE_SESSIONS_S]
        if not recent:
            return
        from ccmeter import config, store
        from ccmeter.wastereport import _catalog, session_waste

        try:
            cfg = config.load_config(self._reader.paths, quiet=True)
            if self._catalog is None:
                self._catalog = _catalog(cfg)
            db = store.connect_migrated(self._reader.db_path)
            try:
                for session in recent:
                    lost = session_waste(db, session, self._catalog, now)
                    if lost is not None:
                        yield Observation(lost / PICO_PER_USD, {"session.id": session})
            finally:
                db.conn.close()
        except Exception as exc:
            log.warning("ccmeter: OTLP: no cache waste figures: %s: %s",
                        type(exc).__name__, exc)

    def stop(self) -> None:
        """Push what is left and stop; a collector that does not answer is given up on
        after :data:`STOP_WAIT_S` (the push goes on in a daemon thread, then dies with it)."""
        done = threading.Event()

        def shutdown() -> None:
            try:
                self._provider.shutdown(timeout_millis=STOP_WAIT_S * 1000)
            except Exception:
                log.exception("ccmeter: OTLP: the last push failed")
            finally:
                done.set()

        threading.Thread(target=shutdown, name="ccmeter-otlp-stop", daemon=True).start()
        if not done.wait(STOP_WAIT_S):
            log.warning("ccmeter: OTLP: the collector at %s did not take the last push within "
                        "%g s; stopping without it", self.endpoint, STOP_WAIT_S)
        self._reader.close()


def start(paths: Any, env: Mapping[str, str]) -> Exporter | None:
    """The exporter the environment asks for, or None (said in the log) when it cannot be
    made: the ``otel`` extra missing, or a protocol other than OTLP/HTTP with protobuf."""
    protocol = (env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").strip().lower()
    if protocol not in PROTOCOLS:
        log.warning("ccmeter: no OTLP metrics: protocol %s is not supported; ccmeter sends "
                    "OTLP over HTTP (http/protobuf, port 4318)", protocol)
        return None
    try:
        return Exporter(paths, env)
    except ImportError as exc:
        log.warning("ccmeter: no OTLP metrics: the OpenTelemetry SDK is not installed (%s); "
                    "pip install 'ccmeter[otel]'", exc.name)
        return None
