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
import gc
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from ccmeter import attribution, caps, config, eventstream, pricing, providers, store
from ccmeter.decompress import incremental_decoder
from ccmeter.sse import USAGE_EVENTS, SSEDecoder
from ccmeter.usage import MessageState, merge_usage

log = logging.getLogger(__name__)

ANTHROPIC_HOST = "api.anthropic.com"
#: How long after forwarding a request its JSON is read (when caps do not need it sooner).
READ_REQUEST_DELAY_S = 0.005
#: How long after message_start a still-running call's first row is written.
STARTED_ROW_DELAY_S = 0.5
PLAN_HEADER_PREFIX = "anthropic-ratelimit-unified-"


def is_messages_call(method: str, path: str) -> bool:
    """``POST …/v1/messages`` with any query string; not count_tokens, not batches."""
    return method == "POST" and path.split("?", 1)[0].rstrip("/").endswith("/v1/messages")


@lru_cache(maxsize=512)
def git_top(directory: str) -> str | None:
    """The enclosing git repository's top folder, found by walking up (no subprocess)."""
    try:
        here = Path(directory)
        for candidate in (here, *here.parents):
            if (candidate / ".git").exists():
                return str(candidate)
    except OSError:
        return None
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def plan_columns(headers: http.Headers) -> dict[str, Any]:
    """Subscription plan usage from the undocumented unified rate-limit headers.

    Absent headers give an empty dict; unknown ones are kept (in JSON) for later reports.
    """
    found = {k.lower(): v for k, v in headers.items() if k.lower().startswith(PLAN_HEADER_PREFIX)}
    if not found:
        return {}

    def get(name: str) -> str | None:
        return found.get(PLAN_HEADER_PREFIX + name)

    return {
        "plan_status": get("status"),
        "plan_5h_utilization": _float(get("5h-utilization")),
        "plan_5h_reset": _int(get("5h-reset")),
        "plan_7d_utilization": _float(get("7d-utilization")),
        "plan_7d_reset": _int(get("7d-reset")),
        "plan_binding_window": get("representative-claim"),
        "plan_overage_status": get("overage-status"),
        "plan_headers_json": json.dumps(found, sort_keys=True),
    }


def body_kind(headers: http.Headers) -> tuple[str, str]:
    """(content-type, content-encoding lower-cased, "" for identity), in one pass over the
    raw fields: ``Headers.get`` scans every field for each name, and this runs before a
    call's first byte."""
    content_type = encoding = ""
    for name, value in headers.fields:
        lowered = name.lower()
        if lowered == b"content-type" and not content_type:
            content_type = value.decode("utf-8", "surrogateescape")
        elif lowered == b"content-encoding" and not encoding:
            encoding = value.decode("utf-8", "surrogateescape").strip().lower()
    return content_type, "" if encoding == "identity" else encoding


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


def attribute_request(request: http.Request) -> attribution.Attribution:
    """The attribution of a request, with the garbage collector held off while its JSON is
    alive: Claude Code's 100–500 KB requests decode to thousands of containers, which would
    set off collections (each a scan of everything young: 0.2 ms, in some call's latency)
    although every one of them is freed, by reference counting, when the parse is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _attribute_request(request)  # the parsed body dies inside this call
    finally:
        if enabled:
            gc.enable()


def _attribute_request(request: http.Request) -> attribution.Attribution:
    try:
        body = json.loads(request.get_content(strict=False) or b"{}")
    except ValueError:
        body = {}
    return attribution.attribute(request.headers, body if isinstance(body, dict) else {})


class RequestTee:
    """The ``flow.request.stream`` callable of a metered call: each chunk of the body goes
    upstream as it arrives, and a copy is kept for reading the request's JSON afterwards.
    Called outside mitmproxy's hook error guard, so nothing may escape from here."""

    __slots__ = ("_chunks",)

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def __call__(self, chunk: bytes) -> bytes:
        self._chunks.append(chunk)
        return chunk

    def take(self) -> bytes:
        """The whole body, once (the copy is then the request's content alone)."""
        body, self._chunks = b"".join(self._chunks), []
        return body


_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


