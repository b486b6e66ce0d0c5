"""Incremental decoder (and encoder) for AWS ``application/vnd.amazon.eventstream`` framing.

Pure and synchronous, like :mod:`ccmeter.sse`: bytes in, cut anywhere, messages out. Bedrock's
``InvokeModelWithResponseStream`` answers in this framing. Every number is big-endian:

    prelude   total length (4) | headers length (4) | CRC32 of those 8 bytes (4)
    headers   repeated: name length (1) | name | value type (1) | value (by type)
    payload   the rest of the message
    trailer   CRC32 of everything before it (4)

A message may span many chunks and one chunk may hold many messages. Both CRCs are checked;
a mismatch raises :class:`EventStreamError` and the decoder stops (a framing error leaves no
way to find the next message boundary). The decoder only reads copies: it never alters the
bytes that the proxy forwards.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

PRELUDE_LENGTH = 12
TRAILER_LENGTH = 4
OVERHEAD = PRELUDE_LENGTH + TRAILER_LENGTH
#: Limits from the AWS event-stream specification (16 MiB messages, 128 KiB of headers).
MAX_MESSAGE_LENGTH = 16 * 1024 * 1024
MAX_HEADERS_LENGTH = 128 * 1024

# Header value types, as numbered by the specification.
TRUE, FALSE, BYTE, SHORT, INTEGER, LONG, BYTES, STRING, TIMESTAMP, UUID = range(10)
_FIXED = {BYTE: ">b", SHORT: ">h", INTEGER: ">i", LONG: ">q", TIMESTAMP: ">q"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

HeaderValue = bool | int | bytes | str | datetime | uuid.UUID


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad CRC, impossible length, bad header)."""


@dataclass(frozen=True)
class Header:
    """A header value with its explicit wire type (only needed to encode ints and bytes
    in a type other than the default one ``encode_message`` picks)."""

    type: int
    value: HeaderValue


@dataclass(frozen=True)
class Message:
    """One decoded event-stream message."""

    headers: dict[str, HeaderValue] = field(default_factory=dict)
    payload: bytes = b""

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None

    @property
    def message_type(self) -> str | None:
        """``event``, ``exception`` or ``error`` (the ``:message-type`` header)."""
        return self.header(":message-type")

    @property
    def event_type(self) -> str | None:
        return self.header(":event-type")

    @property
    def exception_type(self) -> str | None:
        return self.header(":exception-type")


# --- decoding ------------------------------------------------------------------------------


