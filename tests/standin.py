"""A stand-in for the Anthropic Messages API, for tests.

It speaks real HTTP/1.1 (plain or TLS with a throw-away self-signed certificate) on a loopback
port, records every request, and answers ``POST /v1/messages`` from a FIFO of scripted replies,
falling back to ``StandIn.default``. Replies reproduce the wire details a meter must survive:
chunked transfer with pieces split at seeded random byte offsets (so splits land mid-line and
mid-UTF-8 character), optional whole-body compression, CRLF line endings, pauses between pieces,
streams cut off without their terminating chunk, and Anthropic-shaped error bodies.

Typical use::

    with StandIn() as api:
        api.enqueue(sse_reply(message_events("claude-opus-4-8", input_tokens=10)))
        ...  # point the client (or the proxy under test) at api.url
        assert len(api.messages_requests()) == 1

The event builders (``message_events``, ``message_json``) are pure and follow the shapes in
section 8 of the protocol notes: the full usage in ``message_start``, cumulative counts in
``message_delta``.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import ipaddress
import itertools
import json
import logging
import random
import secrets
import shutil
import socket
import ssl
import string
import struct
import tempfile
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import brotli

log = logging.getLogger(__name__)

Event = tuple[str, dict[str, Any]]
ChunkSizes = str | int | list[int]

ENCODINGS = ("gzip", "br", "zstd", "deflate")
NON_ASCII_SAMPLE = "héllo — 你好 🎉"
DEFAULT_TEXT = f"Hello from the stand-in. {NON_ASCII_SAMPLE}"
_ALNUM = string.ascii_letters + string.digits


# --------------------------------------------------------------------------- ids and codecs


def _token(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def new_request_id() -> str:
    return f"req_011{_token(21)}"


def new_message_id() -> str:
    return f"msg_01{_token(22)}"


def new_tool_use_id() -> str:
    return f"toolu_01{_token(22)}"


def _zstd_module() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+

        return zstd
    except ImportError:
        pass
    try:
        from backports import zstd  # type: ignore[import-not-found,no-redef]  # mitmproxy 12

        return zstd
    except ImportError:
        pass
    import zstandard  # older mitmproxy

    return zstandard


def compress(data: bytes, encoding: str | None) -> bytes:
    """Encode a whole body the way a server would for ``content-encoding: <encoding>``."""
    if encoding is None:
        return data
    if encoding == "gzip":
        return gzip.compress(data, mtime=0)
    if encoding == "deflate":  # HTTP "deflate" is the zlib format (RFC 9110 §8.4.1.2)
        return zlib.compress(data)
    if encoding == "br":
        return brotli.compress(data)
    if encoding == "zstd":
        zstd = _zstd_module()
        if zstd.__name__ == "zstandard":
            return zstd.ZstdCompressor().compress(data)
        return zstd.compress(data)
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def decompress(data: bytes, encoding: str | None) -> bytes:
    """Inverse of ``compress`` (for tests that read a body back)."""
    if encoding is None:
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "br":
        return brotli.decompress(data)
    if encoding == "zstd":
        zstd = _zstd_module()
        if zstd.__name__ == "zstandard":
            return zstd.ZstdDecompressor().decompressobj().decompress(data)
        return zstd.decompress(data)
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


# --------------------------------------------------------------------------- SSE serialisation


def _dumps(obj: Any) -> str:
    # Compact, raw UTF-8 (not \u escapes): what the API sends, and what makes byte splits land
    # inside multi-byte characters.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def serialize_events(events: list[Event], *, crlf: bool = False) -> bytes:
    """``event: NAME`` / ``data: JSON`` / blank line, per event; CRLF line ends if asked."""
    nl = "\r\n" if crlf else "\n"
    return "".join(
        f"event: {name}{nl}data: {_dumps(data)}{nl}{nl}" for name, data in events
    ).encode("utf-8")


def parse_sse(body: bytes) -> list[Event]:
    """Parse a complete SSE body back to ``(event, data)`` pairs (a test convenience, not the
    product's incremental decoder). Accepts LF, CRLF and CR line ends."""
    out: list[Event] = []
    name = "message"
    data_lines: list[str] = []
    for line in body.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data_lines:
                out.append((name, json.loads("\n".join(data_lines))))
            name, data_lines = "message", []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data_lines.append(value)
    return out


def chunk_plan(body: bytes | int, chunk_sizes: ChunkSizes = "random", seed: int = 0) -> list[int]:
    """The sizes of the pieces a body (its bytes, or just its length) is written in.

    ``"random"``: seeded sizes of 1..64 bytes; given the bytes, a piece that would contain the
    lead byte of a multi-byte UTF-8 character ends right after it half of the time, so splits
    inside characters are the rule rather than luck. An int: that fixed size; a list: its sizes
    used cyclically. The last piece is shortened to fit. Deterministic for a given seed.
    """
    data = body if isinstance(body, bytes) else None
    length = len(body) if isinstance(body, bytes) else body
    if chunk_sizes == "random":
        rng = random.Random(seed)
        nxt: Callable[[], int] = lambda: rng.randint(1, 64)  # noqa: E731
    elif isinstance(chunk_sizes, int) and not isinstance(chunk_sizes, bool):
        if chunk_sizes <= 0:
            raise ValueError("chunk size must be positive")
        nxt = lambda: chunk_sizes  # noqa: E731
    elif isinstance(chunk_sizes, list) and chunk_sizes:
        if any(s <= 0 for s in chunk_sizes):
            raise ValueError("chunk sizes must be positive (a 0-size chunk ends the body)")
        nxt = itertools.cycle(chunk_sizes).__next__
    else:
        raise ValueError(f"chunk_sizes must be 'random', an int or a list, not {chunk_sizes!r}")
    sizes: list[int] = []
    offset = 0
    while offset < length:
        size = min(nxt(), length - offset)
        if chunk_sizes == "random" and data is not None:
            for i in range(offset, offset + size - 1):
                if data[i] >= 0xC0 and rng.random() < 0.5:  # a multi-byte lead byte
                    size = i + 1 - offset
                    break
        sizes.append(size)
        offset += size
    return sizes


# --------------------------------------------------------------------------- replies


@dataclass
class Reply:
    """One scripted HTTP answer. Build with ``sse_reply``, ``json_reply`` or ``error_reply``.

    ``body`` is the unencoded body, or a callable given the response's request id (so one Reply
    reused as ``StandIn.default`` still sends a fresh ``request-id`` each time). ``chunked``
    replies are written piece by piece per ``chunk_plan``; others with ``content-length``.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Callable[[str], bytes] = b""
    encoding: str | None = None
    chunked: bool = False
    chunk_sizes: ChunkSizes = "random"
    seed: int = 0
    delay_s: float = 0.0
    cut_after_bytes: int | None = None
    cut_reset: bool = False

    def render(self, request_id: str | None = None) -> tuple[dict[str, str], bytes]:
        """Headers (lower-case names) and the encoded body as they would be sent."""
        rid = request_id or new_request_id()
        raw = self.body(rid) if callable(self.body) else self.body
        payload = compress(raw, self.encoding)
        headers = {"request-id": rid}
        headers.update({k.lower(): v for k, v in self.headers.items()})
        if self.encoding:
            headers["content-encoding"] = self.encoding
        if self.chunked:
            headers["transfer-encoding"] = "chunked"
        else:
            headers["content-length"] = str(len(payload))
        return headers, payload


def sse_reply(
    events: list[Event] | bytes,
    *,
    chunk_sizes: ChunkSizes = "random",
    seed: int = 0,
    delay_s: float = 0.0,
    encoding: str | None = None,
    crlf: bool = False,
    cut_after_bytes: int | None = None,
    cut_reset: bool = False,
    headers: dict[str, str] | None = None,
    status: int = 200,
) -> Reply:
    """A streamed ``text/event-stream`` answer, sent with ``transfer-encoding: chunked``.

    ``events`` may be pre-serialised bytes (e.g. a recorded transcript). ``delay_s`` pauses
    before each piece after the first. ``cut_after_bytes`` sends that many (encoded) body bytes,
    then closes the connection without the terminating chunk: a FIN, or a TCP RST when
    ``cut_reset``.
    """
    body = events if isinstance(events, bytes) else serialize_events(events, crlf=crlf)
    hdrs = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
    hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}")
    return Reply(
        status=status,
        headers=hdrs,
        body=body,
        encoding=encoding,
        chunked=True,
        chunk_sizes=chunk_sizes,
        seed=seed,
        delay_s=delay_s,
        cut_after_bytes=cut_after_bytes,
        cut_reset=cut_reset,
    )


def json_reply(
    body: dict[str, Any],
    *,
    status: int = 200,
    encoding: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A JSON answer with ``content-length``, optionally compressed."""
    hdrs = {"content-type": "application/json"}
    hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}")
    return Reply(status=status, headers=hdrs, body=_dumps(body).encode(), encoding=encoding)


