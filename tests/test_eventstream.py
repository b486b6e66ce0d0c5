"""The AWS event-stream decoder, and Bedrock's stream read into Anthropic events.

Frames are built here by a small encoder written straight from the published framing (not
ccmeter's own ``encode_message``), and the official smithy-typescript test vectors are decoded
as they are. Every stream is also split at every byte offset and at random offsets.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standin import fallback_events

from ccmeter.eventstream import (
    EventStreamDecoder,
    Header,
    decode_headers,
    encode_message,
    message_ends,
)
from ccmeter.providers import BedrockStream, usage_from_metrics
from ccmeter.tees import METERED_EVENTS
from ccmeter.usage import MessageState

# --- an independent encoder, from the published framing --------------------------------------


def crc(data: bytes) -> int:
    return binascii.crc32(data) & 0xFFFFFFFF


def string_header(name: str, value: str) -> bytes:
    raw = value.encode()
    return bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """prelude (total, headers length, CRC) + headers + payload + message CRC."""
    head = b"".join(string_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(head) + len(payload), len(head))
    prelude += struct.pack(">I", crc(prelude))
    body = prelude + head + payload
    return body + struct.pack(">I", crc(body))


def chunk_frame(event: dict, padding: str = "abcdefghij") -> bytes:
    """A Bedrock PayloadPart: ``{"bytes": base64(event JSON), "p": padding}``."""
    inner = json.dumps(event, separators=(",", ":")).encode()
    payload = json.dumps({"bytes": base64.b64encode(inner).decode(), "p": padding}).encode()
    return frame({":event-type": "chunk", ":content-type": "application/json",
                  ":message-type": "event"}, payload)


def bedrock_events(input_tokens=25, output_tokens=12, *, metrics=True, usage=True) -> list[dict]:
    start_usage = {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, "output_tokens": 1}
    message = {"id": "msg_bdrk_01ABC", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": None}
    if usage:
        message["usage"] = start_usage
    events = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": "héllo — 你好 🎉"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         **({"usage": {"output_tokens": output_tokens}} if usage else {})},
        {"type": "message_stop"},
    ]
    if metrics:
        events[-1]["amazon-bedrock-invocationMetrics"] = {
            "inputTokenCount": input_tokens, "outputTokenCount": output_tokens,
            "invocationLatency": 812, "firstByteLatency": 301}
    return events


def bedrock_stream(**kwargs) -> bytes:
    return b"".join(chunk_frame(e, "p" * (i * 7 % 23)) for i, e in
                    enumerate(bedrock_events(**kwargs)))


def decode_in_pieces(data: bytes, cuts: list[int]) -> tuple[list, EventStreamDecoder]:
    decoder = EventStreamDecoder()
    messages = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        messages += decoder.feed(data[previous:cut])
        previous = cut
    return messages, decoder


# --- official vectors (smithy-lang/smithy-typescript packages/eventstream-codec/test_vectors) --

VECTORS = {
    "all_headers": "AAAAzAAAAK8PrmTKCmV2ZW50LXR5cGUEAACgDAxjb250ZW50LXR5cGUHABBhcHBsaWNhdGlv"
                   "bi9qc29uCmJvb2wgZmFsc2UBCWJvb2wgdHJ1ZQAEYnl0ZQLPCGJ5dGUgYnVmBgAUSSdtIGEgbGl0"
                   "dGxlIHRlYXBvdCEJdGltZXN0YW1wCAAAAAAAhF/tBWludDE2AwAqBWludDY0BQAAAAACh1eyBHV1"
                   "aWQJAQIDBAUGBwgJCgsMDQ4PEHsnZm9vJzonYmFyJ32rpfEM",
    "empty_message": "AAAAEAAAAAAFwkjrfZjI/w==",
    "int32_header": "AAAALQAAABBBxCS4CmV2ZW50LXR5cGUEAACgDHsnZm9vJzonYmFyJ3029ICg",
    "payload_no_headers": "AAAAHQAAAAD9Uoxaeydmb28nOidiYXInfcNlOTY=",
    "payload_one_str_header": "AAAAPQAAACAH/YOWDGNvbnRlbnQtdHlwZQcAEGFwcGxpY2F0aW9uL2pzb257J2Zv"
                              "byc6J2Jhcid9jZwIsQ==",
}
CORRUPT = {
    "corrupted_header_len": ("AAAAPQAAACEH/YOWDGNvbnRlbnQtdHlwZQcAEGFwcGxpY2F0aW9uL2pzb257J2Zvbyc6"
                             "J2Jhcid9jZwIsQ==", "prelude CRC"),
    "corrupted_headers": ("AAAAPQAAACAH/YOWDGNvbnRlbnQtdHlwZQcAEGFwcGxpY2F0aW9uL2pzb257YWZvbyc6J2"
                          "Jhcid9jZwIsQ==", "message CRC"),
    "corrupted_length": ("AAAAPgAAACAH/YOWDGNvbnRlbnQtdHlwZQcAEGFwcGxpY2F0aW9uL2pzb257J2Zvbyc6J2Jh"
                         "cid9jZwIsQ==", "prelude CRC"),
    "corrupted_payload": ("AAAAHQAAAAD9UoxaWydmb28nOidiYXInfcNlOTY=", "message CRC"),
}


def test_official_all_headers_vector_decodes_every_value_type():
    [message] = EventStreamDecoder().feed(base64.b64decode(VECTORS["all_headers"]))
    assert message.payload == b"{'foo':'bar'}"
    assert message.headers == {
        "event-type": 40972,  # int32
        "content-type": "application/json",  # string
        "bool false": False,
        "bool true": True,
        "byte": -49,
        "byte buf": b"I'm a little teapot!",
        "timestamp": datetime(1970, 1, 1, 2, 24, 35, 309000, tzinfo=UTC),  # 8675309 ms
        "int16": 42,
        "int64": 42424242,
        "uuid": uuid.UUID("01020304-0506-0708-090a-0b0c0d0e0f10"),
    }


def test_official_all_headers_vector_re_encodes_byte_for_byte():
    raw = base64.b64decode(VECTORS["all_headers"])
    [message] = EventStreamDecoder().feed(raw)
    types = [4, 7, 1, 0, 2, 6, 8, 3, 5, 9]  # int32 string false true byte bytes ts short long uuid
    headers = {k: Header(t, v) for (k, v), t in zip(message.headers.items(), types, strict=True)}
    assert encode_message(headers, message.payload) == raw


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_official_vectors_decode_at_every_split(name):
    raw = base64.b64decode(VECTORS[name])
    whole = EventStreamDecoder().feed(raw)
    assert len(whole) == 1
    for cut in range(len(raw) + 1):
        messages, decoder = decode_in_pieces(raw, [cut])
        assert messages == whole and decoder.error is None and decoder.pending == 0


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_official_corrupt_vectors_are_refused(name):
    raw, reason = base64.b64decode(CORRUPT[name][0]), CORRUPT[name][1]
    decoder = EventStreamDecoder()
    assert decoder.feed(raw) == []
    assert decoder.failed and reason in decoder.error
    assert decoder.feed(base64.b64decode(VECTORS["empty_message"])) == []  # stays failed


# --- our own frames, split everywhere ----------------------------------------------------------


def test_bedrock_stream_split_at_every_byte_offset():
    data = bedrock_stream()
    expected = EventStreamDecoder().feed(data)
    assert len(expected) == 6
    assert all(m.message_type == "event" and m.event_type == "chunk" for m in expected)
    for cut in range(len(data) + 1):
        messages, decoder = decode_in_pieces(data, [cut])
        assert messages == expected, cut
        assert decoder.error is None and decoder.pending == 0


def test_every_pair_of_split_points_in_the_first_two_frames():
    data = bedrock_stream()
    expected = EventStreamDecoder().feed(data)
    span = message_ends(data)[1]
    for a in range(0, span, 3):
        for b in range(a, span, 5):
            assert decode_in_pieces(data, [a, b])[0] == expected


def test_one_chunk_holding_many_frames_and_one_byte_chunks():
    data = bedrock_stream() * 3
    assert len(EventStreamDecoder().feed(data)) == 18
    decoder = EventStreamDecoder()
    assert sum(len(decoder.feed(data[i:i + 1])) for i in range(len(data))) == 18


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40), st.integers(0, 400))
def test_random_splits_give_the_same_messages(cuts, input_tokens):
    data = bedrock_stream(input_tokens=input_tokens)
    expected = EventStreamDecoder().feed(data)
    messages, decoder = decode_in_pieces(data, [c % (len(data) + 1) for c in cuts])
    assert messages == expected and decoder.pending == 0


def test_message_ends_are_the_frame_boundaries():
    frames = [chunk_frame(e) for e in bedrock_events()]
    data = b"".join(frames)
    ends, total = [], 0
    for f in frames:
        total += len(f)
        ends.append(total)
    assert message_ends(data) == ends
    assert message_ends(data[:-1]) == ends[:-1]  # the partial last frame is not counted


# --- corruption --------------------------------------------------------------------------------


def test_corrupt_prelude_crc_fails_the_stream_after_the_good_frames():
    frames = [chunk_frame(e) for e in bedrock_events()]
    bad = bytearray(frames[2])
    bad[9] ^= 0x01  # inside the prelude CRC
    data = frames[0] + frames[1] + bytes(bad) + frames[3]
    decoder = EventStreamDecoder()
    messages = decoder.feed(data)
    assert len(messages) == 2  # the good ones before the break still count
    assert decoder.error == "prelude CRC mismatch"
    assert decoder.feed(frames[4]) == []  # no later boundary can be trusted


def test_corrupt_message_crc_and_corrupt_payload():
    good = chunk_frame(bedrock_events()[0])
    for index in (len(good) - 1, len(good) - 10):  # the trailer, then a payload byte
        bad = bytearray(good)
        bad[index] ^= 0x40
        decoder = EventStreamDecoder()
        assert decoder.feed(bytes(bad)) == []
        assert decoder.error == "message CRC mismatch"


def test_impossible_lengths_with_valid_prelude_crc_are_refused():
    for total, headers_len in ((8, 0), (16, 1), (64 * 1024 * 1024, 0)):
        prelude = struct.pack(">II", total, headers_len)
        decoder = EventStreamDecoder()
        decoder.feed(prelude + struct.pack(">I", crc(prelude)) + b"\0" * 8)
        assert decoder.failed, (total, headers_len)


def test_unknown_header_type_is_an_error_not_a_crash():
    with pytest.raises(ValueError, match="unknown header value type"):
        decode_headers(b"\x01a\x0b")
    with pytest.raises(ValueError, match="truncated"):
        decode_headers(b"\x01a\x07\x00\x09abc")


header_values = st.one_of(
    st.booleans(),
    st.builds(lambda v: Header(2, v), st.integers(-128, 127)),
    st.builds(lambda v: Header(3, v), st.integers(-(2**15), 2**15 - 1)),
    st.builds(lambda v: Header(4, v), st.integers(-(2**31), 2**31 - 1)),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=300),
    st.text(max_size=200),
    st.builds(lambda ms: datetime.fromtimestamp(ms / 1000, UTC), st.integers(0, 2**41)),
    st.uuids(),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) < 256),
                       header_values, max_size=6),
       st.binary(max_size=500), st.integers(0, 2000))
def test_round_trip_of_every_header_type(headers, payload, cut):
    raw = encode_message(headers, payload)
    messages, _ = decode_in_pieces(raw, [cut % (len(raw) + 1)])
    [message] = messages
    plain = {k: v.value if isinstance(v, Header) else v for k, v in headers.items()}
    assert message.headers == plain and message.payload == payload


# --- Bedrock: frames to Anthropic events ---------------------------------------------------------


def feed_all(stream: BedrockStream, data: bytes, size: int = 0) -> list:
    events = []
    if size:
        for i in range(0, len(data), size):
            events += stream.feed(data[i:i + size])
    else:
        events += stream.feed(data)
    events += stream.flush()
    return events


def test_chunk_payloads_become_anthropic_events():
    events = feed_all(BedrockStream(), bedrock_stream())
    names = [e.name for e in events]
    assert names == ["message_start", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    assert events[0].data["message"]["usage"]["input_tokens"] == 25
    assert events[2].data is None  # text deltas are not JSON-decoded unless wanted
    wanted = BedrockStream(wanted=frozenset({"content_block_delta"}))
    assert feed_all(wanted, bedrock_stream())[2].data["delta"]["text"] == "héllo — 你好 🎉"


def test_a_fallback_block_in_bedrock_frames_relabels_the_model():
    data = b"".join(chunk_frame(event) for _, event in fallback_events())
    for size in (0, 1, 7):
        state = MessageState()
        for event in feed_all(BedrockStream(wanted=METERED_EVENTS), data, size=size):
            if event.data is not None:
                state.apply_event(event.name, event.data)
        assert (state.model, state.fallback_from) == ("claude-sonnet-4-5", "claude-opus-4-7")
        assert (state.usage.input_tokens, state.usage.output_tokens) == (25, 8)


def test_invocation_metrics_stand_in_only_when_usage_is_missing():
    with_usage = BedrockStream()
    names = [e.name for e in feed_all(with_usage, bedrock_stream(usage=True))]
    assert names.count("message_delta") == 1 and with_usage.metrics["inputTokenCount"] == 25
    without = BedrockStream()
    events = feed_all(without, bedrock_stream(input_tokens=40, output_tokens=9, usage=False))
    synthetic = [e for e in events if e.name == "message_delta" and e.data.get("usage")]
    assert synthetic[0].data["usage"] == {"input_tokens": 40, "output_tokens": 9}
    assert events[-1].name == "message_stop"


def test_usage_from_metrics_reads_cache_counts_and_ignores_junk():
    assert usage_from_metrics({"inputTokenCount": 5, "outputTokenCount": "7",
                               "cacheReadInputTokenCount": 100, "cacheWriteInputTokenCount": 3,
                               "invocationLatency": 1, "x": True}) == {
        "input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 3}


def test_exception_frame_becomes_an_error_event():
    exc = frame({":message-type": "exception", ":exception-type": "modelStreamErrorException",
                 ":content-type": "application/json"}, b'{"message":"model fell over"}')
    data = b"".join(chunk_frame(e) for e in bedrock_events()[:3]) + exc
    events = feed_all(BedrockStream(), data, size=7)
    assert events[-1].name == "error"
    assert events[-1].data["error"] == {"type": "modelStreamErrorException",
                                        "message": "model fell over"}
    err = frame({":message-type": "error", ":error-code": "InternalFailure",
                 ":error-message": "boom"}, b"")
    assert feed_all(BedrockStream(), err)[0].data["error"] == {"type": "InternalFailure",
                                                              "message": "boom"}


def test_frames_that_are_not_payload_parts_are_skipped():
    keepalive = frame({":message-type": "event", ":event-type": "chunk"}, b'{"ping":1}')
    other = frame({":message-type": "event", ":event-type": "somethingNew"}, b"{}")
    stream = BedrockStream()
    assert feed_all(stream, keepalive + other + chunk_frame({"no": "type"})) == []
    assert stream.skipped == 3 and stream.error is None


def test_a_stream_cut_inside_a_frame_is_reported_at_flush():
    data = bedrock_stream()
    stream = BedrockStream()
    stream.feed(data[:-5])
    stream.flush()
    assert stream.error is not None and "inside a frame" in stream.error


def test_bad_prelude_tells_a_broken_boundary_from_a_partial_one():
    from ccmeter.eventstream import bad_prelude

    good = chunk_frame(bedrock_events()[0])
    assert not bad_prelude(good) and not bad_prelude(good[:11]) and not bad_prelude(good[:12])
    broken = bytearray(good)
    broken[10] ^= 1
    assert bad_prelude(bytes(broken)) and bad_prelude(good + bytes(broken), len(good))
