"""Incremental Server-Sent Events decoder: bytes in (cut anywhere), events out.

Pure and synchronous: it sits on the proxy's byte path, so it never blocks and never
raises on odd input. Only events a meter cares about are JSON-decoded (see
``USAGE_EVENTS``): a Claude answer is mostly ``content_block_delta`` text, and skipping
its JSON keeps the decoder far faster than the network.

Line endings may be LF, CRLF or CR (the SSE spec allows all three). Lines are split on
raw bytes, so a chunk boundary inside a multi-byte UTF-8 character is harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ccmeter import untrusted

#: Events whose JSON the meter needs. Others are recognised by name and skipped.
USAGE_EVENTS = frozenset({"message_start", "message_delta", "message_stop", "error"})

#: Largest event we are willing to hold while waiting for its end (a defence against a
#: stream that never sends a blank line); past it the event is skipped to its end, and
#: reported as an :class:`Event` with ``too_large`` set.
MAX_EVENT_BYTES = 16 * 1024 * 1024
#: Most events of one stream read field by field (the first of each name, the ones the meter
#: wants: a handful, or one per text delta in hard mode, ~40,000 for the longest answer).
#: Past it the decoder stops and reports the stream unread: a flood of junk events costs the
#: event loop well under a second, then nothing (its call's cost is unknown).
MAX_PARSED_EVENTS = 200_000
#: How much of a skipped event is kept to name it.
_HEAD_BYTES = 512
_TAIL_BYTES = 4096
_TYPE_IN_HEAD = re.compile(rb'"type"\s*:\s*"([A-Za-z_]{1,64})"')
# A message_start too large to hold is billed from its two ends: the model and id open the
# message, its usage closes it (``…"usage":{…}}}`` at the very end of the event's data).
_MODEL_IN_HEAD = re.compile(rb'"model"\s*:\s*"([^"\\]{1,256})"')
_ID_IN_HEAD = re.compile(rb'"id"\s*:\s*"([^"\\]{1,128})"')
_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_USAGE_AT_END = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}"]|' + _STRING + rb'|\{(?:[^{}"]|'
                           + _STRING + rb')*\})*\})\s*\}\s*\}\s*$')
#: How an event stream begins: a field (``event:``, ``data:``, ``id:``, ``retry:``) or a
#: ``:`` comment, maybe after blank lines. JSON never does.
#: Blank lines beyond the one that ends an event (a flood of them is one separator).
_BLANK_RUN = re.compile(rb"\n{3,}")
_OBJECT_START = re.compile(rb"[ \t\n\r]*\{")

_STREAM_START = re.compile(rb"[\r\n]*(?:event|data|id|retry)?:")


def looks_like_event_stream(head: bytes) -> bool:
    """Whether a body sent without a (right) content-type is an event stream, from its
    first bytes."""
    return _STREAM_START.match(head[:256]) is not None


@dataclass(frozen=True)
class Event:
    """One dispatched SSE event. ``data`` is the parsed JSON, or None when skipped/invalid.
    ``unread`` says why an event was not read at all: longer than MAX_EVENT_BYTES, or (named
    ``stream``) the rest of a stream past MAX_PARSED_EVENTS."""

    name: str
    data: dict[str, Any] | None
    unread: str | None = None

    @property
    def too_large(self) -> bool:
        return self.unread is not None


#: What every event without a usable JSON object is, when no name says more.
_UNNAMED = Event("message", None)
_GAVE_UP = Event("stream", None, unread=f"events past {MAX_PARSED_EVENTS:,} not read")


def _from_ends(name: str, head: bytes, tail: bytes) -> Event | None:
    """A ``message_start`` too large to read, rebuilt from its first and last bytes: its
    model, id and usage, when they are where the API puts them. None otherwise."""
    if name != "message_start" or (usage := _USAGE_AT_END.search(tail)) is None:
        return None
    try:
        counts = untrusted.loads(usage.group(1))
    except ValueError:
        return None
    message: dict[str, Any] = {"usage": counts}
    for key, pattern in (("model", _MODEL_IN_HEAD), ("id", _ID_IN_HEAD)):
        if found := pattern.search(head):
            message[key] = found.group(1).decode("utf-8", "replace")
    return Event(name, {"type": name, "message": message},
                 unread=f"event over {MAX_EVENT_BYTES // 2**20} MB: only its model, id and "
                        "usage were read")


class SSEDecoder:
    """Feed it chunks with :meth:`feed`; it returns the events completed by each chunk."""

    __slots__ = ("_held", "_held_size", "_oversized", "_parses_left", "_pending_cr", "_skip",
                 "_skip_for", "dropped_bytes", "wanted")

    def __init__(self, wanted: frozenset[str] = USAGE_EVENTS) -> None:
        #: The pieces of an event not yet ended (kept as pieces: joined once, at its end).
        self._held: list[bytes] = []
        self._held_size = 0
        #: While skipping an event too large to hold: its name, first and last bytes.
        self._oversized: tuple[str, bytes, bytes] | None = None
        self._pending_cr = False
        self._parses_left = MAX_PARSED_EVENTS
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
        return self._feed_lines(chunk) if chunk else []

    def _feed_lines(self, chunk: bytes) -> list[Event]:
        """``chunk`` with LF line ends only."""
        if self._parses_left <= 0:  # gave up on this stream
            return []
        if self._oversized is not None:
            return self._skip_oversized(chunk)
        held = self._held
        if held:
            if chunk.find(b"\n\n") < 0 and not (chunk[0] == 0x0A and held[-1][-1] == 0x0A):
                held.append(chunk)  # the event goes on: no copy of what is held
                self._held_size += len(chunk)
                if self._held_size > MAX_EVENT_BYTES:
                    self._start_skipping()
                return []
            data = b"".join((*held, chunk))
            held.clear()
            self._held_size = 0
        else:
            data = chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            held.append(data)
            self._held_size = len(data)
            if self._held_size > MAX_EVENT_BYTES:
                self._start_skipping()
            return []
        if end + 2 < len(data):
            held.append(data[end + 2 :])
            self._held_size = len(data) - end - 2
        return self._dispatch(data[:end])

    def flush(self) -> list[Event]:
        """End of stream: a held-back CR still ends its line; an event not closed by a
        blank line is discarded, per the spec. Safe to call more than once."""
        events = []
        if self._pending_cr:
            self._pending_cr = False
            events = self.feed(b"\n")
        self._held.clear()
        self._held_size = 0
        self._oversized = None
        return events

    def _start_skipping(self) -> None:
        """The held event passed MAX_EVENT_BYTES: keep its name, drop its bytes, and skip
        the rest of it (memory stays bounded whatever the stream sends)."""
        head = b"".join(self._held[:8])[:_HEAD_BYTES]
        name = "message"
        if head.startswith(b"event:"):
            name = head[6:].split(b"\n", 1)[0].strip().decode("utf-8", "replace")[:64]
        else:
            found = _TYPE_IN_HEAD.search(head)
            if found:
                name = found.group(1).decode()
        tail = b""
        for part in reversed(self._held):
            tail = part[-_TAIL_BYTES:] + tail
            if len(tail) >= _TAIL_BYTES:
                break
        self.dropped_bytes += self._held_size
        self._oversized = (name, head, tail[-_TAIL_BYTES:])
        self._held.clear()
        self._held_size = 0

    def _skip_oversized(self, chunk: bytes) -> list[Event]:
        assert self._oversized is not None
        name, head, tail = self._oversized
        if tail[-1:] == b"\n" and chunk[0] == 0x0A:
            end, rest = 0, chunk[1:]
        else:
            end = chunk.find(b"\n\n")
            if end < 0:
                self.dropped_bytes += len(chunk)
                self._oversized = (name, head, (tail + chunk[-_TAIL_BYTES:])[-_TAIL_BYTES:])
                return []
            rest = chunk[end + 2 :]
        tail = (tail + chunk[max(0, end - _TAIL_BYTES) : end])[-_TAIL_BYTES:]
        self.dropped_bytes += len(chunk) - len(rest)
        self._oversized = None
        event = _from_ends(name, head, tail) or Event(
            name, None, unread=f"event over {MAX_EVENT_BYTES // 2**20} MB, not read")
        return [event, *self._feed_lines(rest)] if rest else [event]

    def _dispatch(self, block: bytes) -> list[Event]:
        if self._skip_for is not self.wanted:
            self._skip, self._skip_for = {}, self.wanted
        skip = self._skip
        events = []
        parts = block.split(b"\n\n")
        if len(parts) * 16 > len(block) and b"\n\n\n" in block:
            # Mostly blank lines (which dispatch nothing): one part per run, not millions.
            parts = _BLANK_RUN.sub(b"\n\n", block).split(b"\n\n")
        for raw in parts:
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
            if event is _GAVE_UP:
                break
            if (event.data is None and nl > 0 and raw[:6] == b"event:"
                    and raw[nl + 1 : nl + 6] == b"data:" and raw.find(b"\nevent", nl) < 0
                    and event.name not in self.wanted and event.name != "message"
                    and len(skip) < 64):
                skip[raw[: nl + 6]] = event
        return events

    def _parse_event(self, raw: bytes) -> Event | None:
        self._parses_left -= 1
        if self._parses_left < 0:  # enough: the rest of this stream is not read
            self._held.clear()
            self._held_size = 0
            return _GAVE_UP
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
        if _OBJECT_START.match(payload) is None:  # no JSON object: not worth a parse
            return _UNNAMED if event_name == "message" else Event(event_name, None)
        try:
            data = untrusted.loads(payload)
        except ValueError:
            self._parses_left -= 20  # a failed parse costs ~20 skipped events: so it counts
            return Event(event_name, None)
        if not isinstance(data, dict):
            return Event(event_name, None)
        if event_name == "message" and isinstance(data.get("type"), str):
            # An unnamed event: the Anthropic payload still says what it is.
            event_name = data["type"]
        return Event(event_name, data)
