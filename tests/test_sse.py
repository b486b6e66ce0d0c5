"""The SSE decoder: any chunking of a stream yields the same events."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from standin import message_events, serialize_events

from ccmeter.sse import SSEDecoder


def decode_all(chunks: list[bytes]) -> list[tuple[str, dict | None]]:
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events += [(e.name, e.data) for e in decoder.feed(chunk)]
    events += [(e.name, e.data) for e in decoder.flush()]
    return events


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


STREAM = serialize_events(message_events("claude-opus-4-8", input_tokens=10, output_tokens=5,
                                         tool_use={"name": "Read", "input": {"file_path": "/x"}}))


def test_whole_stream_gives_usage_events_with_json_and_skips_text_deltas():
    events = decode_all([STREAM])
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_delta" in names and "ping" in names
    parsed = {name: data for name, data in events if data is not None}
    assert set(parsed) == {"message_start", "message_delta", "message_stop"}
    assert parsed["message_start"]["message"]["usage"]["input_tokens"] == 10
    # Text deltas are recognised by name but their JSON is never decoded (speed).
    assert all(data is None for name, data in events if name == "content_block_delta")


def test_every_single_byte_offset_split_gives_the_same_events():
    whole = decode_all([STREAM])
    for cut in range(1, len(STREAM)):
        assert decode_all([STREAM[:cut], STREAM[cut:]]) == whole, cut


def test_one_byte_at_a_time():
    assert decode_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == decode_all([STREAM])


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
       crlf=st.booleans())
def test_any_chunking_and_line_ending_gives_the_same_events(cuts, crlf):
    body = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    assert decode_all(split(body, cuts)) == decode_all([STREAM])


def test_cr_only_line_endings_and_crlf_split_across_chunks():
    body = STREAM.replace(b"\n", b"\r")
    assert decode_all([body]) == decode_all([STREAM])
    crlf = STREAM.replace(b"\n", b"\r\n")
    # Split exactly between a CR and its LF: must not count as two line breaks.
    at = crlf.index(b"\r\n") + 1
    assert decode_all([crlf[:at], crlf[at:]]) == decode_all([STREAM])


def test_comments_multiline_data_no_space_and_unnamed_events():
    body = (
        b": keep-alive comment\n"
        b"event:message_start\n"
        b'data: {"type":"message_start",\n'
        b'data: "message":{"id":"m1"}}\n'
        b"\n"
        b'data: {"type":"message_delta","usage":{"output_tokens":3}}\n'
        b"\n"
        b"event: ping\n\n"  # no data: dispatches nothing
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    )
    events = decode_all([body])
    assert events == [
        ("message_start", {"type": "message_start", "message": {"id": "m1"}}),
        ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 3}}),
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
    ]


def test_invalid_json_and_non_object_data_do_not_raise():
    body = b"event: message_delta\ndata: {nope\n\nevent: message_stop\ndata: [1]\n\n"
    events = decode_all([body])
    assert events == [("message_delta", None), ("message_stop", None)]


def test_unterminated_event_is_not_dispatched():
    decoder = SSEDecoder()
    assert decoder.feed(b'event: message_stop\ndata: {"type":"message_stop"}\n') == []
    assert decoder.flush() == []


def test_utf8_split_inside_a_character():
    text = "héllo — 你好 🎉"
    payload = json.dumps({"type": "message_start", "message": {"id": text}}, ensure_ascii=False)
    body = f"event: message_start\ndata: {payload}\n\n".encode()
    at = body.index("你".encode()) + 1
    assert decode_all([body[:at], body[at:]])[0][1]["message"]["id"] == text
