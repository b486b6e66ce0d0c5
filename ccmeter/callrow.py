"""A metered call, and the database row it becomes: a pure function of the call.

:class:`Call` is everything known about one exchange so far (who sent it, what the answer's
events said, the plan headers). :func:`build_row` turns it into the ``calls`` row the writer
stores, priced with the catalog; it reads the call and the flow, and changes neither.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import http

from ccmeter import attribution, pricing, providers, untrusted
from ccmeter.caps.hardmode import StreamLimit
from ccmeter.usage import MessageState, Usage

log = logging.getLogger(__name__)

PLAN_HEADER_PREFIX = "anthropic-ratelimit-unified-"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _float(value: str | None) -> float | None:
    """A header's number; None for no number, or for nan/inf (a header is untrusted)."""
    try:
        number = float(value[:64]) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _int(value: str | None) -> int | None:
    number = _float(value)
    return int(number) if number is not None and abs(number) < 2**53 else None


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
        "plan_status": untrusted.text(get("status"), 64),
        "plan_5h_utilization": _float(get("5h-utilization")),
        "plan_5h_reset": _int(get("5h-reset")),
        "plan_7d_utilization": _float(get("7d-utilization")),
        "plan_7d_reset": _int(get("7d-reset")),
        "plan_binding_window": untrusted.text(get("representative-claim"), 64),
        "plan_overage_status": untrusted.text(get("overage-status"), 64),
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
    limit: StreamLimit | None = None  # hard mode: where this stream is cut
    endpoint: providers.Endpoint = providers.MESSAGES  # Anthropic, Bedrock or Vertex
    #: The request, until its JSON has been read into ``attribution`` and ``project``.
    pending: http.Request | None = None
    #: The answer's headers, until their plan columns have been read into ``columns``.
    response_headers: http.Headers | None = None
    #: Refused by a cap before its body arrived; recorded when the body is in.
    blocked: bool = False
    #: The ``ccmeter run`` that sent it (from the proxy URL's credentials), and the project
    #: that run tags its calls with (see :mod:`ccmeter.rundesk`).
    run_id: str | None = None
    run_project: str | None = None
    #: The session's repeats as of this request (a :class:`ccmeter.loops.Seen`), for the
    #: loop cap; set by :class:`ccmeter.cachewatch.CacheWatch` when the request is read.
    loop_seen: Any = None
    #: The request's cache shape (:func:`ccmeter.cachekeys.shape`), until the answer's usage
    #: has taught the forecaster (see :class:`ccmeter.cachewatch.CacheWatch`).
    shape: Any = None


def read_plan_headers(call: Call) -> None:
    """Move the answer's plan headers into the call's columns (once; done with the row,
    after the first byte is on its way)."""
    if call.response_headers is not None:
        call.columns.update(plan_columns(call.response_headers))
        call.response_headers = None


def build_row(call: Call, *, status: str, catalog: pricing.Catalog, now: float,
              flow: http.HTTPFlow | None = None) -> dict[str, Any]:
    """The ``calls`` row of ``call`` as it stands at ``now``; ``flow`` is given for the
    final row (HTTP status, request id, timings)."""
    who, state = call.attribution, call.state
    usage = state.usage
    model = state.model or who.requested_model
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
        "fallback_from_model": state.fallback_from,
        "run_id": call.run_id,
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
        row["request_id"] = untrusted.text(response.headers.get("request-id")
                                           or response.headers.get("x-amzn-requestid"), 128)
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
    price_into(row, catalog, model, usage, call)
    if status == "blocked":  # refused by a cap: never sent, never billed
        row.update(cost_picousd=0, pricing_note="refused by a ccmeter spending cap")
    return row


def price_into(row: dict[str, Any], catalog: pricing.Catalog, model: str | None,
               usage: Usage | None, call: Call) -> None:
    """The row's cost columns (``cost_picousd`` NULL when pricing failed, never $0)."""
    subscription = call.attribution.auth_kind == "subscription" or bool(
        call.columns.get("plan_headers_json")
    )
    row["cost_basis"] = "subscription_list_equivalent" if subscription else "api"
    if usage is None:
        if 200 <= (row.get("http_status") or 0) < 300:
            # An answer came, but no usage could be read from it: unknown, never $0.
            row.update(cost_picousd=None, pricing_note="no usage in the answer: cost unknown")
            return
        # Nothing billed yet (an error before message_start): zero if the model is known.
        if model is None:  # not even the model: the call ended before its body was read
            row.update(cost_picousd=0, pricing_note="no usage: nothing was billed")
            return
        usage = Usage()
    try:
        price = catalog.price(model, usage, datetime.fromtimestamp(call.started_ts, UTC),
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
