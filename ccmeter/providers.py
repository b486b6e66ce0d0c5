"""Which provider and endpoint a request goes to, and how each provider's answers are read.

Pure: method, host and path in, an :class:`Endpoint` out; bytes in, Anthropic events out. No
mitmproxy here. The matching rules follow the per-provider table in the protocol notes (§6):

- **Anthropic**: ``POST …/v1/messages`` (not ``count_tokens``, not ``batches``).
- **Amazon Bedrock**: ``POST …/model/{id}/invoke`` and ``…/invoke-with-response-stream``.
  The model is known only from the (percent-encoded) path: a base id, a geographic or
  ``global.`` inference profile, or an ARN. ``…/count-tokens`` is free and not metered, and
  so are the Converse endpoints, which Claude Code and the Anthropic Bedrock SDK never call.
- **Google Vertex AI**: ``POST …/publishers/anthropic/models/{model}:streamRawPredict`` and
  ``:rawPredict``; ``count-tokens:rawPredict`` is free and not metered.

The *endpoint kind* decides the cloud price: ``global`` endpoints are at list price, while
``regional`` (one region) and ``multi-region`` (a geography such as ``us.`` on Bedrock, or
``us``/``eu`` on Vertex) cost 10 % more for Sonnet 4.5, Haiku 4.5, Opus 4.5 and later models.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ccmeter import untrusted
from ccmeter.eventstream import EventStreamDecoder, Message, exception_message
from ccmeter.sse import USAGE_EVENTS, Event

ANTHROPIC, BEDROCK, VERTEX = "anthropic", "bedrock", "vertex"
GLOBAL, MULTI_REGION, REGIONAL = "global", "multi-region", "regional"

EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
BEDROCK_THROTTLING = "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
METRICS_KEY = "amazon-bedrock-invocationMetrics"

_HOSTS = {
    BEDROCK: r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?",
    VERTEX: r"(?:([a-z0-9-]+)-)?aiplatform\.googleapis\.com"
            r"|aiplatform\.([a-z]+)\.rep\.googleapis\.com",
}
_BEDROCK_HOST = re.compile(rf"^(?:{_HOSTS[BEDROCK]})$")
_VERTEX_HOST = re.compile(rf"^(?:{_HOSTS[VERTEX]})$")
#: Longest model id read from a URL (Bedrock ARNs are ~100 characters).
MAX_MODEL_ID = 256
_BEDROCK_PATH = re.compile(
    r"/model/(?P<id>.+)/(?P<op>invoke-with-response-stream|invoke|count-tokens"
    r"|converse-stream|converse)$"
)
_VERTEX_PATH = re.compile(
    r"/publishers/anthropic/models/(?P<model>[^/:]+):(?P<op>streamRawPredict|rawPredict)$"
)
_VERTEX_LOCATION = re.compile(r"/locations/([^/]+)/")
#: Bedrock geographic inference-profile prefixes (multi-region); ``global.`` is global.
_BEDROCK_GEOS = ("us.", "eu.", "apac.", "au.", "jp.", "ca.", "us-gov.")
_VERTEX_MULTI_REGIONS = frozenset({"us", "eu"})
_ARN = re.compile(
    r"^arn:aws[a-z-]*:bedrock:(?P<region>[a-z0-9-]*):[0-9]*:(?P<kind>[a-z-]+)/(?P<id>.+)$"
)
_SNIFF_TYPE = re.compile(rb'^\s*\{\s*"type"\s*:\s*"([A-Za-z0-9_]+)"')


@dataclass(frozen=True)
class Endpoint:
    """A metered Claude call: who serves it and how it is priced.

    ``model`` is the id named in the URL (Bedrock, Vertex), URL-decoded; None when the model
    is only in the body (Anthropic) or the URL names none (an application inference profile).
    ``stream`` is what the operation implies (None: the body says, as on Anthropic's API).
    """

    provider: str
    operation: str
    model: str | None = None
    region: str | None = None
    region_kind: str | None = None
    stream: bool | None = None

    @property
    def kind(self) -> str:
        """What the row's ``endpoint`` column says: ``messages``, or the cloud endpoint kind
        (``global`` / ``multi-region`` / ``regional`` / ``unknown``)."""
        if self.provider == ANTHROPIC:
            return "messages"
        return self.region_kind or "unknown"


#: The endpoint of every first-party call (and of rows written before providers existed).
MESSAGES = Endpoint(ANTHROPIC, "messages")


def host_patterns(provider: str) -> list[str]:
    """``allow_hosts`` regexes (with an optional port) for a cloud's runtime hosts."""
    return [rf"^(?:{_HOSTS[provider]})(:\d+)?$"]


def is_bedrock_host(host: str) -> bool:
    return _BEDROCK_HOST.match(host.lower()) is not None


def is_vertex_host(host: str) -> bool:
    return _VERTEX_HOST.match(host.lower()) is not None


def is_cloud_host(host: str) -> bool:
    """A Bedrock runtime or Vertex AI host, metered without any configuration."""
    return is_bedrock_host(host) or is_vertex_host(host)


def _route(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0]


def classify(method: str, host: str, path: str) -> Endpoint | None:
    """The metered endpoint a request is, or None (not a billed Claude call).

    The host only fills in the region: the path alone decides, so a gateway at any base URL
    (``ANTHROPIC_BEDROCK_BASE_URL``, ``ANTHROPIC_VERTEX_BASE_URL``, reverse mode) is metered
    the same way as the providers' own hosts.
    """
    if method != "POST":
        return None
    route = _route(path).rstrip("/")
    if route.endswith("/v1/messages"):
        return MESSAGES
    if match := _BEDROCK_PATH.search(route):
        if match["op"] not in ("invoke", "invoke-with-response-stream"):
            return None  # count-tokens is free; Converse is never used by Claude Code
        return bedrock_endpoint(_model_in_path(match["id"]), match["op"], host)
    if match := _VERTEX_PATH.search(route):
        model = _model_in_path(match["model"])
        if model == "count-tokens":
            return None
        return vertex_endpoint(model, match["op"], host, route)
    return None


def _model_in_path(quoted: str) -> str:
    """A model id (or ARN) from a URL path, as it may be stored: cut, unquoted, cleaned."""
    return untrusted.text(unquote(quoted[:3 * MAX_MODEL_ID]), MAX_MODEL_ID) or "?"


def bedrock_endpoint(model_id: str, operation: str, host: str = "") -> Endpoint:
    host_match = _BEDROCK_HOST.match(host.lower())
    region = host_match[1] if host_match else None
    model: str | None = model_id
    kind: str | None
    arn = _ARN.match(model_id)
    profile = model_id
    if arn:
        region = arn["region"] or region
        profile = arn["id"]
        if arn["kind"] == "application-inference-profile":
            model = None  # names no model: take it from message_start
            profile = ""
    lowered = profile.lower()
    if not lowered:
        kind = None
    elif lowered.startswith("global."):
        kind = GLOBAL
    elif lowered.startswith(_BEDROCK_GEOS):
        kind = MULTI_REGION
    else:
        # A bare ``anthropic.…`` id is an in-region (on-demand) invocation.
        kind = REGIONAL
    return Endpoint(BEDROCK, operation, model, region, kind,
                    stream=operation == "invoke-with-response-stream")


def vertex_endpoint(model: str, operation: str, host: str = "", route: str = "") -> Endpoint:
    region = None
    if location := _VERTEX_LOCATION.search(route):
        region = location[1].lower()
    elif host_match := _VERTEX_HOST.match(host.lower()):
        region = host_match[1] or host_match[2] or GLOBAL
    if region is None:
        kind = None
    elif region == GLOBAL:
        kind = GLOBAL
    elif region in _VERTEX_MULTI_REGIONS:
        kind = MULTI_REGION
    else:
        kind = REGIONAL
    return Endpoint(VERTEX, operation, model, region, kind,
                    stream=operation == "streamRawPredict")


# --- Bedrock answers ------------------------------------------------------------------------


@dataclass
class BedrockStream:
    """Bedrock's event stream in, Anthropic stream events out (as :class:`ccmeter.sse.Event`).

    Each ``chunk`` message carries ``{"bytes": base64(one Anthropic event JSON), "p": …}``.
    ``exception`` and ``error`` messages become ``error`` events. When no Anthropic event
    carried a ``usage``, the counts in ``amazon-bedrock-invocationMetrics`` (sent with the
    last event) stand in for it as a synthetic ``message_delta``. A broken frame sets
    ``error``; the caller marks the row, and the bytes flow on untouched either way.
    """

    wanted: frozenset[str] = USAGE_EVENTS
    decoder: EventStreamDecoder = field(default_factory=EventStreamDecoder)
    metrics: dict[str, Any] | None = None
    saw_usage: bool = False
    skipped: int = 0

    @property
    def error(self) -> str | None:
        return self.decoder.error

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        for message in self.decoder.feed(chunk):
            events.extend(self._events(message))
        return events

    def flush(self) -> list[Event]:
        left = self.decoder.flush()
        if left and self.decoder.error is None:
            self.decoder.error = f"stream ended inside a frame ({left} bytes)"
        return []

    def _events(self, message: Message) -> list[Event]:
        kind = message.message_type
        if kind in ("exception", "error"):
            return [_error_event(message)]
        if kind != "event" or message.event_type != "chunk":
            self.skipped += 1
            return []
        try:
            outer = untrusted.loads(message.payload)
            raw = base64.b64decode(outer["bytes"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            self.skipped += 1  # not a PayloadPart (a gateway keep-alive, say): skipped
            return []
        sniff = _SNIFF_TYPE.match(raw)
        if sniff and sniff[1].decode() not in self.wanted:
            return [Event(sniff[1].decode(), None)]  # mostly text deltas: no JSON work
        try:
            data = untrusted.loads(raw)
        except ValueError:
            self.skipped += 1
            return []
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            self.skipped += 1
            return []
        return self._with_fallback(data)

    def _with_fallback(self, data: dict[str, Any]) -> list[Event]:
        name = data["type"]
        message = data.get("message")
        if isinstance(data.get("usage"), dict) or (
            isinstance(message, dict) and isinstance(message.get("usage"), dict)
        ):
            self.saw_usage = True
        metrics = data.get(METRICS_KEY)
        if not isinstance(metrics, dict):
            return [Event(name, data)]
        self.metrics = metrics
        if self.saw_usage:
            return [Event(name, data)]
        usage = usage_from_metrics(metrics)
        if not usage:
            return [Event(name, data)]
        self.saw_usage = True
        delta = {"type": "message_delta", "delta": {}, "usage": usage}
        return [Event("message_delta", delta), Event(name, data)]


def usage_from_metrics(metrics: dict[str, Any]) -> dict[str, int]:
    """Anthropic ``usage`` fields from Bedrock's invocation metrics (or its count headers)."""
    names = {
        "inputTokenCount": "input_tokens",
        "outputTokenCount": "output_tokens",
        "cacheReadInputTokenCount": "cache_read_input_tokens",
        "cacheWriteInputTokenCount": "cache_creation_input_tokens",
    }
    usage = {}
    for source, target in names.items():
        value = metrics.get(source)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            usage[target] = value
    return usage


METRIC_HEADERS = {
    "x-amzn-bedrock-input-token-count": "inputTokenCount",
    "x-amzn-bedrock-output-token-count": "outputTokenCount",
    "x-amzn-bedrock-cache-read-input-token-count": "cacheReadInputTokenCount",
    "x-amzn-bedrock-cache-write-input-token-count": "cacheWriteInputTokenCount",
}


def usage_from_headers(headers: Any) -> dict[str, int]:
    """Anthropic ``usage`` fields from a non-streaming ``/invoke`` answer's count headers."""
    return usage_from_metrics(
        {name: headers.get(header) for header, name in METRIC_HEADERS.items()}
    )


def _error_event(message: Message) -> Event:
    kind = message.exception_type or message.header(":error-code") or "exception"
    text = message.header(":error-message")
    if text is None:
        try:
            body = untrusted.loads(message.payload)
            text = body.get("message") or body.get("Message") if isinstance(body, dict) else None
        except ValueError:
            text = message.payload[:500].decode("utf-8", "replace") or None
    error = {"type": kind, "message": text if isinstance(text, str) else None}
    return Event("error", {"type": "error", "error": error})


def error_of(provider: str, status: int, headers: Any, body: Any) -> tuple[str, str | None]:
    """The error type and message of a failed (status >= 400) answer, per provider shape."""
    if provider == BEDROCK:
        kind = (headers.get("x-amzn-errortype") or "").split(":", 1)[0]
        text = body.get("message") or body.get("Message") if isinstance(body, dict) else None
        return kind or f"http_{status}", text if isinstance(text, str) else None
    if isinstance(body, list) and body:  # Google APIs sometimes wrap the error in a list
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        kind = error.get("type") or error.get("status")  # Anthropic, else Google's shape
        text = error.get("message")
        return (kind if isinstance(kind, str) and kind else f"http_{status}",
                text if isinstance(text, str) else None)
    return f"http_{status}", None


# --- refusals: a spending cap answers in each SDK's own shape -------------------------------


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer the proxy sends instead of the provider's (no mitmproxy types here)."""

    status: int
    headers: dict[str, str]
    body: bytes


def refusal(provider: str, message: str) -> Refusal:
    """A 429 the provider's SDK reads as a rate limit, shows at once and does not retry.

    ``x-should-retry: false`` is what stops the retries: the Anthropic SDKs (and the Bedrock
    and Vertex clients built on them) check it before the status code.
    """
    token = uuid.uuid4()
    body: dict[str, Any]
    if provider == BEDROCK:
        body = {"message": message}
        headers = {
            "content-type": "application/json",
            "x-amzn-errortype": BEDROCK_THROTTLING,
            "x-amzn-requestid": str(token),
            "x-should-retry": "false",
        }
    else:  # Anthropic and Vertex: Anthropic's error shape (Vertex passes it through)
        body = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
        headers = {
            "content-type": "application/json",
            "x-should-retry": "false",
            "request-id": f"ccmeter-{token.hex[:24]}",
        }
    return Refusal(429, headers, json.dumps(body).encode())


def upstream_unreachable(provider: str, message: str, *, retry: bool) -> Refusal:
    """A 502 in the provider's error shape for a call the proxy could not deliver;
    ``x-should-retry`` tells the SDK whether to try again (see ccmeter.routing)."""
    token = uuid.uuid4()
    flag = "true" if retry else "false"
    body: dict[str, Any]
    if provider == BEDROCK:
        body = {"message": message}
        headers = {"content-type": "application/json",
                   "x-amzn-errortype": "ServiceUnavailableException",
                   "x-amzn-requestid": str(token), "x-should-retry": flag}
    else:
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        headers = {"content-type": "application/json", "x-should-retry": flag,
                   "request-id": f"ccmeter-{token.hex[:24]}"}
    return Refusal(502, headers, json.dumps(body).encode())


def bedrock_stream_error(message: str) -> bytes:
    """What ends a Bedrock stream that a hard cap cuts: a ``throttlingException`` frame, which
    the Bedrock SDK raises as an error (first-party and Vertex streams get an SSE ``error``)."""
    return exception_message("throttlingException", json.dumps({"message": message}).encode())
