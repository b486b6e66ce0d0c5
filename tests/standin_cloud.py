"""Stand-in Amazon Bedrock and Google Vertex AI endpoints for Claude, built on tests/standin.py.

``CloudStandIn`` answers what Claude Code sends when ``CLAUDE_CODE_USE_BEDROCK`` /
``CLAUDE_CODE_USE_VERTEX`` is set (observed with Claude Code 2.1.197):

- Bedrock: ``POST …/model/{id}/invoke-with-response-stream`` with an
  ``application/vnd.amazon.eventstream`` body: one ``chunk`` frame per Anthropic event, the
  payload ``{"bytes": base64(event JSON), "p": padding}``, and ``amazon-bedrock-invocationMetrics``
  on the last event; ``…/invoke`` with the Message JSON and the token-count headers;
  ``…/count-tokens``; and the control plane's ``GET /inference-profiles`` (empty).
- Vertex: ``POST …/publishers/anthropic/models/{model}:streamRawPredict`` (Anthropic SSE),
  ``:rawPredict`` (JSON) and ``count-tokens:rawPredict``.

Frames are written with ccmeter's own encoder, whose output tests/test_eventstream.py checks
against the official AWS test vectors. Replies for model calls come from the same FIFO as the
base stand-in (``enqueue``), then ``default``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import uuid
from typing import Any

from standin import (
    Event,
    Recorded,
    Reply,
    StandIn,
    json_reply,
    message_events,
    message_json,
    sse_reply,
)

from ccmeter.eventstream import encode_message, exception_message

BEDROCK_ROUTE = re.compile(r"/model/(?P<id>.+)/(?P<op>invoke-with-response-stream|invoke"
                           r"|count-tokens)$")
VERTEX_ROUTE = re.compile(r"/publishers/anthropic/models/(?P<model>[^/:]+):"
                          r"(?P<op>streamRawPredict|rawPredict)$")
EVENTSTREAM = "application/vnd.amazon.eventstream"


def served_model(path_model: str) -> str:
    """The model a cloud reports in ``message_start`` for the id in the URL."""
    from urllib.parse import unquote

    name = unquote(path_model).rsplit("/", 1)[-1]
    name = re.sub(r"^(?:global|us|eu|apac|au|jp)\.", "", name)
    name = name.removeprefix("anthropic.")
    name = re.sub(r"-v\d+(?::\d+)?$", "", name)
    return name.replace("@", "-")


def _padding(n: int) -> str:
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: n % 36]


def chunk_frame(event: dict[str, Any], padding: str = "") -> bytes:
    inner = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    payload = json.dumps({"bytes": base64.b64encode(inner).decode(), "p": padding}).encode()
    return encode_message({":event-type": "chunk", ":content-type": "application/json",
                           ":message-type": "event"}, payload)


def bedrock_frames(events: list[Event], *, metrics: dict[str, Any] | None = None,
                   usage: bool = True) -> bytes:
    """The event stream of one answer; ``metrics`` go on ``message_stop``. ``usage=False``
    strips every Anthropic ``usage`` (so only the metrics can tell the counts)."""
    out = []
    for n, (_name, data) in enumerate(events):
        data = json.loads(json.dumps(data))
        if not usage:
            data.pop("usage", None)
            if isinstance(data.get("message"), dict):
                data["message"].pop("usage", None)
        if data.get("type") == "message_stop" and metrics is not None:
            data["amazon-bedrock-invocationMetrics"] = metrics
        out.append(chunk_frame(data, _padding(n * 7)))
    return b"".join(out)


def metrics_for(input_tokens: int, output_tokens: int, **extra: int) -> dict[str, Any]:
    return {"inputTokenCount": input_tokens, "outputTokenCount": output_tokens,
            "invocationLatency": 812, "firstByteLatency": 301, **extra}


def bedrock_stream_reply(
    events: list[Event] | None = None,
    *,
    body: bytes | None = None,
    metrics: dict[str, Any] | None = None,
    usage: bool = True,
    tail: bytes = b"",
    chunk_sizes: Any = "random",
    seed: int = 0,
    cut_after_bytes: int | None = None,
) -> Reply:
    """An ``InvokeModelWithResponseStream`` answer (``tail``: frames appended, e.g. an
    exception)."""
    if body is None:
        body = bedrock_frames(events or [], metrics=metrics, usage=usage)
    return Reply(
        status=200,
        headers={"content-type": EVENTSTREAM, "x-amzn-requestid": str(uuid.uuid4()),
                 "x-amzn-bedrock-content-type": "application/json"},
        body=body + tail,
        chunked=True,
        chunk_sizes=chunk_sizes,
        seed=seed,
        cut_after_bytes=cut_after_bytes,
    )


def bedrock_json_reply(message: dict[str, Any], *, with_usage: bool = True) -> Reply:
    """An ``InvokeModel`` answer: the Message JSON plus Bedrock's token-count headers."""
    usage = message.get("usage") or {}
    headers = {
        "x-amzn-requestid": str(uuid.uuid4()),
        "x-amzn-bedrock-input-token-count": str(usage.get("input_tokens", 0)),
        "x-amzn-bedrock-output-token-count": str(usage.get("output_tokens", 0)),
        "x-amzn-bedrock-invocation-latency": "640",
    }
    body = dict(message)
    if not with_usage:
        body.pop("usage", None)
    return json_reply(body, headers=headers)


