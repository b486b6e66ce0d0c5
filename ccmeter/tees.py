"""The tees a metered call's bytes pass through: each forwards every chunk untouched and
keeps (or meters) a copy.

mitmproxy calls ``flow.request.stream`` and ``flow.response.stream`` from its HTTP layer,
outside the error guard it gives hooks: nothing may escape from here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from mitmproxy import http

from ccmeter import eventstream, providers
from ccmeter.callrow import Call
from ccmeter.caps.hardmode import StreamLimit
from ccmeter.caps.messages import sse_error_event
from ccmeter.decompress import TooLarge, incremental_decoder
from ccmeter.enforce import close_upstream
from ccmeter.sse import USAGE_EVENTS, SSEDecoder

log = logging.getLogger(__name__)

#: The events a stream tee decodes: usage, and the content block starts (a ``fallback``
#: block names the model that serves the rest of the answer).
METERED_EVENTS = USAGE_EVENTS | {"content_block_start"}


class Recorder(Protocol):
    """What a stream tee tells as the call goes: the addon's ``Meter``."""

    def record(self, call: Call, *, status: str, flow: http.HTTPFlow | None = None) -> None: ...

    def record_started(self, call: Call, start: Mapping[str, Any] | None = None) -> None: ...


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
#: Most bytes hard mode holds back waiting for an event's end: past it they go on (an event
#: this long is no Claude event; holding it would grow memory and starve the client).
MAX_HELD_BYTES = 1024 * 1024


class StreamTee:
    """The ``flow.response.stream`` callable: forwards every chunk untouched, meters a copy.

    mitmproxy calls it outside its hook error guard, so nothing may escape from here.
    """

    __slots__ = ("_backlog", "_bedrock", "_cut", "_decoder", "_decompress", "_first", "_flow",
                 "_held", "_meter", "_on_start", "call", "failed")

    def __init__(self, meter: Recorder, call: Call, encoding: str | None,
                 flow: http.HTTPFlow | None = None) -> None:
        self._meter = meter
        self.call = call
        wanted = METERED_EVENTS | {"content_block_delta"} if call.limit else METERED_EVENTS
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
                try:
                    chunk = self._decompress(chunk)
                except TooLarge as exc:  # meter what fit in the budget, then stop
                    self._decompress = None
                    if exc.partial:
                        self._consume(exc.partial)
                    raise
            events = self._decoder.feed(chunk)
        state = self.call.state
        for event in events:
            if event.data is not None:
                state.apply_event(event.name, event.data)
                if event.unread and self.call.metering_error is None:  # read in part
                    self.call.metering_error = f"{event.name} {event.unread}"
            elif event.unread:  # skipped, work and memory bounded: the cost is unknown
                state.unread(event.name, event.unread)
            if self.call.limit is not None:
                self.call.limit.observe(event.name, event.data, state.model, state.usage)
                running = self.call.limit.running
                if state.usage is not None and running.model != state.model:
                    running.set_usage(state.model, state.usage)  # a fallback: its model's rates
            if self._on_start and state.started:
                self._on_start = False
                self._meter.record_started(self.call, event.data)
        if self._bedrock and self._decoder.error:  # a bad CRC: metering stops, bytes flow on
            raise ValueError(f"event stream: {self._decoder.error}")

    # --- hard mode -------------------------------------------------------------------------

    def _limited(self, chunk: bytes) -> bytes | list[bytes]:
        """Hard mode: forward whole events only, so that a cut falls between two events;
        once the running cost reaches the cap, send an ``error`` event and end the body."""
        if self._cut:
            self._meter_quietly(chunk)  # late bytes are metered, never forwarded
            return []
        scanned = max(0, len(self._held) - 3)  # the held bytes hold no event end
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
            ends = [m.end() for m in _EVENT_END.finditer(data, scanned)]
            if len(data) - (ends[-1] if ends else 0) > MAX_HELD_BYTES:
                ends.append(len(data))  # no end in sight: hold nothing
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

    def _cut_here(self, limit: StreamLimit) -> list[bytes]:
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
                                else sse_error_event(message))
                    if flow.request.http_version.startswith("HTTP/1"):
                        tail.append(b"")  # the chunked end marker: a clean end for the client
                asyncio.get_running_loop().call_soon(close_upstream, flow)
        except Exception:
            log.exception("ccmeter: cutting a stream failed")
        return tail
