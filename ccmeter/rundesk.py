"""The proxy's side of sharing one proxy between runs (see :mod:`ccmeter.resident`).

An addon, loaded before the :class:`~ccmeter.addon.Meter` by ``ccmeter run``/``serve``:

- reads a run's credentials from the ``Proxy-Authorization`` of a ``CONNECT`` (they apply to
  every request in that tunnel) or of a plain-HTTP request, removes them from any request
  that goes on, and hands the run to the meter in ``flow.metadata``;
- answers ``http://ccmeter-proxy.invalid/hello`` and ``/bye`` itself (never upstream);
- knows the runs that use it (their pids), the open client connections and the last call,
  and stops the proxy when all of them have been gone for ``idle_exit`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, http

from ccmeter import proxies, resident

if TYPE_CHECKING:
    from ccmeter.addon import Meter

log = logging.getLogger(__name__)

#: ``flow.metadata`` key: ``(run id, project)`` of the run that sent the flow.
RUN_KEY = "ccmeter_run"
AUTH_HEADER = "Proxy-Authorization"
CHECK_EVERY_S = 1.0


class RunDesk:
    def __init__(self, meter: Meter, serves: dict[str, Any], idle_exit_s: float | None) -> None:
        self.meter = meter
        self.serves = serves
        self.idle_exit_s = idle_exit_s
        self._tunnels: weakref.WeakKeyDictionary[Any, tuple[str, str | None]] = (
            weakref.WeakKeyDictionary())
        self.leases: dict[str, int] = {}  # run id -> the pid of its `ccmeter run`
        self._failed_before: dict[str, int] = {}  # run id -> metering failures at its hello
        self.seen: Counter[str] = Counter()  # calls per run
        self.failures: dict[str, list[str]] = {}
        self.open_connections = 0
        self.last_activity = time.monotonic()
        self.idle_exited = False
        self._task: asyncio.Task | None = None
        meter.on_final = self._final
        meter.on_run_start = self.started

    # --- lifecycle -------------------------------------------------------------------------

    def running(self) -> None:
        self.meter.status.serves(self.serves)
        if self.idle_exit_s:
            self._task = asyncio.get_running_loop().create_task(self._watch_idle())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def client_connected(self, client: Any) -> None:
        self.open_connections += 1
        self.last_activity = time.monotonic()

    def client_disconnected(self, client: Any) -> None:
        self.open_connections = max(0, self.open_connections - 1)
        self.last_activity = time.monotonic()

    async def _watch_idle(self) -> None:
        assert self.idle_exit_s
        while True:
            await asyncio.sleep(min(CHECK_EVERY_S, self.idle_exit_s / 4))
            now = time.monotonic()
            for run_id, pid in list(self.leases.items()):
                if not proxies.alive(pid):  # a run that was killed never says bye
                    del self.leases[run_id]
                    self.last_activity = now
            if (self.leases or self.open_connections or self.meter.calls
                    or now - self.last_activity < self.idle_exit_s):
                continue
            log.info("ccmeter: idle for %.0f s (no run, connection or call): stopping",
                     self.idle_exit_s)
            self.idle_exited = True
            ctx.master.shutdown()
            return

    # --- hooks -----------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        run = resident.parse_credentials(flow.request.headers.get(AUTH_HEADER))
        if run is not None:
            self._tunnels[flow.client_conn] = run

    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Synchronous on every call's path; only a request to the desk is answered (and
        awaited by mitmproxy) as a coroutine."""
        self.last_activity = time.monotonic()
        request = flow.request
        run = self._tunnels.get(flow.client_conn)
        if AUTH_HEADER in request.headers:
            own = resident.parse_credentials(request.headers[AUTH_HEADER])
            if own is not None:  # a plain-HTTP request's own credentials: ours, never sent on
                run = own
                del request.headers[AUTH_HEADER]
        if request.scheme == "http" and request.pretty_host == resident.DESK_HOST:
            return self._answer(flow)
        if run is not None:
            flow.metadata[RUN_KEY] = run
        return None

    # --- the desk --------------------------------------------------------------------------

    async def _answer(self, flow: http.HTTPFlow) -> None:
        query = flow.request.query
        run_id = query.get("run", "")
        path = flow.request.path.split("?", 1)[0]
        doc: dict[str, Any] = {"ccmeter": 1, "pid": os.getpid()}
        if path == "/hello" and run_id:
            with contextlib.suppress(ValueError):
                self.leases[run_id] = int(query.get("pid", ""))
            self._failed_before.setdefault(run_id, self.meter.status.failed_times)
        elif path == "/bye" and run_id:
            try:
                wait_s = float(query.get("wait", "3"))
            except ValueError:
                wait_s = 3.0
            await self._settle(run_id, wait_s)
            self.leases.pop(run_id, None)
            doc.update(
                seen=self.seen.pop(run_id, 0),
                failures=self.failures.pop(run_id, []),
                pending=sum(1 for c in self.meter.calls.values() if c.run_id == run_id),
                metering_failure=self._failure_since(self._failed_before.pop(run_id, 0)),
            )
        elif path != "/hello":
            flow.response = http.Response.make(404, b"", {"x-ccmeter-desk": "1"})
            return
        flow.response = http.Response.make(
            200, json.dumps(doc).encode(),
            {"content-type": "application/json", "x-ccmeter-desk": "1"})

    async def _settle(self, run_id: str, wait_s: float) -> None:
        """Until the run's calls have ended (or ``wait_s``), then until their rows are on
        disk (a child's connections close as it exits; the last rows follow at once)."""
        deadline = time.monotonic() + (max(0.0, min(wait_s, 60.0)) if wait_s == wait_s else 3.0)
        while (any(c.run_id == run_id for c in self.meter.calls.values())
               and time.monotonic() < deadline):
            await asyncio.sleep(0.02)
        writer = self.meter.writer
        if writer is not None:
            await asyncio.to_thread(writer.flush, 10.0, until_failure=True)

    def _failure_since(self, failed_before: int) -> str | None:
        """Why metering fails now, or failed since the run began; None if it never did."""
        writer, status = self.meter.writer, self.meter.status
        if writer is None:
            return "the proxy has no database to meter into"
        if writer.failing:
            return writer.failing
        return status.last_reason if status.failed_times > failed_before else None

    def _final(self, run_id: str, failure: str | None) -> None:
        """A call of ``run_id`` has its final row; ``failure``: why it failed, if it did."""
        if failure:
            self.failures.setdefault(run_id, []).append(failure)

    def started(self, run_id: str) -> None:
        """A metered call of ``run_id`` begins."""
        self.seen[run_id] += 1