def error_reply(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> Reply:
    """An Anthropic-shaped error: ``{"type":"error","error":{...},"request_id":...}``.

    For a refusal the CLI must not retry, pass ``headers={"x-should-retry": "false"}``.
    """
    hdrs = {"content-type": "application/json"}
    hdrs.update({k.lower(): v for k, v in (headers or {}).items()})

    def body(rid: str) -> bytes:
        doc = {"type": "error", "error": {"type": error_type, "message": message}}
        return _dumps({**doc, "request_id": rid}).encode()

    return Reply(status=status, headers=hdrs, body=body)


# --------------------------------------------------------------------------- event builders


def _usage(
    *,
    input_tokens: int,
    cache_write_5m: int,
    cache_write_1h: int,
    cache_read: int,
    output_tokens: int,
    web_search_requests: int,
    speed: str | None,
    service_tier: str | None,
    inference_geo: str | None,
    extra_usage: dict[str, Any] | None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write_5m + cache_write_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_write_5m,
            "ephemeral_1h_input_tokens": cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": service_tier,
        "inference_geo": inference_geo,
    }
    if web_search_requests:
        usage["server_tool_use"] = {"web_search_requests": web_search_requests}
    if speed is not None:
        usage["speed"] = speed
    usage.update(extra_usage or {})
    return usage


def _pieces(s: str, size: int) -> list[str]:
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def _content(
    text: str, tool_use: dict[str, Any] | None, thinking: str | None
) -> list[dict[str, Any]]:
    """Final content blocks: thinking, then text, then tool_use (each when present)."""
    blocks: list[dict[str, Any]] = []
    if thinking is not None:
        blocks.append({"type": "thinking", "thinking": thinking, "signature": "EqQBstandin=="})
    if text:
        blocks.append({"type": "text", "text": text})
    if tool_use is not None:
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_use.get("id") or new_tool_use_id(),
                "name": tool_use["name"],
                "input": tool_use.get("input", {}),
            }
        )
    return blocks


