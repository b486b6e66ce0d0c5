"""The proxy's side of sharing one proxy between runs (see :mod:`ccmeter.resident`).

An addon, loaded before the :class:`~ccmeter.addon.Meter` by ``ccmeter run``/``serve``:

- reads a run's credentials from the ``Proxy-Authorization`` of a ``CONNECT`` (they apply to
  every request in that tunnel) or of a plain-HTTP request, removes them from any request
  that goes on, and hands the run to the meter in ``flow.metadata``;
- keeps the desk runs talk to (:mod:`ccmeter.desk`: a loopback port of this process, not
  the proxy's, so nothing a run says to it can reach an upstream): a hello registers the run
  (and is logged), a bye waits for the run's rows and answers with its summary line
  (:mod:`ccmeter.runsummary`), so that ``run`` need not load what that takes;
- keeps ``run_config`` in its status file current: what a run needs from the config file as
  it is now (:func:`ccmeter.configcheck.for_runs`), checked again at each hello;
- knows the runs that use it (their pids), the open client connections and the last call,
  and stops the proxy when all of them have been gone for ``idle_exit`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, http

from ccmeter import config, configcheck, desk, folders, proxies, runsummary

if TYPE_CHECKING:
    from ccmeter.addon import Meter

log = logging.getLogger(__name__)

#: ``flow.metadata`` key: ``(run id, project)`` of the run that sent the flow.
RUN_KEY = "ccmeter_run"
AUTH_HEADER = "Proxy-Authorization"
CHECK_EVERY_S = 1.0


class RunDesk:
    def __init__(self, meter: Meter, serves: dict[str, Any], idle_exit_s: float | None,
                 paths: config.Paths) -> None:
        self.meter = meter
        self.serves = serves
        self.idle_exit_s = idle_exit_s
        self.paths = paths
        self._tunnels: weakref.WeakKeyDictionary[Any, tuple[str, str | None]] = (
            weakref.WeakKeyDictionary())
        self.leases: dict[str, int] = {}  # run id -> the pid of its `ccmeter run`
        self.projects: dict[str, str | None] = {}  # run id -> its project (for its summary)
        self._config_stamp: Any = ()  # the config file's stamp when run_config was made
        self._failed_before: dict[str, int] = {}  # run id -> metering failures at its hello
        self.seen: Counter[str] = Counter()  # calls per run
        self.failures: dict[str, list[str]] = {}
        self.open_connections = 0
        self.last_activity = time.monotonic()
        self.idle_exited = False
        self._task: asyncio.Task | None = None
        self._server: asyncio.Server | None = None
        #: Proves an answer is this proxy's (:func:`ccmeter.desk.proof`): only the user can
        #: read it, in the status file; it never crosses the desk's socket.
        self.token = secrets.token_hex(16)
        meter.on_final = self._final
        meter.on_run_start = self.started

    # --- lifecycle -------------------------------------------------------------------------

    async def running(self) -> None:
        self.meter.status.serves(self.serves)
        self._refresh_run_config()
        await self._open_desk()
        if self.idle_exit_s:
            self._task = asyncio.get_running_loop().create_task(self._watch_idle())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._server is not None:
            self._server.close()

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
        run = desk.parse_credentials(flow.request.headers.get(AUTH_HEADER))
        if run is not None:
            self._tunnels[flow.client_conn] = run

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """On every call's path: the run it belongs to, and its credentials removed."""
        self.last_activity = time.monotonic()
        request = flow.request
        run = self._tunnels.get(flow.client_conn)
        if AUTH_HEADER in request.headers:
            own = desk.parse_credentials(request.headers[AUTH_HEADER])
            if own is not None:  # a plain-HTTP request's own credentials: ours, never sent on
                run = own
                del request.headers[AUTH_HEADER]
        if run is not None:
            flow.metadata[RUN_KEY] = run

    # --- the desk --------------------------------------------------------------------------

    async def _open_desk(self) -> None:
        """Listen for runs on a loopback port of its own, named in the status file."""
        self._server = await asyncio.start_server(self._desk_client, "127.0.0.1", 0,
                                                  limit=desk.MAX_ANSWER)
        port = self._server.sockets[0].getsockname()[1]
        self.meter.status.desk({"port": port, "token": self.token})

    async def _desk_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        """One request (a JSON line) and its answer; anything else is dropped."""
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            request = json.loads(line)
            if isinstance(request, dict):
                answer = await self._answer(request)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, OSError, ValueError, asyncio.LimitOverrunError):
            pass
        except Exception:  # never the proxy's end
            log.exception("ccmeter: the desk could not answer a run")
        finally:
            writer.close()

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        self.last_activity = time.monotonic()
        op, run_id, nonce = request.get("op"), request.get("run"), request.get("nonce")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
            return {}
        doc: dict[str, Any] = {"ccmeter": 1, "pid": os.getpid(),
                               "proof": desk.proof(self.token, nonce)}
        if not isinstance(run_id, str) or not run_id:
            return doc
        if op == "hello":
            pid, project = request.get("pid"), request.get("project")
            if isinstance(pid, int):
                self.leases[run_id] = pid
            self.projects[run_id] = project[:200] if isinstance(project, str) else None
            self._failed_before.setdefault(run_id, self.meter.status.failed_times)
            log.info("ccmeter: run %s (pid %s) joined proxy %d", run_id, pid, os.getpid())
            if folders.stamp(self.paths.config_file) != self._config_stamp:
                await asyncio.to_thread(self._refresh_run_config)
        elif op == "bye":
            wait_s = request.get("wait")
            await self._calls_ended(run_id,
                                    float(wait_s) if isinstance(wait_s, int | float) else 3.0)
            self.leases.pop(run_id, None)
            doc.update(
                seen=self.seen.pop(run_id, 0),
                failures=self.failures.pop(run_id, []),
                pending=sum(1 for c in self.meter.calls.values() if c.run_id == run_id),
            )
            doc["metering_failure"], doc["line"] = await asyncio.to_thread(
                self._end_of_run, run_id, self.projects.pop(run_id, None),
                self._failed_before.pop(run_id, 0), dict(doc))
        return doc

    async def _calls_ended(self, run_id: str, wait_s: float) -> None:
        """Until the run's calls have ended (or ``wait_s``): a child's connections close as
        it exits, and the last rows follow at once."""
        deadline = time.monotonic() + (max(0.0, min(wait_s, 60.0)) if wait_s == wait_s else 3.0)
        while (any(c.run_id == run_id for c in self.meter.calls.values())
               and time.monotonic() < deadline):
            await asyncio.sleep(0.02)

    def _end_of_run(self, run_id: str, project: str | None, failed_before: int,
                    ended: dict[str, Any]) -> tuple[str | None, str]:
        """On a worker thread: once the run's rows are on disk, whether metering failed
        during the run, and the run's summary line (from its rows)."""
        writer = self.meter.writer
        if writer is not None:
            writer.flush(10.0, until_failure=True)
        failure = self._failure_since(failed_before)
        summary = runsummary.for_run(self.paths, run_id, project,
                                     {**ended, "metering_failure": failure})
        return failure, summary.line()

    def _refresh_run_config(self) -> None:
        """Write what a run needs from the config (as the file is now) to the status file."""
        try:
            facts = configcheck.for_runs(self.paths)
        except Exception:  # never the proxy's end: a run then takes the full path
            log.exception("ccmeter: could not read the config for runs")
            facts = {"stamp": folders.stamp(self.paths.config_file), "error": "unreadable"}
        self._config_stamp = facts["stamp"]
        self.meter.status.run_config(facts)

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