@dataclass
class Call:
    """One metered HTTP exchange and everything known about it so far."""

    uid: str
    started_ts: float
    host: str
    attribution: attribution.Attribution
    project: str | None
    state: MessageState = field(default_factory=MessageState)
    columns: dict[str, Any] = field(default_factory=dict)
    metering_error: str | None = None
    limit: caps.StreamLimit | None = None  # hard mode: where this stream is cut
    endpoint: providers.Endpoint = providers.MESSAGES  # Anthropic, Bedrock or Vertex
    #: The request, until its JSON has been read into ``attribution`` and ``project``.
    pending: http.Request | None = None
    #: The answer's headers, until their plan columns have been read into ``columns``.
    response_headers: http.Headers | None = None
    #: Refused by a cap before its body arrived; recorded when the body is in.
    blocked: bool = False


class StreamTee:
    """The ``flow.response.stream`` callable: forwards every chunk untouched, meters a copy.

    mitmproxy calls it outside its hook error guard, so nothing may escape from here.
    """

    __slots__ = ("_backlog", "_bedrock", "_cut", "_decoder", "_decompress", "_first", "_flow",
                 "_held", "_meter", "_on_start", "call", "failed")

    def __init__(self, meter: Meter, call: Call, encoding: str | None,
                 flow: http.HTTPFlow | None = None) -> None:
        self._meter = meter
        self.call = call
        wanted = USAGE_EVENTS | {"content_block_delta"} if call.limit else USAGE_EVENTS
        self._bedrock = call.endpoint.provider == providers.BEDROCK
        self._decoder: Any = (providers.BedrockStream(wanted) if self._bedrock
                              else SSEDecoder(wanted))
        self._decompress = incremental_decoder(encoding) if encoding else None
        self.failed = False
        self._on_start = True
        self._flow, self._held, self._cut = flow, b"", False
        self._first = True
        self._backlog: list[bytes] | None = None

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        if self.call.limit is not None:
            return self._limited(chunk)
        if self._backlog is not None:  # the first chunk is still to be metered: keep order
            self._backlog.append(chunk)
            if not chunk:
                self.drain()
            return chunk
        if self._first and chunk:
            # The first chunk goes on to the client before the meter reads it (its
            # message_start is the one event decoded before the first byte otherwise).
            self._first = False
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # outside mitmproxy's loop (unit tests): meter it now
                loop = None
            if loop is not None:
                self._backlog = [chunk]
                loop.call_soon(self.drain)
                return chunk
        self._meter_quietly(chunk)
        return chunk

    def drain(self) -> None:
        """Meter what was held back; the response and error hooks call it before the row."""
        backlog, self._backlog = self._backlog, None
        for chunk in backlog or ():
            self._meter_quietly(chunk)

    def _consume(self, chunk: bytes) -> None:
        if not chunk:  # end of the body (may come twice on HTTP/2 with mitmproxy 11)
            events = self._decoder.flush()
        else:
            if self._decompress is not None:
                chunk = self._decompress(chunk)
            events = self._decoder.feed(chunk)
        state = self.call.state
        for event in events:
            if event.data is not None:
                state.apply_event(event.name, event.data)
            if self.call.limit is not None:
                self.call.limit.observe(event.name, event.data, state.model, state.usage)
            if self._on_start and state.started:
                self._on_start = False
                self._meter.record_started(self.call)
        if self._bedrock and self._decoder.error:  # a bad CRC: metering stops, bytes flow on
            raise ValueError(f"event stream: {self._decoder.error}")

    # --- hard mode -------------------------------------------------------------------------

    def _limited(self, chunk: bytes) -> bytes | list[bytes]:
        """Hard mode: forward whole events only, so that a cut falls between two events;
        once the running cost reaches the cap, send an ``error`` event and end the body."""
        if self._cut:
            self._meter_quietly(chunk)  # late bytes are metered, never forwarded
            return []
        data, self._held = self._held + chunk, b""
        if not chunk:  # end of the body: an unterminated last event goes out as it is
            self._meter_quietly(data)
            self._meter_quietly(b"")
            return [data] if data else []
        if self._bedrock:  # whole event-stream frames, by their prelude lengths
            ends = eventstream.message_ends(data)
            last = ends[-1] if ends else 0
            if last < len(data) and (self.failed or eventstream.bad_prelude(data, last)):
                ends.append(len(data))  # framing lost: no boundary to wait for, hold nothing
        else:
            ends = [m.end() for m in _EVENT_END.finditer(data)]
        blocks = [data[a:b] for a, b in zip([0, *ends], ends, strict=False)]
        self._held = data[ends[-1]:] if ends else data
        out: list[bytes] = []
        for n, block in enumerate(blocks):
            out.append(block)
            self._meter_quietly(block)
            limit = self.call.limit
            if limit is not None and not self.failed and limit.crossed:
                out += self._cut_here(limit)
                self._meter_quietly(b"".join(blocks[n + 1:]) + self._held)
                self._held = b""
                break
        return out

    def _meter_quietly(self, chunk: bytes) -> None:
        """Meter a copy of ``chunk``; the first failure stops metering (the row is marked),
        never the bytes."""
        if self.failed:
            return
        try:
            self._consume(chunk)
        except Exception as exc:
            self.failed = True
            self.call.metering_error = f"stream parse failed: {type(exc).__name__}: {exc}"[:300]
            log.exception("ccmeter: metering a stream failed; bytes pass through unchanged")

    def _cut_here(self, limit: caps.StreamLimit) -> list[bytes]:
        """The bytes that end a cut stream; closes the upstream connection right after."""
        self._cut = True
        tail: list[bytes] = []
        try:
            message = limit.message(time.time())
            log.warning("ccmeter: hard cap: cut a stream: %s", message.removeprefix("ccmeter: "))
            state = self.call.state
            state.error_type, state.error_message = "cap_cut", message[:500]
            if state.usage is not None:  # bill what was streamed: estimated output tokens
                tokens = max(state.usage.output_tokens, limit.running.estimated_output_tokens)
                state.usage = replace(state.usage, output_tokens=tokens)
                self.call.metering_error = "cut by a hard cap; output tokens estimated"
            self._meter.record(self.call, status="incomplete")
            flow = self._flow
            if flow is not None and flow.response is not None:
                if "content-length" not in flow.response.headers:
                    tail.append(providers.bedrock_stream_error(message) if self._bedrock
                                else caps.sse_error_event(message))
                    if flow.request.http_version.startswith("HTTP/1"):
                        tail.append(b"")  # the chunked end marker: a clean end for the client
                asyncio.get_running_loop().call_soon(close_upstream, flow)
        except Exception:
            log.exception("ccmeter: cutting a stream failed")
        return tail


