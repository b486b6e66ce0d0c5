"""The mitmproxy addon: glue between the proxy's hooks and ccmeter's pure modules.

Data flows one way: bytes -> tee -> SSE decoder -> usage state -> price -> call writer.
Two rules shape every line here:
- Never break the user's session. The stream tee catches everything and returns each
  chunk unchanged; a metering failure only marks the row (``metering_error``).
- Never store a secret. Only the kind of auth, the session id and the working folder's
  name are read from a request; prompt text is never kept.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http

from ccmeter import attribution, config, pricing, store
from ccmeter.decompress import incremental_decoder
from ccmeter.sse import SSEDecoder
from ccmeter.usage import MessageState

log = logging.getLogger(__name__)

ANTHROPIC_HOST = "api.anthropic.com"
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


class StreamTee:
    """The ``flow.response.stream`` callable: forwards every chunk untouched, meters a copy.

    mitmproxy calls it outside its hook error guard, so nothing may escape from here.
    """

    __slots__ = ("_decoder", "_decompress", "_meter", "_on_start", "call", "failed")

    def __init__(self, meter: Meter, call: Call, encoding: str | None) -> None:
        self._meter = meter
        self.call = call
        self._decoder = SSEDecoder()
        self._decompress = incremental_decoder(encoding) if encoding else None
        self.failed = False
        self._on_start = True

    def __call__(self, chunk: bytes) -> bytes:
        if not self.failed:
            try:
                self._consume(chunk)
            except Exception as exc:
                self.failed = True
                self.call.metering_error = f"stream parse failed: {type(exc).__name__}: {exc}"[:300]
                log.exception("ccmeter: metering a stream failed; bytes pass through unchanged")
        return chunk

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
            if self._on_start and state.started:
                self._on_start = False
                self._meter.record(self.call, status="incomplete")


class Meter:
    """Meters every Claude Messages API call passing through mitmproxy."""

    def __init__(self) -> None:
        self.writer: store.CallWriter | None = None
        self.catalog = pricing.Catalog.bundled()
        self.calls: dict[str, Call] = {}
        #: When set (by ``ccmeter run``), the latest row of every call, for the exit summary.
        self.track_run = False
        self.final_rows: dict[str, dict[str, Any]] = {}
        self._db_path: Path | None = None
        self._hosts: frozenset[str] = frozenset({ANTHROPIC_HOST})
        self._upstream: tuple[str, str, int, str] | None = None

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
            env = dict(__import__("os").environ)
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

    def _load_prices(self, where: config.Paths) -> None:
        try:
            overrides = config.load_config(where).get("prices")
            self.catalog = pricing.Catalog.bundled()
            if overrides:
                self.catalog = self.catalog.with_overrides(overrides)
        except (config.CCMeterError, ValueError) as exc:
            log.warning("ccmeter: price overrides ignored: %s", exc)

    def done(self) -> None:
        self._close_writer()

    def _close_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # --- which flows -----------------------------------------------------------------------

    def is_api_flow(self, flow: http.HTTPFlow) -> bool:
        """A flow to an Anthropic-compatible API: a known host, or anything in reverse mode."""
        if flow.request.pretty_host.lower() in self._hosts:
            return True
        mode = getattr(flow.client_conn, "proxy_mode", None)
        return type(mode).__name__ == "ReverseMode"

    def is_metered(self, flow: http.HTTPFlow) -> bool:
        return self.is_api_flow(flow) and is_messages_call(flow.request.method, flow.request.path)

    # --- hooks -----------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if not self.is_api_flow(flow):
            return
        if is_messages_call(flow.request.method, flow.request.path):
            try:
                self._start_call(flow)
            except Exception:
                log.exception("ccmeter: could not read a messages request; passed on unmetered")
            flow.request.headers.pop(attribution.PROJECT_HEADER, None)
        self._route_upstream(flow)

    def _route_upstream(self, flow: http.HTTPFlow) -> None:
        if self._upstream is None or flow.request.pretty_host.lower() != ANTHROPIC_HOST:
            return
        scheme, host, port, prefix = self._upstream
        flow.request.scheme = scheme
        flow.request.host = host
        flow.request.port = port
        flow.request.path = prefix + flow.request.path
        flow.request.headers["host"] = host if port in (80, 443) else f"{host}:{port}"

    def _start_call(self, flow: http.HTTPFlow) -> None:
        try:
            body = json.loads(flow.request.get_content(strict=False) or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        who = attribution.attribute(flow.request.headers, body)
        project = who.project or ctx.options.ccmeter_project
        if not project and who.working_dir:
            project = attribution.project_from_dir(who.working_dir, git_top(who.working_dir))
        self.calls[flow.id] = Call(
            uid=flow.id,
            started_ts=flow.request.timestamp_start,
            host=flow.request.pretty_host,
            attribution=who,
            project=project,
        )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = self.calls.get(flow.id)
        if call is None or flow.response is None:
            return
        try:
            call.columns.update(plan_columns(flow.response.headers))
            content_type = flow.response.headers.get("content-type", "")
            if content_type.startswith("text/event-stream"):
                encoding = flow.response.headers.get("content-encoding", "").strip().lower()
                if encoding == "identity":
                    encoding = ""
                flow.response.stream = StreamTee(self, call, encoding or None)
        except Exception as exc:
            call.metering_error = f"responseheaders: {type(exc).__name__}: {exc}"[:300]
            log.exception("ccmeter: cannot meter this answer; streaming it through unmetered")
            flow.response.stream = True

    def response(self, flow: http.HTTPFlow) -> None:
        call = self.calls.pop(flow.id, None)
        if call is None or flow.response is None:
            return
        try:
            if not isinstance(flow.response.stream, StreamTee):
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
        if isinstance(body, dict):
            call.state.apply_message(body)

    def error(self, flow: http.HTTPFlow) -> None:
        call = self.calls.pop(flow.id, None)
        if call is None:
            return
        try:
            state = call.state
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
        self.writer.put(row)
        if self.track_run:
            self.final_rows[call.uid] = {
                k: row.get(k) for k in ("session_id", "cost_picousd", "status", "model")
            }

    def build_row(self, call: Call, *, status: str, flow: http.HTTPFlow | None) -> dict[str, Any]:
        who, state = call.attribution, call.state
        usage = state.usage
        model = state.model or who.requested_model
        now = time.time()
        row: dict[str, Any] = {
            "call_uid": call.uid,
            "started_at": _iso(call.started_ts),
            "started_ts": call.started_ts,
            "provider": "anthropic",
            "host": call.host,
            "endpoint": "messages",
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
            row["request_id"] = response.headers.get("request-id")
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
        return row

    def _price_into(self, row: dict[str, Any], model: str | None, usage: Any, call: Call) -> None:
        subscription = call.attribution.auth_kind == "subscription" or bool(
            call.columns.get("plan_headers_json")
        )
        row["cost_basis"] = "subscription_list_equivalent" if subscription else "api"
        if usage is None:
            # Nothing billed yet (an error before message_start): zero if the model is known.
            from ccmeter.usage import Usage

            usage = Usage()
        try:
            price = self.catalog.price(model, usage, datetime.fromtimestamp(call.started_ts, UTC))
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