def message_events(
    model: str = "claude-opus-4-8",
    *,
    text: str = DEFAULT_TEXT,
    input_tokens: int = 27,
    cache_write_5m: int = 0,
    cache_write_1h: int = 0,
    cache_read: int = 0,
    output_tokens: int = 14,
    message_id: str | None = None,
    stop_reason: str | None = None,
    tool_use: dict[str, Any] | None = None,
    thinking: str | None = None,
    pings: bool = True,
    web_search_requests: int = 0,
    speed: str | None = None,
    service_tier: str | None = "standard",
    inference_geo: str | None = None,
    delta_usage_full: bool = True,
    error_after_start: tuple[str, str] | None = None,
    extra_usage: dict[str, Any] | None = None,
) -> list[Event]:
    """The events of one streamed Message, shaped like the real API's.

    ``stop_reason`` defaults to ``"tool_use"`` when ``tool_use`` (``{"name", "input", "id"?}``)
    is given, else ``"end_turn"``. ``message_start`` carries the full usage with
    ``output_tokens: 1``; ``message_delta`` the cumulative counts (``output_tokens`` only unless
    ``delta_usage_full``). ``extra_usage`` is merged into both usages. With
    ``error_after_start=(type, message)`` the stream ends with an ``error`` event right after the
    first content delta.
    """
    common: dict[str, Any] = dict(
        input_tokens=input_tokens,
        cache_write_5m=cache_write_5m,
        cache_write_1h=cache_write_1h,
        cache_read=cache_read,
        web_search_requests=web_search_requests,
        speed=speed,
        service_tier=service_tier,
        inference_geo=inference_geo,
        extra_usage=extra_usage,
    )
    if stop_reason is None:
        stop_reason = "tool_use" if tool_use is not None else "end_turn"
    start_msg: dict[str, Any] = {
        "model": model,
        "id": message_id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(output_tokens=1, **common),
    }
    events: list[Event] = [("message_start", {"type": "message_start", "message": start_msg})]
    if pings:
        events.append(("ping", {"type": "ping"}))

    deltas_seen = 0

    def delta(index: int, d: dict[str, Any]) -> bool:
        """Append a content delta; True when the scripted error has been emitted instead."""
        nonlocal deltas_seen
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        )
        deltas_seen += 1
        if error_after_start is not None and deltas_seen == 1:
            err_type, err_msg = error_after_start
            events.append(
                ("error", {"type": "error", "error": {"type": err_type, "message": err_msg}})
            )
            return True
        return False

    for index, block in enumerate(_content(text, tool_use, thinking)):
        kind = block["type"]
        start: dict[str, Any]
        parts: list[dict[str, Any]]
        if kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            parts = [{"type": "thinking_delta", "thinking": p} for p in _pieces(thinking or "", 9)]
            parts.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "text":
            start = {"type": "text", "text": ""}
            parts = [{"type": "text_delta", "text": p} for p in _pieces(text, 7)]
        else:
            start = {**block, "input": {}}
            raw = _dumps(block["input"])
            parts = [{"type": "input_json_delta", "partial_json": ""}]
            parts += [{"type": "input_json_delta", "partial_json": p} for p in _pieces(raw, 11)]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        for n, d in enumerate(parts):
            if delta(index, d):
                return events
            if pings and kind == "text" and n == len(parts) // 2:
                events.append(("ping", {"type": "ping"}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))

    final = _usage(output_tokens=output_tokens, **common)
    if delta_usage_full:
        keep = (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "server_tool_use",
            *(extra_usage or {}),
        )
    else:
        keep = ("output_tokens", *(extra_usage or {}))
    delta_usage = {k: v for k, v in final.items() if k in keep}
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": delta_usage,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def fallback_events(
    requested: str = "claude-opus-4-7",
    served: str = "claude-sonnet-4-5",
    *,
    input_tokens: int = 25,
    output_tokens: int = 8,
    text: str = "Hello there!",
) -> list[Event]:
    """A server-side fallback, shaped like the official SDK's ``fallback_response.txt``: the
    stream starts as ``requested`` (message_start), a ``fallback`` content block hands it to
    ``served``, which writes the answer. Usage is top-level only (no ``iterations``)."""
    block = {"type": "fallback", "from": {"model": requested}, "to": {"model": served},
             "trigger": {"type": "refusal", "category": None}}
    message = {"id": new_message_id(), "type": "message", "role": "assistant", "content": [],
               "model": requested, "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": input_tokens, "output_tokens": 1}}
    return [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": block}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "text_delta", "text": text}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def message_json(
    model: str = "claude-opus-4-8",
    *,
    text: str = DEFAULT_TEXT,
    input_tokens: int = 27,
    cache_write_5m: int = 0,
    cache_write_1h: int = 0,
    cache_read: int = 0,
    output_tokens: int = 14,
    message_id: str | None = None,
    stop_reason: str | None = None,
    tool_use: dict[str, Any] | None = None,
    thinking: str | None = None,
    web_search_requests: int = 0,
    speed: str | None = None,
    service_tier: str | None = "standard",
    inference_geo: str | None = None,
    extra_usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The non-streaming Message body with the same usage as ``message_events`` (final)."""
    if stop_reason is None:
        stop_reason = "tool_use" if tool_use is not None else "end_turn"
    return {
        "model": model,
        "id": message_id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "content": _content(text, tool_use, thinking),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(
            input_tokens=input_tokens,
            cache_write_5m=cache_write_5m,
            cache_write_1h=cache_write_1h,
            cache_read=cache_read,
            output_tokens=output_tokens,
            web_search_requests=web_search_requests,
            speed=speed,
            service_tier=service_tier,
            inference_geo=inference_geo,
            extra_usage=extra_usage,
        ),
    }


# --------------------------------------------------------------------------- request side


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it. ``path`` includes the query string."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: dict[str, Any] | None

    @property
    def route(self) -> str:
        return self.path.partition("?")[0]

    @property
    def is_messages(self) -> bool:
        return self.method == "POST" and self.route == "/v1/messages"


Handler = Callable[[Recorded], Reply]


def _message_answer(rec: Recorded, **kwargs: Any) -> Reply:
    """Stream or JSON, as the request asked, for the model it named."""
    body = rec.json or {}
    model = body.get("model") or "claude-opus-4-8"
    if body.get("stream"):
        return sse_reply(message_events(model, **kwargs))
    return json_reply(message_json(model, **kwargs))


def default_reply(rec: Recorded) -> Reply:
    """The stand-in's out-of-the-box answer: a normal text Message."""
    return _message_answer(rec)


def _last_user_content(body: dict[str, Any]) -> Any:
    for msg in reversed(body.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return msg.get("content")
    return None


def _has_tool_result(content: Any) -> bool:
    if not isinstance(content, list):
        return False  # a plain string prompt
    return any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def tool_round_trip(path_to_read: str, final_text: str) -> Handler:
    """A default handler driving one ``Read`` tool round trip of the Claude Code CLI.

    Calls that offer tools: without a ``tool_result`` in the last user message, answer a
    ``tool_use`` of ``Read`` with ``{"file_path": path_to_read}``; with one, answer
    ``final_text``. Calls without tools (the CLI's auxiliary haiku calls) get a short text.
    """

    def handle(rec: Recorded) -> Reply:
        body = rec.json or {}
        if not body.get("tools"):
            return _message_answer(rec, text="OK.", input_tokens=20, output_tokens=2)
        if _has_tool_result(_last_user_content(body)):
            return _message_answer(rec, text=final_text, output_tokens=9)
        return _message_answer(
            rec,
            text="I'll read the file.",
            tool_use={"name": "Read", "input": {"file_path": path_to_read}},
            output_tokens=31,
        )

    return handle


# --------------------------------------------------------------------------- the server

_AUX_ANSWERS: dict[str, dict[str, Any]] = {
    "/mcp-registry/v0/servers": {"servers": [], "metadata": {"count": 0}},
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudflare"
    timeout = 60  # idle keep-alive connections end after this
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("stand-in: " + format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            headers[k] = f"{headers[k]}, {value}" if k in headers else value
        try:
            doc = json.loads(body) if body else None
        except (ValueError, RecursionError):  # a fuzzed body is no JSON to read
            doc = None
        rec = Recorded(
            method=self.command,
            path=self.path,
            headers=headers,
            body=body,
            json=doc if isinstance(doc, dict) else None,
        )
        standin = self.server.standin
        standin._record(rec)
        try:
            reply = standin._reply_for(rec)
        except Exception as exc:  # a test's handler failed: answer, don't hang the client
            log.exception("stand-in handler failed")
            standin.errors.append(exc)
            reply = error_reply(500, "api_error", f"stand-in handler failed: {exc!r}")
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        headers, payload = reply.render()
        self.send_response(reply.status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        if not reply.chunked:
            self.wfile.write(payload)
            return
        stop = self.server.standin._closing
        cut = reply.cut_after_bytes
        sent = 0
        offset = 0
        for n, size in enumerate(chunk_plan(payload, reply.chunk_sizes, reply.seed)):
            if cut is not None and sent + size >= cut:
                size = cut - sent
            if n and reply.delay_s and stop.wait(reply.delay_s):
                return self._abort(reset=True)
            if size > 0:
                piece = payload[offset : offset + size]
                self.wfile.write(b"%x\r\n%s\r\n" % (size, piece))
                offset += size
                sent += size
            if cut is not None and sent >= cut:
                return self._abort(reset=reply.cut_reset)
        if cut is not None:  # cut at or beyond the end: still no terminating chunk
            return self._abort(reset=reply.cut_reset)
        self.wfile.write(b"0\r\n\r\n")

    def _abort(self, *, reset: bool) -> None:
        self.close_connection = True
        sock = self.connection
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                socket.socket.close(sock)  # linger 0: RST
            else:
                # The plain socket's shutdown, also for TLS: no close_notify, just a FIN.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError, ssl.SSLError, ValueError, OSError):
            self.close_connection = True

    def _dispatch(self) -> None:
        self._handle()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], standin: StandIn, family: int) -> None:
        self.address_family = family
        self.standin = standin
        super().__init__(addr, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        standin = self.standin
        conn = request
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if standin._ssl_context is not None:
                request.settimeout(10)
                conn = standin._ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("stand-in: TLS handshake failed: %r", exc)
            return
        with standin._lock:
            standin._conns.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]
        except Exception:
            log.debug("stand-in: connection error", exc_info=True)
        finally:
            with standin._lock:
                standin._conns.discard(conn)
            if conn is not request:
                with contextlib.suppress(OSError):
                    conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("stand-in: error from %s", client_address, exc_info=True)


def _self_signed(host: str, directory: Path) -> tuple[Path, Path]:
    """A P-256 self-signed certificate (CA:TRUE, so every TLS stack accepts it as its own trust
    anchor) for 127.0.0.1, ::1, localhost and ``host``; returns (cert PEM, key PEM) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccmeter stand-in")])
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        extra: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        extra = x509.DNSName(host)
    if extra not in sans:
        sans.append(extra)
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "standin-cert.pem", directory / "standin-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class StandIn:
    """The stand-in API server: started on construction, stopped by ``close()`` / ``with``."""

    def __init__(self, tls: bool = False, host: str = "127.0.0.1") -> None:
        self.host = host
        self.tls = tls
        self.requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self.default: Handler | Reply = default_reply
        self._queue: deque[Handler | Reply] = deque()
        self._lock = threading.Lock()
        self._conns: set[Any] = set()
        self._closing = threading.Event()
        self._closed = False
        self._tmpdir: Path | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self.ca_path: str | None = None
        if tls:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="ccmeter-standin-"))
            cert_path, key_path = _self_signed(host, self._tmpdir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert_path, key_path)
            ctx.set_alpn_protocols(["http/1.1"])
            self._ssl_context = ctx
            self.ca_path = str(cert_path)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _Server((host, 0), self, family)
        self.port: int = self._server.server_address[1]
        netloc = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{netloc}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"standin-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # scripting -----------------------------------------------------------------------------

    def enqueue(self, *replies: Reply | Handler) -> None:
        """Queue answers (Reply or ``(Recorded) -> Reply``) for the next ``/v1/messages`` calls."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def queued(self) -> int:
        """How many enqueued replies have not been used yet."""
        with self._lock:
            return len(self._queue)

    def messages_requests(self) -> list[Recorded]:
        """The ``POST /v1/messages`` calls (any query string; not ``count_tokens``)."""
        with self._lock:
            return [r for r in self.requests if r.is_messages]

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def _reply_for(self, rec: Recorded) -> Reply:
        if rec.is_messages:
            with self._lock:
                answer = self._queue.popleft() if self._queue else self.default
            return answer if isinstance(answer, Reply) else answer(rec)
        if rec.method == "POST" and rec.route == "/v1/messages/count_tokens":
            return json_reply({"input_tokens": max(1, len(rec.body) // 4)})
        return json_reply(_AUX_ANSWERS.get(rec.route, {}))

    # lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting, end open connections (mid-stream ones too), remove the cert files."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