class Meter:
    """Meters every Claude Messages API call passing through mitmproxy."""

    def __init__(self) -> None:
        self.writer: store.CallWriter | None = None
        self.catalog = pricing.Catalog.bundled()
        self.calls: dict[str, Call] = {}
        #: When set (by ``ccmeter run``), the latest row of every call, for the exit summary.
        self.track_run = False
        self.final_rows: dict[str, dict[str, Any]] = {}
        self._projects_by_session: dict[str, str] = {}
        self._db_path: Path | None = None
        self._hosts: frozenset[str] = frozenset({ANTHROPIC_HOST})
        self._upstream: tuple[str, str, int, str] | None = None
        self.caps_policy = caps.Policy()
        self.guard: caps.Guard | None = None
        self._config_file: Path | None = None
        self._config_stamp: tuple[int, int] | None = None
        self._cap_pool: ThreadPoolExecutor | None = None
        self._pause_logged: float | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def load(self, loader: Any) -> None:
        loader.add_option(
            "ccmeter_home", str | None, None,
            "Folder for ccmeter's database and config (default: $CCMETER_HOME or the "
            "platform's user data folder).",
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
            self._upstream = None
            hosts = {ANTHROPIC_HOST, *(h.lower() for h in opts.ccmeter_hosts)}
            if opts.ccmeter_upstream:
                parts = urlsplit(opts.ccmeter_upstream)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise exceptions.OptionsError(
                        f"ccmeter_upstream must be an http(s) URL, got {opts.ccmeter_upstream!r}"
                    )
                port = parts.port or (443 if parts.scheme == "https" else 80)
                self._upstream = (parts.scheme, parts.hostname, port, parts.path.rstrip("/"))
                hosts.add(parts.hostname.lower())
            self._hosts = frozenset(hosts)
        if "ccmeter_home" in updated or self.writer is None:
            env = dict(os.environ)
            if opts.ccmeter_home:
                env["CCMETER_HOME"] = opts.ccmeter_home
            where = config.paths(env)
            self._load_prices(where)
            if self._db_path != where.db_file:
                self._close_writer()
                config.ensure_private_dir(where.data_dir)
                self.writer = store.CallWriter(where.db_file)
                self._db_path = where.db_file
                log.info("ccmeter: metering into %s", where.db_file)
                self.guard = caps.Guard(where.db_file)
            self._config_file, self._config_stamp = where.config_file, None
            self._reload_caps()

    def _load_prices(self, where: config.Paths) -> None:
        try:
            overrides = config.load_config(where).get("prices")
            self.catalog = pricing.Catalog.bundled()
            if overrides:
                self.catalog = self.catalog.with_overrides(overrides)
        except (config.CCMeterError, ValueError) as exc:
            log.warning("ccmeter: price overrides ignored: %s", exc)

    def running(self) -> None:
        # Everything built so far (mitmproxy, its addons, the catalog) lives as long as the
        # proxy: keep it out of the garbage collector's scans, which otherwise land in the
        # latency tail of whichever call is in flight.
        gc.freeze()
        # The row writer and the caps thread run Python too; hand the GIL back to the event
        # loop (the user's bytes) after 0.5 ms instead of the default 5 ms.
        sys.setswitchinterval(0.0005)

    def done(self) -> None:
        self._close_writer()

    def _close_writer(self) -> None:
        if self._cap_pool is not None:
            self._cap_pool.shutdown(wait=True)
            self._cap_pool = None
        if self.guard is not None:
            self.guard.close()
            self.guard = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # --- spending caps ---------------------------------------------------------------------

    def _reload_caps(self) -> None:
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
        try:
            where = config.Paths(self._config_file.parent, self._config_file.parent)
            policy = caps.parse_policy(config.load_config(where))
        except config.CCMeterError as exc:
            log.error("ccmeter: [caps] config not applied, keeping the previous caps: %s", exc)
            return
        if policy != self.caps_policy:
            log.info("ccmeter: caps: %d cap(s), mode %s, window %s%s", len(policy.caps),
                     policy.mode, policy.window,
                     f", paused until {caps.utc_iso(policy.paused_until)}"
                     if policy.paused(time.time()) and policy.paused_until else "")
        self.caps_policy = policy

    async def _enforce_caps(self, flow: http.HTTPFlow, call: Call) -> None:
        """Refuse the call here if a cap is reached; else reserve for it (off the loop)."""
        policy = self.caps_policy
        if not policy.enabled or self.guard is None:
            return
        if policy.paused(time.time()):
            if self._pause_logged != policy.paused_until:
                self._pause_logged = policy.paused_until
                log.warning("ccmeter: caps paused until %s; not enforcing",
                            caps.utc_iso(policy.paused_until or 0))
            return
        decision = None
        if self.writer is None or self.writer.idle:
            # Usually the check is a ~0.1 ms transaction: do it right here, unless it would
            # wait for a lock (another proxy writing) — then it moves off the event loop.
            decision = self.guard.check(policy, call_uid=call.uid, project=call.project,
                                        session_id=call.attribution.session_id,
                                        model=call.attribution.requested_model, wait=False)
        if decision is None:
            if self._cap_pool is None:
                self._cap_pool = ThreadPoolExecutor(1, thread_name_prefix="ccmeter-caps")
            decision = await asyncio.get_running_loop().run_in_executor(
                self._cap_pool, self._check_caps, policy, call)
        if not decision.allowed:
            self._refuse(flow, call, decision.message or "ccmeter: spending cap reached")
        elif policy.mode == "hard" and decision.headroom and call.attribution.stream:
            status, room = min(decision.headroom, key=lambda item: item[1])
            started = datetime.fromtimestamp(call.started_ts, UTC)
            prices = self.catalog.for_endpoint(call.endpoint.provider, call.endpoint.region_kind)
            call.limit = caps.StreamLimit(status, room, caps.RunningCost(prices, started),
                                          policy.tz)
            if call.endpoint.provider != providers.BEDROCK:  # never touch a signed request
                flow.request.headers["accept-encoding"] = "identity"  # so a cut can be written

    def _check_caps(self, policy: caps.Policy, call: Call) -> caps.Decision:
        """Runs on the caps thread: this process's queued rows first, then the check."""
        if self.writer is not None:
            self.writer.flush(2.0)  # returns at once when nothing is queued
        assert self.guard is not None
        decision = self.guard.check(policy, call_uid=call.uid, project=call.project,
                                    session_id=call.attribution.session_id,
                                    model=call.attribution.requested_model)
        assert decision is not None  # a waiting check always decides
        return decision

    def _refuse(self, flow: http.HTTPFlow, call: Call, message: str) -> None:
        """Answer the call ourselves. Refused as its headers came, it is recorded once its
        body is in (``request``); mitmproxy then sends this answer instead of the request."""
        flow.response = refusal_response(message, call.endpoint.provider)
        call.state.error_type, call.state.error_message = "cap_reached", message[:500]
        if flow.request.raw_content is None:  # only the headers so far
            call.blocked = True
            return
        self.calls.pop(flow.id, None)
        self.record(call, status="blocked", flow=flow)

    # --- which flows -----------------------------------------------------------------------

    def is_api_flow(self, flow: http.HTTPFlow, host: str) -> bool:
        """A flow to an Anthropic-compatible API: a known host, or anything in reverse mode.
        ``host`` is the request's ``pretty_host``, lower-cased."""
        if host in self._hosts or providers.is_cloud_host(host):
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
            self._reload_caps()
            tag = request.headers.get(attribution.PROJECT_HEADER)
            if tag is not None and endpoint.provider != providers.BEDROCK:
                del request.headers[attribution.PROJECT_HEADER]  # SigV4 may sign it
            try:
                call: Call | None = self._start_call(flow, endpoint, host, tag)
            except Exception:
                log.exception("ccmeter: could not read a messages request; passed on unmetered")
                self.calls.pop(flow.id, None)
                call = None
            if call is not None and not self._caps_need_request_body():
                try:
                    await self._enforce_caps(flow, call)
                except Exception:
                    log.exception("ccmeter: checking spending caps failed; the call goes on")
                if flow.response is None:  # not refused: send the body on as it comes
                    request.stream = RequestTee()
        self._route_upstream(flow, host)

    async def request(self, flow: http.HTTPFlow) -> None:
        """The whole request is here (and, when it streamed, already upstream)."""
        call = self.calls.get(flow.id)
        if call is None:
            return
        request = call.pending = flow.request
        if self._take_streamed_body(request):
            # The body has gone upstream; the meter reads its copy while the API thinks
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

    def _before_request_hook(self, call: Call, flow: http.HTTPFlow) -> None:
        """A call that ends before its ``request`` hook (upstream unreachable, an answer
        before the whole body went, the client gone mid-upload) is recorded with what there
        is: the headers, and the body if all of it arrived. (mitmproxy stamps
        ``timestamp_end`` just before the ``request`` hook.)"""
        if flow.request.timestamp_end is None:
            self._take_streamed_body(flow.request)
            call.pending = flow.request

    @staticmethod
    def _take_streamed_body(request: http.Request) -> bool:
        """Give a streamed request its body (the tee's copy), as a buffered one has it."""
        if not isinstance(request.stream, RequestTee):
            return False
        body = request.stream.take()
        if request.raw_content is None:
            request.raw_content = body
        return True

    def _route_upstream(self, flow: http.HTTPFlow, original: str) -> None:
        if self._upstream is None:
            return
        if providers.is_cloud_host(original):
            # Only the destination changes: path, Host and every signed header stay as sent.
            scheme, host, port, prefix = self._upstream
            headers, authority = flow.request.headers.copy(), flow.request.authority
            flow.request.scheme, flow.request.host, flow.request.port = scheme, host, port
            flow.request.headers, flow.request.authority = headers, authority
            flow.request.path = prefix + flow.request.path
            return
        if original != ANTHROPIC_HOST:
            return
        scheme, host, port, prefix = self._upstream
        flow.request.scheme = scheme
        flow.request.host = host
        flow.request.port = port
        flow.request.path = prefix + flow.request.path
        flow.request.headers["host"] = host if port in (80, 443) else f"{host}:{port}"

    def _start_call(self, flow: http.HTTPFlow, endpoint: providers.Endpoint, host: str,
                    tag: str | None) -> Call:
        """Keep a Call for this flow; ``tag`` is the launcher's project header, if the
        request had one. Its body (100–500 KB from Claude Code) is read in ``request``."""
        tag = (tag or "").strip()
        call = Call(
            uid=flow.id,
            started_ts=flow.request.timestamp_start,
            host=host,
            attribution=attribution.Attribution(),
            project=tag[:200] or None,
            endpoint=endpoint,
        )
        self.calls[flow.id] = call
        return call

    def _caps_need_request_body(self) -> bool:
        """Only per-project, per-session and per-model cap rules and hard mode read the
        request's contents before it is forwarded; global caps need nothing from it."""
        policy = self.caps_policy
        return policy.enabled and policy.needs_request_details

    def _read_request_quietly(self, call: Call) -> None:
        try:
            self._read_request(call)
        except Exception:
            log.exception("ccmeter: could not read a messages request")

    def _read_request(self, call: Call) -> None:
        """Fill in the call's attribution from its request (once; idempotent)."""
        request, call.pending = call.pending, None
        if request is None:
            return
        who = attribute_request(request)
        endpoint = call.endpoint
        if endpoint.provider != providers.ANTHROPIC:  # the model and mode are in the URL
            who = replace(who, requested_model=endpoint.model,
                          stream=who.stream if endpoint.stream is None else endpoint.stream)
        # The launcher's tag header was read (and removed from the request) up front.
        project = call.project or who.project or ctx.options.ccmeter_project
        if not project and who.working_dir:
            project = attribution.project_from_dir(who.working_dir, git_top(who.working_dir))
        call.attribution = who
        call.project = self._session_project(who.session_id, project)

    def _session_project(self, session_id: str | None, project: str | None) -> str | None:
        """Calls without a working directory in their prompt (title and quota calls) take
        the project their session's other calls named."""
        if session_id is None:
            return project
        if project:
            self._projects_by_session[session_id] = project
            if len(self._projects_by_session) > 10_000:  # forget the oldest sessions
                del self._projects_by_session[next(iter(self._projects_by_session))]
            return project
        return self._projects_by_session.get(session_id)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = self.calls.get(flow.id)
        if call is None or flow.response is None:
            return
        try:
            # The plan headers are read with the row, after the first byte is on its way.
            call.response_headers = flow.response.headers
            content_type, encoding = body_kind(flow.response.headers)
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
            self._before_request_hook(call, flow)
            if isinstance(flow.response.stream, StreamTee):
                flow.response.stream.drain()
            else:
                self._read_json_body(call, flow.response)
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

    def _read_json_body(self, call: Call, response: http.Response) -> None:
        try:
            content = response.get_content(strict=True)
        except ValueError as exc:
            call.metering_error = f"cannot decode body: {exc}"[:300]
            return
        if not content:
            return
        try:
            body = json.loads(content)
        except ValueError:
            if response.status_code < 400:
                call.metering_error = "answer is neither an event stream nor JSON"
            return
        provider = call.endpoint.provider
        if response.status_code >= 400 and provider != providers.ANTHROPIC:
            kind, text = providers.error_of(provider, response.status_code, response.headers, body)
            call.state.error_type, call.state.error_message = kind[:100], (text or "")[:500] or None
            return
        if isinstance(body, dict):
            call.state.apply_message(body)
        if provider == providers.BEDROCK and call.state.usage is None:
            counts = providers.usage_from_headers(response.headers)  # x-amzn-bedrock-*-count
            if counts:
                call.state.usage = merge_usage(None, counts)

    def error(self, flow: http.HTTPFlow) -> None:
        call = self.calls.pop(flow.id, None)
        if call is None:
            return
        try:
            if flow.response is not None and isinstance(flow.response.stream, StreamTee):
                flow.response.stream.drain()
            state = call.state
            self._before_request_hook(call, flow)
            if call.blocked:  # refused; the client went away before sending its body
                self.record(call, status="blocked", flow=flow)
                return
            status = "incomplete" if state.started else "upstream_error"
            if not state.error_type:
                state.error_type = "connection" if flow.response is None else "stream_cut"
            state.error_message = flow.error.msg[:300] if flow.error else None
            self.record(call, status=status, flow=flow)
        except Exception:
            log.exception("ccmeter: recording a failed call failed")

    # --- the row ---------------------------------------------------------------------------

    def record(self, call: Call, *, status: str, flow: http.HTTPFlow | None = None) -> None:
        """Queue the call's current row; called at message_start and again at the end."""
        if self.writer is None:
            return
        row = self.build_row(call, status=status, flow=flow)
        if flow is not None:  # the final row: its cap reservation goes with it
            row[store.RELEASE_RESERVATION] = True
        self.writer.put(row)
        if self.track_run:
            self.final_rows[call.uid] = {
                k: row.get(k) for k in ("session_id", "cost_picousd", "status", "model")
            }

    def record_started(self, call: Call) -> None:
        """The row at message_start (its input tokens are known, and priced), so that a
        stream still running is on record — for the caps of other calls, for ``watch`` and
        the status line, and in case the proxy dies mid-stream. Written half a second later,
        and only if the call is still running: a shorter call's final row says everything,
        and the moments after a first byte belong to the client that is waiting for it
        (on a busy machine the writer's work then held the first byte back from the client
        by a millisecond or more)."""
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
        if call.pending is not None:
            self._read_request(call)
        if call.response_headers is not None:
            call.columns.update(plan_columns(call.response_headers))
            call.response_headers = None
        who, state = call.attribution, call.state
        usage = state.usage
        model = state.model or who.requested_model
        now = time.time()
        row: dict[str, Any] = {
            "call_uid": call.uid,
            "started_at": _iso(call.started_ts),
            "started_ts": call.started_ts,
            "provider": call.endpoint.provider,
            "host": call.host,
            "endpoint": call.endpoint.kind,
            "session_id": who.session_id,
            "project": call.project,
            "working_dir_name": Path(who.working_dir).name if who.working_dir else None,
            "agent_id": who.agent_id,
            "parent_agent_id": who.parent_agent_id,
            "call_kind": who.call_kind,
            "client_name": who.client_name,
            "client_version": who.client_version,
            "auth_kind": who.auth_kind,
            "requested_model": who.requested_model,
            "model": model,
            "stream": int(who.stream),
            "status": status,
            "stop_reason": state.stop_reason,
            "error_type": state.error_type,
            "message_id": state.message_id,
            "metering_error": call.metering_error,
            "updated_ts": now,
            **call.columns,
        }
        if flow is not None and flow.response is not None:
            response = flow.response
            row["http_status"] = response.status_code
            row["request_id"] = (response.headers.get("request-id")
                                 or response.headers.get("x-amzn-requestid"))
            if response.timestamp_start:
                row["ttfb_ms"] = round((response.timestamp_start - call.started_ts) * 1000, 3)
            end = response.timestamp_end or now
            row["duration_ms"] = round((end - call.started_ts) * 1000, 3)
        elif flow is not None:
            row["duration_ms"] = round((now - call.started_ts) * 1000, 3)
        if usage is not None:
            row.update(
                input_tokens=usage.input_tokens,
                cache_write_5m_tokens=usage.cache_write_5m_tokens,
                cache_write_1h_tokens=usage.cache_write_1h_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                output_tokens=usage.output_tokens,
                thinking_tokens=usage.thinking_tokens,
                web_search_requests=usage.web_search_requests,
                web_fetch_requests=usage.web_fetch_requests,
                service_tier=usage.service_tier,
                inference_geo=usage.inference_geo,
                speed=usage.speed,
                hops_json=json.dumps([asdict(h) for h in usage.hops]) if usage.hops else None,
            )
        self._price_into(row, model, usage, call)
        if status == "blocked":  # refused by a cap: never sent, never billed
            row.update(cost_picousd=0, pricing_note="refused by a ccmeter spending cap")
        return row

    def _price_into(self, row: dict[str, Any], model: str | None, usage: Any, call: Call) -> None:
        subscription = call.attribution.auth_kind == "subscription" or bool(
            call.columns.get("plan_headers_json")
        )
        row["cost_basis"] = "subscription_list_equivalent" if subscription else "api"
        if usage is None:
            # Nothing billed yet (an error before message_start): zero if the model is known.
            from ccmeter.usage import Usage

            if model is None:  # not even the model: the call ended before its body was read
                row.update(cost_picousd=0, pricing_note="no usage: nothing was billed")
                return
            usage = Usage()
        try:
            price = self.catalog.price(model, usage, datetime.fromtimestamp(call.started_ts, UTC),
                                       provider=call.endpoint.provider,
                                       region_kind=call.endpoint.region_kind)
        except Exception as exc:
            log.exception("ccmeter: pricing failed for model %r", model)
            row.update(cost_picousd=None, pricing_note=f"pricing failed: {exc}"[:200])
            return
        row.update(
            cost_picousd=price.cost_picousd,
            catalog_version=price.catalog_version,
            pricing_note=price.note,
        )


addons = [Meter()]
