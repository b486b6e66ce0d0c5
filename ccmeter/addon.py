"""The mitmproxy addon: glue between the proxy's hooks and ccmeter's pure modules.

Data flows one way: bytes -> tee -> SSE decoder -> usage state -> price -> call writer.
Two rules shape every line here:
- Never break the user's session. The stream tee catches everything and returns each
  chunk unchanged; a metering failure only marks the row (``metering_error``).
- Never store a secret. Only the kind of auth, the session id and the working folder's
  name are read from a request; prompt text is never kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from ccmeter import (
    attribution,
    callrow,
    config,
    pricing,
    providers,
    proxies,
    proxylife,
    requestread,
    routing,
    store,
)
from ccmeter.cachewatch import CacheWatch
from ccmeter.callrow import Call
from ccmeter.enforce import Enforcer
from ccmeter.failures import reason as failure_reason
from ccmeter.journal import Journal
from ccmeter.sessionprojects import SessionProjects
from ccmeter.shutdown import EndConnections
from ccmeter.tees import RequestTee, StreamTee

log = logging.getLogger(__name__)

ANTHROPIC_HOST = routing.ANTHROPIC_HOST
#: How long after forwarding a request its JSON is read (when caps do not need it sooner).
READ_REQUEST_DELAY_S = 0.005
#: How long after message_start a still-running call's first row is written.
STARTED_ROW_DELAY_S = 0.5


class Meter:
    """Meters every Claude Messages API call passing through mitmproxy."""

    def __init__(self, paths: config.Paths | None = None) -> None:
        #: Where ``ccmeter run``/``serve`` resolved the folders; under ``mitmdump -s`` they
        #: are resolved here, from the ``ccmeter_home`` option or the environment.
        self._given_paths = paths
        self.writer: store.CallWriter | None = None
        self.catalog = pricing.Catalog.bundled()
        self.calls: dict[str, Call] = {}
        #: The flows of the calls in flight, for the rows a clean stop finalizes.
        self._flows: weakref.WeakValueDictionary[str, http.HTTPFlow] = (
            weakref.WeakValueDictionary())
        #: Each streamed call's message_start on disk at once (see :mod:`ccmeter.journal`).
        self.journal: Journal | None = None
        #: When set (by ``ccmeter run``), the latest row of every call, for the exit summary.
        self.track_run = False
        self.final_rows: dict[str, dict[str, Any]] = {}
        self._sessions = SessionProjects()
        #: Set once the upstream has answered. Until then (and again after it could not be
        #: reached) a request's body is read before it goes: a call that cannot reach the
        #: upstream is then recorded with its model, project and kind.
        self._upstream_answered = False
        self._db_path: Path | None = None
        #: The upstream and metered hosts: the options, else config.toml's.
        self.routes = routing.Routes()
        self.enforcer = Enforcer()
        #: Cache fingerprints and the loop guard's counts (see ccmeter.cachewatch).
        self.cache = CacheWatch(lambda: self.enforcer.policy, lambda: self.catalog)
        self.enforcer.on_session_paused = self.cache.loops.forgive
        #: This process's status file (see ccmeter.proxies), for doctor and the status line.
        self.status = proxies.ProxyStatus()
        self.enforcer.on_team_problem = self.status.share_state
        #: Set by :class:`ccmeter.rundesk.RunDesk`: a call of a ``ccmeter run`` starts, and
        #: has its final row (with why it failed, if it did).
        self.on_run_start: Callable[[str], None] | None = None
        self.on_final: Callable[[str, str | None], None] | None = None
        #: Given each call's final row as it is queued (the OTLP exporter: an append).
        self.on_final_row: Callable[[dict[str, Any]], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        loader.add_option(
            "ccmeter_home", str | None, None,
            "One folder for ccmeter's config, database and logs, as $CCMETER_HOME "
            "(default: $CCMETER_HOME, else the platform's config and data folders).",
        )
        loader.add_option(
            "ccmeter_hosts", Sequence[str], [],
            "Extra hosts that speak the Anthropic Messages API and should be metered.",
        )
        loader.add_option(
            "ccmeter_upstream", str | None, None,
            "Send metered API traffic to this Anthropic-compatible base URL instead of "
            "api.anthropic.com (a company gateway or a local stand-in).",
        )
        loader.add_option(
            "ccmeter_project", str | None, None,
            "Tag every metered call with this project name.",
        )

    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        if "ccmeter_upstream" in updated or "ccmeter_hosts" in updated:
            try:
                self.routes.options(opts.ccmeter_upstream, opts.ccmeter_hosts)
            except ValueError as exc:
                raise exceptions.OptionsError(f"ccmeter_upstream {exc}") from None
        if "ccmeter_home" in updated or self.writer is None:
            if opts.ccmeter_home or self._given_paths is None:
                where = config.paths(home=opts.ccmeter_home)
            else:
                where = self._given_paths
            if self._db_path != where.db_file:
                self._close_writer()
                with contextlib.suppress(OSError):  # the writer says why it cannot write,
                    config.ensure_private_dir(where.data_dir)  # and the caps follow on_error
                self.writer = store.CallWriter(where.db_file, on_state=self.status.metering)
                self._db_path = where.db_file
                self._open_journal(where)
                log.info("ccmeter: metering into %s", where.db_file)
                self.enforcer.open(where.db_file)
                self.status.start(where, failing=self.writer.failing)
            self.enforcer.watch(where.config_file, on_change=self._apply_config,
                                on_problem=self.status.config_state)
        self.routes.lazy_connections()

    def _apply_config(self, cfg: dict[str, Any]) -> str | None:
        """Apply ``[prices]``, ``upstream`` and ``hosts`` (at start, and whenever config.toml
        changes); what could not be applied, if anything (the previous settings stay)."""
        problems = [p for p in (self.routes.config(cfg), self._load_prices(cfg)) if p]
        self.routes.lazy_connections()
        return "; ".join(problems) or None

    def _load_prices(self, cfg: dict[str, Any]) -> str | None:
        overrides = cfg.get("prices")
        try:
            catalog = pricing.Catalog.bundled()
            if overrides:
                catalog = catalog.with_overrides(overrides)
        except ValueError as exc:
            log.error("ccmeter: [prices] not applied, keeping the previous prices: %s", exc)
            return f"[prices]: {exc} (the previous prices stay)"
        if catalog.version != self.catalog.version:
            log.info("ccmeter: prices: catalog %s", catalog.version)
        self.catalog = catalog
        return None

    def running(self) -> None:
        self._warn_if_exposed()
        # Everything built so far (mitmproxy, its addons, the catalog) lives as long as the
        # proxy: keep it out of the garbage collector's scans, which otherwise land in the
        # latency tail of whichever call is in flight.
        gc.freeze()
        # The row writer and the caps thread run Python too; hand the GIL back to the event
        # loop (the user's bytes) after 0.5 ms instead of the default 5 ms.
        sys.setswitchinterval(0.0005)
        try:
            self.status.listening(proxies.listen_text(
                ctx.master.addons.get("proxyserver").listen_addrs()))
        except Exception:
            log.debug("ccmeter: the listen address is unknown", exc_info=True)

    def _warn_if_exposed(self) -> None:
        """A plain ``mitmdump`` binds every interface: say so, loudly (see exposure)."""
        from ccmeter import exposure

        try:
            where = exposure.exposed(ctx.master.addons.get("proxyserver").listen_addrs())
        except Exception:  # no proxyserver to ask: go by the option
            host = ctx.options.listen_host or ""
            where = [] if exposure.is_loopback(host) else [host or "every interface"]
        if where:
            log.warning(exposure.warning(where))

    def done(self) -> None:
        self._finalize_in_flight()
        self._close_writer()
        self.status.stop()

    def _close_writer(self) -> None:
        self.enforcer.close()
        unwritten = 0
        if self.writer is not None:
            self.writer.close()
            unwritten = self.writer.unwritten
            self.writer = None
        if self.journal is not None:  # kept for the next start when rows were not written
            self.journal.close(delete=not unwritten)
            self.journal = None

    def _open_journal(self, where: config.Paths) -> None:
        """The journal, after what the database knows (see :func:`proxylife.warm_start`)."""
        self.journal = proxylife.warm_start(where, self.catalog, self.enforcer,
                                            self.cache.forecaster)

    def _finalize_in_flight(self) -> None:
        """A clean stop: the final row of every call still in flight, its cap reservation
        released (see :func:`proxylife.finalize_in_flight`)."""
        calls, self.calls = self.calls, {}
        proxylife.finalize_in_flight(calls, self._flows, self.record, StreamTee)

    # --- spending caps ---------------------------------------------------------------------

    async def _enforce_caps(self, flow: http.HTTPFlow, call: Call) -> None:
        """Check the spending caps (see :class:`ccmeter.enforce.Enforcer`); a call refused
        with its whole body in is recorded here and now."""
        if await self.enforcer.enforce(flow, call, writer=self.writer, catalog=self.catalog):
            self.calls.pop(flow.id, None)
            self.record(call, status="blocked", flow=flow)

    # --- which flows -----------------------------------------------------------------------

    def is_api_flow(self, flow: http.HTTPFlow, host: str) -> bool:
        """A flow to an Anthropic-compatible API: a known host, or anything in reverse mode.
        ``host`` is the request's ``pretty_host``, lower-cased."""
        if host in self.routes.hosts or providers.is_cloud_host(host):
            return True
        mode = getattr(flow.client_conn, "proxy_mode", None)
        return isinstance(mode, mode_specs.ReverseMode)

    # --- hooks -----------------------------------------------------------------------------

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        """A metered call starts as its headers arrive. When the caps need nothing from its
        body (no caps, or only global ones) they are checked right here, and the body then
        streams upstream as it arrives, a copy kept for the meter: the call leaves as soon
        as bare mitmproxy would send it. Otherwise the body is buffered and the caps are
        checked in :meth:`request`, with the request's project, session and model."""
        request = flow.request
        host = request.pretty_host.lower()  # parsed anew on every access: read it once
        if not self.is_api_flow(flow, host):
            return
        endpoint = providers.classify(request.method, host, request.path)
        if endpoint is not None:
            self.enforcer.reload()
            tag = request.headers.get(attribution.PROJECT_HEADER)
            if tag is not None and endpoint.provider != providers.BEDROCK:
                del request.headers[attribution.PROJECT_HEADER]  # SigV4 may sign it
            try:
                call: Call | None = self._start_call(flow, endpoint, host, tag)
            except Exception:
                log.exception("ccmeter: could not read a messages request; passed on unmetered")
                self.calls.pop(flow.id, None)
                call = None
            if call is not None and not self.enforcer.needs_request_body:
                try:
                    await self._enforce_caps(flow, call)
                except Exception:
                    log.exception("ccmeter: checking spending caps failed; the call goes on")
                if flow.response is None and self._upstream_answered:
                    request.stream = RequestTee()  # not refused: send the body on as it comes
        self.routes.route(flow, host)

    async def request(self, flow: http.HTTPFlow) -> None:
        """The whole request is here (and, when it streamed, already upstream)."""
        call = self.calls.get(flow.id)
        if call is None:
            return
        request = call.pending = flow.request
        if await self._answer_unreachable(flow, call):
            return
        streamed = requestread.take_streamed_body(request)
        if streamed or not (call.blocked or self.enforcer.needs_request_body):
            # The body has gone upstream (or goes now: the caps were checked with its
            # headers, see ``_upstream_answered``); the meter reads it while the API thinks
            # (a first byte takes a second or more). If the answer comes sooner, the first
            # row reads it, after the first chunk is sent on.
            asyncio.get_running_loop().call_later(
                READ_REQUEST_DELAY_S, self._read_request_quietly, call)
            return
        if call.blocked:  # refused as its headers came: the row gets the body's details
            self.calls.pop(flow.id, None)
            self.record(call, status="blocked", flow=flow)
            return
        try:  # buffered, because the caps need the request's details before it may go
            self._read_request(call)
        except Exception:
            log.exception("ccmeter: could not read a messages request")
        try:
            await self._enforce_caps(flow, call)
        except Exception:
            log.exception("ccmeter: checking spending caps failed; the call goes on")

    async def _answer_unreachable(self, flow: http.HTTPFlow, call: Call) -> bool:
        """Until the upstream has answered, it is tried before the call goes: one that cannot
        be reached is answered here, in the provider's shape (see :mod:`ccmeter.routing`)."""
        up = self.routes.upstream
        if (self._upstream_answered or up is None or flow.response is not None or call.blocked
                or flow.server_conn.via is not None
                or (flow.request.host, flow.request.port) != (up.host, up.port)):
            return False
        cause = await routing.unreachable(up.host, up.port)
        if cause is None:
            return False
        call.state.error_type = "connection"
        call.state.error_message = f"cannot connect to {up.url}: {cause}"
        self.calls.pop(flow.id, None)
        self.record(call, status="upstream_error", flow=flow)  # before the answer: no status
        flow.response = routing.unreachable_response(
            call.endpoint.provider, up.url, cause, retry=routing.should_retry(up.host, cause))
        return True

    def _start_call(self, flow: http.HTTPFlow, endpoint: providers.Endpoint, host: str,
                    tag: str | None) -> Call:
        """Keep a Call for this flow; ``tag`` is the launcher's project header, if the
        request had one. Its body (100–500 KB from Claude Code) is read in ``request``."""
        call = Call(
            uid=flow.id,
            started_ts=flow.request.timestamp_start,
            host=host,
            attribution=attribution.Attribution(),
            project=attribution.project_tag(tag),
            endpoint=endpoint,
        )
        run = flow.metadata.get("ccmeter_run")  # see ccmeter.rundesk
        if run is not None:
            call.run_id, call.run_project = run
            if self.on_run_start is not None:
                self.on_run_start(call.run_id)
        self.calls[flow.id] = call
        self._flows[flow.id] = flow
        return call

    def _read_request_quietly(self, call: Call) -> None:
        try:
            self._read_request(call)
        except Exception:
            log.exception("ccmeter: could not read a messages request")

    def _read_request(self, call: Call) -> None:
        """Fill in the call's attribution from its request (once; idempotent), and its
        project through its session's (see :meth:`_session_project`)."""
        if not requestread.read_request(
                call, lambda: call.run_project or ctx.options.ccmeter_project,
                lambda body, who: self.cache.read(call, body, who)):
            return
        call.project = self._session_project(call.attribution.session_id, call.project)
        if self.journal is not None and call.uid in self.journal.needs_detail:
            self.journal.detail(call)  # journaled at message_start, before this was known

    def _session_project(self, session_id: str | None, project: str | None) -> str | None:
        """Calls without a working directory in their prompt (title and quota calls) take
        the project their session's other calls named; rows written before it was known
        are re-written with it, through the writer thread."""
        project, fills = self._sessions.resolve(session_id, project)
        if fills and self.writer is not None:
            for row in fills:
                self.writer.put(row)
        return project

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = self.calls.get(flow.id)
        if call is None or flow.response is None:
            return
        try:
            # The plan headers are read with the row, after the first byte is on its way.
            self._upstream_answered = True
            call.response_headers = flow.response.headers
            content_type, encoding = requestread.body_kind(flow.response.headers)
            bedrock_stream = call.endpoint.provider == providers.BEDROCK and (
                content_type.startswith(providers.EVENTSTREAM_CONTENT_TYPE))
            if content_type.startswith("text/event-stream") or bedrock_stream:
                if encoding and call.limit is not None:
                    log.warning("ccmeter: hard cap cannot cut a %s-encoded stream", encoding)
                    call.limit = None
                flow.response.stream = StreamTee(self, call, encoding or None, flow)
        except Exception as exc:
            call.metering_error = f"responseheaders: {type(exc).__name__}: {exc}"[:300]
            log.exception("ccmeter: cannot meter this answer; streaming it through unmetered")
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        call = self.calls.pop(flow.id, None)
        if call is None or flow.response is None:
            return
        try:
            requestread.keep_unsent_request(call, flow.request)
            if isinstance(flow.response.stream, StreamTee):
                flow.response.stream.drain()
            else:
                requestread.read_json_body(call, flow.response)
            state = call.state
            if flow.response.status_code >= 400 or state.error_type:
                status = "upstream_error"
            elif state.stopped:
                status = "ok"
            else:
                status = "incomplete"
            self.record(call, status=status, flow=flow)
        except Exception:
            log.exception("ccmeter: finishing a metered call failed")

    def error(self, flow: http.HTTPFlow) -> None:
        call = self.calls.pop(flow.id, None)
        if call is None:
            return
        try:
            if flow.response is not None and isinstance(flow.response.stream, StreamTee):
                flow.response.stream.drain()
            state = call.state
            requestread.keep_unsent_request(call, flow.request)
            if call.blocked:  # refused; the client went away before sending its body
                self.record(call, status="blocked", flow=flow)
                return
            status = "incomplete" if state.started else "upstream_error"
            if not state.error_type:
                state.error_type = "connection" if flow.response is None else "stream_cut"
            state.error_message = flow.error.msg[:300] if flow.error else None
            if flow.server_conn.timestamp_tcp_setup is None:  # not reached: read the
                self._upstream_answered = False  # next bodies first again
            self.record(call, status=status, flow=flow)
        except Exception:
            log.exception("ccmeter: recording a failed call failed")

    # --- the row ---------------------------------------------------------------------------

    def record(self, call: Call, *, status: str, flow: http.HTTPFlow | None = None,
               final: bool = False) -> None:
        """Queue the call's current row; called at message_start and again at the end
        (with its ``flow``, or ``final`` when a stop ends it)."""
        if self.writer is None:
            return
        row = self.build_row(call, status=status, flow=flow)
        self._sessions.written(row)  # no project yet: it is filled in once it is known
        if flow is not None or final:  # the final row: its cap reservation goes with it
            row[store.RELEASE_RESERVATION] = True
            self.cache.finished(call, row)
            self.cache.warn(self.enforcer.saw_plan(row))
            if self.on_final_row is not None:
                try:
                    self.on_final_row(row)
                except Exception:
                    log.exception("ccmeter: a metrics exporter failed on a call's row")
        if self.journal is not None:  # before the put: idle means every earlier row is in
            self.journal.collect(self.writer.idle)
        self.writer.put(row)
        if self.journal is not None:
            self.journal.queued(call.uid)
        failure = None
        if flow is not None:  # the final row: a failure is told in the log (and the summary)
            failure = failure_reason(status, row.get("error_type"), row.get("http_status"),
                                     call.state.error_message,
                                     reached=flow.server_conn.timestamp_tcp_setup is not None)
            if failure:
                log.warning("ccmeter: a call to %s failed: %s", routing.target(flow), failure)
            if call.run_id and self.on_final is not None:
                self.on_final(call.run_id, failure)
        if self.track_run:
            self.final_rows[call.uid] = {
                k: row.get(k) for k in ("session_id", "cost_picousd", "status", "model")
            }
            self.final_rows[call.uid]["failure"] = failure

    def record_started(self, call: Call, start: Mapping[str, Any] | None = None) -> None:
        """At message_start (``start``: that event's data): the call goes into the journal
        at once, one line on disk, so a proxy killed from now on still leaves its billed
        input on record. Its row — for the caps of other calls, ``watch`` and the status
        line — is written half a second later, and only if the call is still running: a
        shorter call's final row says everything, and the moments after a first byte belong
        to the client that is waiting for it (on a busy machine the writer's work then held
        the first byte back from the client by a millisecond or more)."""
        if self.journal is not None:
            self.journal.started(call, start.get("message") if start else None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside mitmproxy's loop (tests): record right away
            self.record(call, status="incomplete")
            return
        loop.call_later(STARTED_ROW_DELAY_S, self._record_started, call)

    def _record_started(self, call: Call) -> None:
        if self.calls.get(call.uid) is not call:
            return
        try:
            self.record(call, status="incomplete")
        except Exception:
            log.exception("ccmeter: recording a started call failed")

    def build_row(self, call: Call, *, status: str, flow: http.HTTPFlow | None) -> dict[str, Any]:
        """The call's row now: its request is read first if it has not been yet."""
        if call.pending is not None:
            self._read_request(call)
        callrow.read_plan_headers(call)
        return callrow.build_row(call, status=status, catalog=self.catalog, now=time.time(),
                                 flow=flow)


addons = [Meter(), EndConnections()]  # what mitmdump -s loads (see ccmeter.shutdown)
