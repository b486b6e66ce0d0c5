"""Untrusted input is bounded before any work on it (issue 13, F4 F8 F9 F11 F12), pure side:
text fields cut and cleaned, JSON too deep for Python's parser still read, counts that are
not counts never priced, an event too large to hold skipped in linear time and reported."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standin import message_events, serialize_events

from ccmeter import untrusted
from ccmeter.attribution import attribute, session_id, working_dir
from ccmeter.pricing import Catalog
from ccmeter.sse import MAX_EVENT_BYTES, SSEDecoder
from ccmeter.usage import MessageState, Usage, merge_usage

WHEN = datetime(2026, 11, 1, tzinfo=UTC)


# --- text fields ---------------------------------------------------------------------------


def test_text_fields_are_cut_first_then_cleaned_of_control_characters():
    assert untrusted.text(" a\x00b\rc\x1b[31m\x9b2J ", 100) == "abc[31m2J"
    assert untrusted.text("x" * 10_000, 200) == "x" * 200
    assert untrusted.text("\x00\r\n", 10) is None and untrusted.text(7, 10) is None


def test_headers_and_ids_are_length_limited_and_carry_no_control_characters():
    headers = {"x-claude-code-session-id": "s\x00ess\r\n" + "9" * 100_000,
               "x-ccmeter-project": "\x1b]0;pwned\x07proj\x00" + "p" * 100_000,
               "x-claude-code-agent-id": "a\x00" * 50_000}
    who = attribute(headers, {"model": "claude-opus-4-8\x00\r" + "m" * 100_000})
    assert who.session_id is not None and len(who.session_id) <= 128
    assert who.project is not None and len(who.project) <= 200
    assert who.agent_id is not None and len(who.agent_id) <= 128
    assert who.requested_model is not None and len(who.requested_model) <= 256
    for value in (who.session_id, who.project, who.agent_id, who.requested_model):
        assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)
    assert who.project.startswith("]0;pwnedproj")


def test_a_100kb_working_directory_line_is_not_read_and_costs_nothing():
    cwd = "/" + "a/" * 50_000
    body = {"system": [{"type": "text", "text": f"Env:\n - Primary working directory: {cwd}\n"}]}
    started = time.perf_counter()
    assert working_dir(body) is None  # no real folder has a 100 KB path
    assert time.perf_counter() - started < 0.05
    ok = {"system": "x\n - Primary working directory: /srv/app\r\n"}
    assert working_dir(ok) == "/srv/app"


# --- deep JSON -----------------------------------------------------------------------------


def deep(n: int, inner: str = "1") -> str:
    return '{"a":' * n + inner + "}" * n


def test_json_too_deep_for_json_loads_is_read_with_its_deepest_values_null():
    doc = ('{"model":"claude-opus-4-8","content":[' + deep(100_000) + '],'
           '"usage":{"input_tokens":5},"s":"[[[{{\\"]]"}')
    with pytest.raises(RecursionError):
        json.loads(doc)
    value = untrusted.loads(doc.encode())
    assert value["model"] == "claude-opus-4-8" and value["usage"] == {"input_tokens": 5}
    assert value["s"] == '[[[{{"]]'
    node, depth = value["content"][0], 3  # its depth: object, list, this
    while isinstance(node, dict):
        node, depth = node["a"], depth + 1
    assert node is None and depth == untrusted.MAX_DEPTH + 1


def test_deep_json_fallback_is_bounded_in_time_and_refuses_garbage():
    n = 2_000_000
    started = time.perf_counter()
    assert untrusted.loads(b"[" * n + b"]" * n)[0][0] is not None
    assert time.perf_counter() - started < 1.0
    many = b'[' + b'["a",' * 1_000_000 + b"1" + b"]" * 1_000_001  # a step per string
    started = time.perf_counter()
    with pytest.raises(ValueError):
        untrusted.loads(many)
    assert time.perf_counter() - started < 1.0
    for bad in (b"[" * 5000, b"[" * 5000 + b"]" * 5001, b'{"a":' * 5000 + b"1"):
        with pytest.raises(ValueError):
            untrusted.loads(bad)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(alphabet='[]{}"ab'), inner, max_size=3),
                    max_leaves=20))
def test_prune_keeps_any_shallow_document_as_it_is(value):
    raw = json.dumps(value).encode()
    assert json.loads(untrusted.prune(raw, untrusted.MAX_DEPTH) or b"") == value


def test_deep_metadata_user_id_still_gives_no_error():
    user_id = '{"session_id":"abc","x":' + "[" * 2000 + "]" * 2000 + "}"  # < 4096 chars
    assert session_id({}, {"metadata": {"user_id": user_id}}) == "abc"


# --- counts --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1_000_000, -1, 10**30, "100", 1.5, True, [1], {"n": 1}])
def test_a_count_that_is_not_a_count_is_never_priced(bad):
    usage = merge_usage(None, {"input_tokens": bad, "output_tokens": 14})
    assert usage.problems and usage.input_tokens == 0
    price = Catalog.bundled().price("claude-opus-4-8", usage, WHEN)
    assert price.cost_picousd is None and "input_tokens" in (price.note or "")


def test_bad_counts_anywhere_are_noted_and_a_later_good_value_clears_them():
    usage = merge_usage(None, {"input_tokens": 10, "cache_creation": {
        "ephemeral_5m_input_tokens": -5}, "server_tool_use": {"web_search_requests": -2}})
    assert len(usage.problems) == 2
    usage = merge_usage(None, {"input_tokens": -3, "output_tokens": 1})
    usage = merge_usage(usage, {"input_tokens": 12, "output_tokens": 9})
    assert usage.problems == () and (usage.input_tokens, usage.output_tokens) == (12, 9)
    assert Catalog.bundled().price("claude-opus-4-8", usage, WHEN).cost_picousd > 0
    null = merge_usage(Usage(input_tokens=4), {"input_tokens": None})
    assert null.problems == () and null.input_tokens == 4


def test_message_ids_models_and_reasons_are_bounded_and_clean():
    state = MessageState()
    state.apply_message({"id": "msg_\x00" + "1" * 10_000, "model": "claude-opus-4-8\r\n",
                         "stop_reason": "end_turn\x1b[2J", "usage": {"input_tokens": 1}})
    assert state.model == "claude-opus-4-8" and state.stop_reason == "end_turn[2J"
    assert state.message_id is not None and len(state.message_id) <= 128
    assert "\x00" not in state.message_id


# --- an event too large to hold ------------------------------------------------------------


def test_an_event_over_the_limit_is_skipped_in_linear_time_and_reported():
    start = (b'event: message_start\ndata: {"type":"message_start","message":{"content":"'
             + b"x" * (MAX_EVENT_BYTES + 100_000) + b'"}}\n\n')
    body = start + serialize_events(message_events()[1:])
    decoder, events = SSEDecoder(), []
    started = time.perf_counter()
    for at in range(0, len(body), 4096):
        events += decoder.feed(body[at:at + 4096])
    events += decoder.flush()
    assert time.perf_counter() - started < 2.0  # was quadratic: 7.6 s for 20 MB
    assert (events[0].name, events[0].data, events[0].too_large) == ("message_start", None, True)
    assert [e.name for e in events if e.name.startswith("message_")][-2:] == [
        "message_delta", "message_stop"]
    state = MessageState()
    for event in events:
        if event.too_large:
            state.unread(event.name, event.unread or "")
        elif event.data is not None:
            state.apply_event(event.name, event.data)
    assert state.usage is not None and state.usage.problems  # priced as unknown, never $0
    assert Catalog.bundled().price("claude-opus-4-8", state.usage, WHEN).cost_picousd is None


def test_lone_surrogates_are_kept_as_their_escapes():
    # a \xff byte in a header arrives as U+DCFF; "\ud800" in JSON as U+D800: neither can be
    # written as UTF-8 (to the database, the log, a terminal)
    assert untrusted.text("sess-\udcff", 100) == "sess-\\xff"
    assert untrusted.text("claude-opus-4-8\ud800", 100) == "claude-opus-4-8\\ud800"
    assert untrusted.text("ok", 100) == "ok"


# --- a compressed answer that expands without end -------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_a_decompression_bomb_stops_the_metered_copy_at_its_budget(encoding):
    from standin import compress

    from ccmeter.decompress import TooLarge, incremental_decoder

    bomb = compress(b"\n" * (64 * 2**20), encoding)  # 64 MB of blank lines
    decode = incremental_decoder(encoding, budget=8 * 2**20)
    out = 0
    with pytest.raises(TooLarge):
        for at in range(0, len(bomb), 4096):
            out += len(decode(bomb[at:at + 4096]))
    assert out <= 8 * 2**20
    pings = b"event: ping\ndata: {}\n\n" * 1000
    assert incremental_decoder(encoding, budget=8 * 2**20)(compress(pings, encoding)) == pings


def test_a_model_named_in_a_cloud_url_is_cut_and_cleaned():
    from ccmeter.providers import classify

    bedrock = classify("POST", "bedrock-runtime.us-east-1.amazonaws.com",
                       "/model/us.anthropic.claude-sonnet-4-5%1b%5b31m%00" + "x" * 5000
                       + "/invoke")
    vertex = classify("POST", "us-east5-aiplatform.googleapis.com",
                      "/v1/projects/p/locations/us-east5/publishers/anthropic/models/"
                      "claude-x%0d%0a:rawPredict")
    assert bedrock is not None and vertex is not None
    assert bedrock.model is not None and len(bedrock.model) <= 256
    assert bedrock.model.startswith("us.anthropic.claude-sonnet-4-5[31m")
    assert vertex.model == "claude-x"


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 700])
def test_a_message_start_too_large_to_hold_is_read_from_its_ends(cut):
    start = {"type": "message_start", "message": {
        "model": "claude-opus-4-8", "id": "msg_01big", "content": "x" * (MAX_EVENT_BYTES + 5000),
        "usage": {"input_tokens": 321, "cache_creation": {"ephemeral_5m_input_tokens": 7},
                  "output_tokens": 1, "service_tier": "standard"}}}
    body = b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n"
    body += serialize_events(message_events()[-1:])  # message_stop
    at = body.index(b"\n\n", len(body) - 200) + 1 - cut  # split around the event's end
    decoder = SSEDecoder()
    events = [*decoder.feed(body[:2**20]), *decoder.feed(body[2**20:at]),
              *decoder.feed(body[at:]), *decoder.flush()]
    first = events[0]
    assert first.name == "message_start" and first.unread and first.data is not None
    assert first.data["message"] == {"model": "claude-opus-4-8", "id": "msg_01big",
                                     "usage": start["message"]["usage"]}
    assert [e.name for e in events[1:]] == ["message_stop"]