def bedrock_exception(exception_type: str, message: str) -> bytes:
    return exception_message(exception_type, json.dumps({"message": message}).encode())


def bedrock_error_reply(status: int, error_type: str, message: str) -> Reply:
    return json_reply({"message": message}, status=status, headers={
        "x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-requestid": str(uuid.uuid4()),
    })


def vertex_message_id() -> str:
    return f"msg_vrtx_01{secrets.token_hex(11)}"


class CloudStandIn(StandIn):
    """A stand-in that also speaks Bedrock and Vertex routes (see the module docstring)."""

    def __init__(self, tls: bool = False, host: str = "127.0.0.1") -> None:
        super().__init__(tls=tls, host=host)
        self.default = default_cloud_reply

    def model_requests(self) -> list[Recorded]:
        """The metered calls: Bedrock invoke/invoke-with-response-stream, Vertex (stream)
        rawPredict; not count-tokens."""
        with self._lock:
            return [r for r in self.requests if _is_model_call(r)]

    def _reply_for(self, rec: Recorded) -> Reply:
        if rec.is_messages or _is_model_call(rec):
            with self._lock:
                answer = self._queue.popleft() if self._queue else self.default
            return answer if isinstance(answer, Reply) else answer(rec)
        route = rec.route
        if rec.method == "POST" and route.endswith("/count-tokens"):
            return json_reply({"inputTokens": max(1, len(rec.body) // 4)})
        if rec.method == "POST" and route.endswith("/count-tokens:rawPredict"):
            return json_reply({"input_tokens": max(1, len(rec.body) // 4)})
        if rec.method == "GET" and route.endswith("/inference-profiles"):
            return json_reply({"inferenceProfileSummaries": []})
        return super()._reply_for(rec)


def _is_model_call(rec: Recorded) -> bool:
    if rec.method != "POST":
        return False
    bedrock = BEDROCK_ROUTE.search(rec.route)
    if bedrock:
        return bedrock["op"] != "count-tokens"
    vertex = VERTEX_ROUTE.search(rec.route)
    return bool(vertex) and vertex["model"] != "count-tokens"


def cloud_answer(rec: Recorded, **kwargs: Any) -> Reply:
    """Stream or JSON as the route asks, for the model the URL names, in the cloud's shape."""
    bedrock = BEDROCK_ROUTE.search(rec.route)
    if bedrock:
        model = served_model(bedrock["id"])
        if bedrock["op"] == "invoke-with-response-stream":
            kwargs.setdefault("message_id", f"msg_bdrk_01{secrets.token_hex(11)}")
            events = message_events(model, **kwargs)
            return bedrock_stream_reply(events, metrics=metrics_for(
                kwargs.get("input_tokens", 27), kwargs.get("output_tokens", 14)))
        kwargs.setdefault("message_id", f"msg_bdrk_01{secrets.token_hex(11)}")
        kwargs.pop("pings", None)
        return bedrock_json_reply(message_json(model, **kwargs))
    vertex = VERTEX_ROUTE.search(rec.route)
    if vertex:
        model = served_model(vertex["model"])
        kwargs.setdefault("message_id", vertex_message_id())
        if vertex["op"] == "streamRawPredict":
            return sse_reply(message_events(model, **kwargs))
        kwargs.pop("pings", None)
        return json_reply(message_json(model, **kwargs))
    raise ValueError(f"not a cloud model route: {rec.route}")


def default_cloud_reply(rec: Recorded) -> Reply:
    return cloud_answer(rec)
