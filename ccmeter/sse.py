"""Incremental Server-Sent Events decoder: bytes in (cut anywhere), events out.

Pure and synchronous: it sits on the proxy's byte path, so it never blocks and never
raises on odd input. Only events a meter cares about are JSON-decoded (see
``USAGE_EVENTS``): a Claude answer is mostly ``content_block_delta`` text, and skipping
its JSON keeps the decoder far faster than the network.

Line endings may be LF, CRLF or CR (the SSE spec allows all three). Lines are split on
raw bytes, so a chunk boundary inside a multi-byte UTF-8 character is harmless.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: Events whose JSON the meter needs. Others are recognised by name and skipped.
USAGE_EVENTS = frozenset({"message_start", "message_delta", "message_stop", "error"})

#: Largest event we are willing to hold while waiting for its end (a defence against a
#: stream that never sends a blank line); past it the partial event is dropped.
MAX_EVENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Event:
    """One dispatched SSE event. ``data`` is the parsed JSON, or None when skipped/invalid."""

    name: str
    data: dict[str, Any] | None


class SSEDecoder:
    """Feed it chunks with :meth:`feed`; it returns the events completed by each chunk."""

    __slots__ = ("_buffer", "_pending_cr", "_skip", "_skip_for", "dropped_bytes", "wanted")

    def __init__(self, wanted: frozenset[str] = USAGE_EVENTS) -> None:
        self._buffer = b""
        self._pending_cr = False
        self.wanted = wanted
        self.dropped_bytes = 0
        #: ``event: NAME\ndata:`` -> the (immutable) Event of a skipped event: the fast path.
        self._skip: dict[bytes, Event] = {}
        self._skip_for = wanted

    def feed(self, chunk: bytes) -> list[Event]:
        if not chunk:
            return []
        if self._pending_cr:
            # A CR ended the previous chunk: if this one starts with LF they are one CRLF.
            chunk = b"\r" + chunk
            self._pending_cr = False
        if 13 in chunk:  # a CR (an int test: far cheaper than ``b"\r" in chunk``)
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._pending_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        data = self._buffer + chunk if self._buffer else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._buffer = data
            self._guard_size()
            return []
        self._buffer = data[end + 2 :]
        return self._dispatch(data[:end])

    def flush(self) -> list[Event]:
        """End of stream: a held-back CR still ends its line; an event not closed by a
        blank line is discarded, per the spec. Safe to call more than once."""
        events = []
        if self._pending_cr:
            self._pending_cr = False
            events = self.feed(b"\n")
        self._buffer = b""
        return events

    def _guard_size(self) -> None:
        if len(self._buffer) > MAX_EVENT_BYTES:
            self.dropped_bytes += len(self._buffer)
            self._buffer = b""

    def _dispatch(self, block: bytes) -> list[Event]:
        if self._skip_for is not self.wanted:
            self._skip, self._skip_for = {}, self.wanted
        skip = self._skip
        events = []
        for raw in block.split(b"\n\n"):
            # Fast path for the bulk of a stream (text deltas): a known ``event: NAME`` line
            # of a skipped event, a data line next, and no later ``event`` field: the
            # answer is the same immutable Event as last time, no parsing needed.
            nl = raw.find(b"\n")
            skipped = skip.get(raw[: nl + 6]) if nl > 0 else None
            if skipped is not None and raw.find(b"\nevent", nl) < 0:
                events.append(skipped)
                continue
            event = self._parse_event(raw)
            if event is None:
                continue
            events.append(event)
            if (event.data is None and nl > 0 and raw[:6] == b"event:"
                    and raw[nl + 1 : nl + 6] == b"data:" and raw.find(b"\nevent", nl) < 0
                    and event.name not in self.wanted and event.name != "message"
                    and len(skip) < 64):
                skip[raw[: nl + 6]] = event
        return events

    def _parse_event(self, raw: bytes) -> Event | None:
        name = b""
        data_lines: list[bytes] = []
        for line in raw.split(b"\n"):
            if not line or line[0] == 0x3A:  # blank (from 3+ newlines) or ":" comment
                continue
            field, sep, value = line.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data_lines.append(value)
            elif field == b"event":
                name = value
        if not data_lines:
            return None  # the spec dispatches nothing for an event without data
        event_name = name.decode("utf-8", "replace") if name else "message"
        if event_name not in self.wanted and event_name != "message":
            return Event(event_name, None)
        payload = b"\n".join(data_lines)
        try:
            data = json.loads(payload)
        except ValueError:
            return Event(event_name, None)
        if not isinstance(data, dict):
            return Event(event_name, None)
        if event_name == "message" and isinstance(data.get("type"), str):
            # An unnamed event: the Anthropic payload still says what it is.
            event_name = data["type"]
        return Event(event_name, data)