def _crc(data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def decode_headers(data: bytes | memoryview) -> dict[str, HeaderValue]:
    """The header section of one message; raises EventStreamError on malformed input."""
    data = memoryview(data)
    headers: dict[str, HeaderValue] = {}
    pos, end = 0, len(data)
    try:
        while pos < end:
            name_len = data[pos]
            pos += 1
            name = bytes(data[pos : pos + name_len]).decode("utf-8")
            if not name or pos + name_len > end:
                raise EventStreamError("truncated header name")
            pos += name_len
            kind = data[pos]
            pos += 1
            value: HeaderValue
            if kind == TRUE:
                value = True
            elif kind == FALSE:
                value = False
            elif kind in _FIXED:
                fmt = _FIXED[kind]
                size = struct.calcsize(fmt)
                if pos + size > end:
                    raise EventStreamError(f"truncated value of header {name!r}")
                (number,) = struct.unpack_from(fmt, data, pos)
                pos += size
                value = _EPOCH + timedelta(milliseconds=number) if kind == TIMESTAMP else number
            elif kind in (BYTES, STRING):
                (length,) = struct.unpack_from(">H", data, pos)
                pos += 2
                if pos + length > end:
                    raise EventStreamError(f"truncated value of header {name!r}")
                raw = bytes(data[pos : pos + length])
                pos += length
                value = raw.decode("utf-8") if kind == STRING else raw
            elif kind == UUID:
                if pos + 16 > end:
                    raise EventStreamError(f"truncated value of header {name!r}")
                value = uuid.UUID(bytes=bytes(data[pos : pos + 16]))
                pos += 16
            else:
                raise EventStreamError(f"unknown header value type {kind} for {name!r}")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed headers: {exc}") from None
    return headers


class EventStreamDecoder:
    """Feed it chunks with :meth:`feed`; it returns the messages completed by each chunk.

    ``feed`` never raises: on a framing error it returns the good messages before it, sets
    ``error`` and ignores all further input (no later message boundary can be trusted).
    """

    __slots__ = ("_buffer", "error", "messages")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.error: str | None = None
        self.messages = 0

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def pending(self) -> int:
        """Bytes held that do not make a whole message yet."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[Message]:
        if self.error is not None or not chunk:
            return []
        buf = self._buffer
        buf += chunk
        out: list[Message] = []
        pos = 0
        try:
            while len(buf) - pos >= PRELUDE_LENGTH:
                total, headers_len = _check_prelude(buf, pos)
                if len(buf) - pos < total:
                    break
                out.append(_decode_body(memoryview(buf)[pos : pos + total], headers_len))
                pos += total
        except EventStreamError as exc:
            self.error = str(exc)
            self._buffer = bytearray()
        else:
            if pos:
                del buf[:pos]
        self.messages += len(out)
        return out

    def flush(self) -> int:
        """End of stream: returns how many trailing bytes never made a whole message."""
        left = len(self._buffer)
        self._buffer = bytearray()
        return left


def _check_prelude(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    total, headers_len, crc = struct.unpack_from(">III", buf, pos)
    if _crc(memoryview(buf)[pos : pos + 8]) != crc:
        raise EventStreamError("prelude CRC mismatch")
    if total < OVERHEAD or total > MAX_MESSAGE_LENGTH:
        raise EventStreamError(f"impossible message length {total}")
    if headers_len > MAX_HEADERS_LENGTH or headers_len > total - OVERHEAD:
        raise EventStreamError(f"impossible headers length {headers_len}")
    return total, headers_len


def _decode_body(frame: memoryview, headers_len: int) -> Message:
    (crc,) = struct.unpack_from(">I", frame, len(frame) - TRAILER_LENGTH)
    if _crc(frame[: len(frame) - TRAILER_LENGTH]) != crc:
        raise EventStreamError("message CRC mismatch")
    headers = decode_headers(frame[PRELUDE_LENGTH : PRELUDE_LENGTH + headers_len])
    payload = bytes(frame[PRELUDE_LENGTH + headers_len : len(frame) - TRAILER_LENGTH])
    return Message(headers, payload)


def message_ends(data: bytes | bytearray, start: int = 0) -> list[int]:
    """Offsets just past each whole message in ``data`` (from ``start``), by the prelude
    lengths alone; stops at a partial message or a prelude that fails its CRC."""
    ends = []
    pos = start
    while len(data) - pos >= PRELUDE_LENGTH:
        total, _, crc = struct.unpack_from(">III", data, pos)
        if _crc(memoryview(data)[pos : pos + 8]) != crc or total < OVERHEAD:
            break
        if len(data) - pos < total:
            break
        pos += total
        ends.append(pos)
    return ends


def bad_prelude(data: bytes | bytearray, pos: int = 0) -> bool:
    """Whether a whole prelude at ``pos`` fails its CRC or gives an impossible length (so no
    later message boundary can be found)."""
    if len(data) - pos < PRELUDE_LENGTH:
        return False
    try:
        _check_prelude(data, pos)
    except EventStreamError:
        return True
    return False


# --- encoding ------------------------------------------------------------------------------


def _encode_header(name: str, value: HeaderValue | Header) -> bytes:
    raw_name = name.encode("utf-8")
    if not 0 < len(raw_name) < 256:
        raise ValueError(f"header name {name!r} must be 1..255 bytes")
    out = bytes([len(raw_name)]) + raw_name
    kind, val = (value.type, value.value) if isinstance(value, Header) else (None, value)
    if kind is None:
        if isinstance(val, bool):
            kind = TRUE if val else FALSE
        elif isinstance(val, int):
            kind = LONG
        elif isinstance(val, bytes):
            kind = BYTES
        elif isinstance(val, str):
            kind = STRING
        elif isinstance(val, datetime):
            kind = TIMESTAMP
        elif isinstance(val, uuid.UUID):
            kind = UUID
        else:
            raise TypeError(f"cannot encode header {name!r} of type {type(val).__name__}")
    out += bytes([kind])
    if kind in (TRUE, FALSE):
        return out
    if kind == TIMESTAMP:
        assert isinstance(val, datetime)
        millis = (val - _EPOCH) // timedelta(milliseconds=1)
        return out + struct.pack(">q", millis)
    if kind in _FIXED:
        return out + struct.pack(_FIXED[kind], val)
    if kind in (BYTES, STRING):
        raw = val.encode("utf-8") if isinstance(val, str) else bytes(val)  # type: ignore[arg-type]
        return out + struct.pack(">H", len(raw)) + raw
    if kind == UUID:
        assert isinstance(val, uuid.UUID)
        return out + val.bytes
    raise ValueError(f"unknown header value type {kind}")


def encode_message(headers: Mapping[str, HeaderValue | Header], payload: bytes = b"") -> bytes:
    """One message with correct lengths and CRCs (for stand-ins, tests and refusals)."""
    raw_headers = b"".join(_encode_header(k, v) for k, v in headers.items())
    total = OVERHEAD + len(raw_headers) + len(payload)
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", _crc(prelude))
    body = prelude + raw_headers + payload
    return body + struct.pack(">I", _crc(body))


def exception_message(exception_type: str, payload: bytes) -> bytes:
    """An ``exception`` message, the way Bedrock reports a failure inside a stream."""
    return encode_message(
        {
            ":message-type": "exception",
            ":exception-type": exception_type,
            ":content-type": "application/json",
        },
        payload,
    )
