"""Transcript lines -> calls (:mod:`ccmeter.transcripts`): what each line is, and one record
per API call whatever the order and repetition of its lines."""

from __future__ import annotations

import json
from functools import reduce
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ccmeter import transcripts
from ccmeter.transcripts import CALL, MALFORMED, OTHER, SYNTHETIC, UNKNOWN, classify, merge

FIXTURE = Path(__file__).parent / "fixtures" / "claude-code-2.1.197-session.jsonl"


def assistant_line(*, message_id: str | None = "msg_01A", request_id: str | None = "req_01A",
                   model: str = "claude-opus-4-8", usage: dict | None = None,
                   timestamp: str = "2026-11-02T10:00:00.000Z", session: str = "sess-1",
                   cwd: str = "/home/ana/shop-api", sidechain: bool = False,
                   agent: str | None = None, text: str = "Hello.") -> bytes:
    """An assistant line shaped as Claude Code 2.1.197 writes it (keys in its order)."""
    message = {"model": model, "id": message_id, "type": "message", "role": "assistant",
               "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
               "stop_sequence": None,
               "usage": usage if usage is not None else {
                   "input_tokens": 27, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, "output_tokens": 31}}
    if message_id is None:
        del message["id"]
    doc = {"parentUuid": None, "isSidechain": sidechain, "message": message}
    if request_id is not None:
        doc["requestId"] = request_id
    doc.update({"type": "assistant", "uuid": "u-1", "timestamp": timestamp,
                "userType": "external", "cwd": cwd, "sessionId": session, "version": "2.1.197"})
    if agent:
        doc["agentId"] = agent
    return json.dumps(doc, separators=(",", ":")).encode()


def test_the_cli_s_own_transcript_reads_as_its_calls():
    kinds = [classify(line)[0] for line in FIXTURE.read_bytes().splitlines()]
    assert kinds.count(CALL) == 3 and MALFORMED not in kinds and UNKNOWN not in kinds
    records = [r for _, r in map(classify, FIXTURE.read_bytes().splitlines()) if r]
    merged = {}
    for record in records:
        merged[record.key] = merge(merged[record.key], record) if record.key in merged else record
    assert len(merged) == 2  # the first answer is on two lines (text, then tool_use)
    first = next(iter(merged.values()))
    assert first.request_id.startswith("req_") and first.message_id.startswith("msg_")
    assert first.model == "claude-opus-4-8" and first.session_id
    assert (first.usage.input_tokens, first.usage.output_tokens) == (27, 31)
    assert first.cwd == "/home/ana/work/shop-api/src" and not first.sidechain


def test_each_kind_of_line():
    assert classify(assistant_line())[0] == CALL
    assert classify(assistant_line(model="<synthetic>")) == (SYNTHETIC, None)
    assert classify(b'{"type":"user","message":{"role":"user","content":"hi"}}')[0] == OTHER
    assert classify(b'{"type":"summary","summary":"x","leafUuid":"u"}')[0] == OTHER
    assert classify(b'{"type":"mystery-record","x":1}')[0] == UNKNOWN
    assert classify(b'{"type":"assistant","usage"')[0] == MALFORMED  # cut mid-line
    assert classify(b"not json at all")[0] == MALFORMED
    assert classify(b'["type","assistant"]')[0] == MALFORMED
    assert classify(b"\xff\xfe garbage")[0] == MALFORMED
    assert classify(b"[" * 100_000 + b"]" * 100_000)[0] == MALFORMED  # too deep: no crash
    assert classify(b"   ")[0] == transcripts.BLANK
    # no id to key the call on, no time, a usage that is not an object: not a call
    assert classify(assistant_line(message_id=None, request_id=None))[0] == MALFORMED
    assert classify(assistant_line(timestamp="yesterday"))[0] == MALFORMED
    assert classify(assistant_line(usage="lots"))[0] == MALFORMED  # type: ignore[arg-type]
    # "assistant" and a usage inside another record (a subagent's progress): not a call
    nested = json.dumps({"type": "progress", "data": {"message": json.loads(assistant_line())}})
    assert classify(nested.encode())[0] == OTHER


def test_a_call_is_keyed_on_its_message_id_else_its_request_id():
    assert classify(assistant_line())[1].key == "msg_01A"
    assert classify(assistant_line(message_id=None))[1].key == "req_01A"


def test_counts_that_are_not_counts_are_problems_not_money():
    _, record = classify(assistant_line(usage={"input_tokens": -5, "output_tokens": 3}))
    assert record.usage.problems and record.usage.output_tokens == 3


def test_a_sidechain_line_names_its_agent():
    _, record = classify(assistant_line(sidechain=True, agent="a12a1b56c1403f081"))
    assert record.sidechain and record.agent_id == "a12a1b56c1403f081"


# --- any order and repetition of a call's lines: one record --------------------------------

_counts = st.integers(min_value=0, max_value=5_000_000)


@st.composite
def usage_dicts(draw):
    usage = {}
    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                "output_tokens"):
        if draw(st.booleans()):
            usage[key] = draw(_counts)
    if draw(st.booleans()):
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": draw(_counts),
                                   "ephemeral_1h_input_tokens": draw(_counts)}
    if draw(st.booleans()):
        usage["server_tool_use"] = {"web_search_requests": draw(st.integers(0, 9))}
    if draw(st.booleans()):
        usage["service_tier"] = draw(st.sampled_from(["standard", "priority"]))
    return usage


@st.composite
def call_lines(draw):
    """The lines of one call: partial usages, a few timestamps and sessions (a resumed
    session copies earlier lines into a new file under its own id)."""
    count = draw(st.integers(min_value=1, max_value=6))
    return [assistant_line(
        usage=draw(usage_dicts()),
        timestamp=f"2026-11-02T10:00:0{draw(st.integers(0, 9))}.000Z",
        session=draw(st.sampled_from(["sess-1", "sess-2"])),
        request_id=draw(st.sampled_from(["req_01A", None])),
        text=draw(st.text(max_size=20)),
    ) for _ in range(count)]


def _fold(lines: list[bytes]):
    return reduce(merge, (classify(line)[1] for line in lines))


@settings(max_examples=300, deadline=None)
@given(call_lines(), st.randoms(use_true_random=False), st.lists(st.integers(0, 5), max_size=8))
def test_any_order_and_repetition_of_a_call_s_lines_merges_to_one_record(lines, rnd, repeats):
    expected = _fold(lines)
    shuffled = list(lines) + [lines[i % len(lines)] for i in repeats]
    rnd.shuffle(shuffled)
    got = _fold(shuffled)
    assert got == expected
    # the most complete usage: every count is the largest any line gave
    for name in ("input_tokens", "cache_read_tokens", "output_tokens"):
        assert getattr(got.usage, name) == max(getattr(classify(line)[1].usage, name)
                                               for line in lines)
    assert got.started_ts == min(classify(line)[1].started_ts for line in lines)


def test_growing_usage_keeps_the_final_counts():
    lines = [assistant_line(usage={"input_tokens": 27, "output_tokens": 1}),
             assistant_line(usage={"input_tokens": 27, "output_tokens": 31}),
             assistant_line(usage={"output_tokens": 12})]
    assert _fold(lines).usage.output_tokens == 31
    assert _fold(lines[::-1]).usage.input_tokens == 27


_any_value = st.one_of(st.none(), st.integers(-5, 2_000_000_000), st.floats(allow_nan=False),
                       st.text(max_size=5), st.booleans())


@settings(max_examples=500, deadline=None)
@given(st.one_of(usage_dicts(), st.dictionaries(st.sampled_from([
    "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens",
    "service_tier", "speed", "inference_geo", "unknown_key"]), _any_value, max_size=6)),
    st.one_of(st.none(), st.dictionaries(st.sampled_from([
        "ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"]), _any_value)),
    st.one_of(st.none(), st.dictionaries(st.sampled_from([
        "web_search_requests", "web_fetch_requests"]), _any_value)))
def test_the_quick_usage_reader_reads_as_the_meter_does(raw, split, tools):
    from ccmeter.usage import merge_usage

    if split is not None:
        raw = {**raw, "cache_creation": split}
    if tools is not None:
        raw = {**raw, "server_tool_use": tools}
    assert transcripts.read_usage(raw) == merge_usage(None, raw)


def _full_parse(line: bytes):
    doc = json.loads(line)
    return transcripts._call(doc) if doc.get("type") == "assistant" else (OTHER, None)


_tricky = st.sampled_from([
    "plain", '"content":[', ',"stop_reason":"x"', '"usage":{"input_tokens":9}', "\\", '"}]}',
])


@settings(max_examples=300, deadline=None)
@given(usage_dicts(), st.lists(_tricky, max_size=4), st.dictionaries(
    st.sampled_from(["usage", "stop_reason", "content", "model", "type"]),
    st.one_of(st.integers(0, 9), st.text(max_size=4), st.just({"input_tokens": 7})),
    max_size=4))
def test_reading_a_line_without_its_content_reads_as_the_whole_line(usage, texts, tool_input):
    doc = json.loads(assistant_line(usage=usage, text="".join(texts)))
    doc["message"]["content"].append({"type": "tool_use", "id": "toolu_1", "name": "Edit",
                                      "input": tool_input})
    line = json.dumps(doc, separators=(",", ":")).encode()
    assert transcripts._without_content(line) is not None
    assert classify(line) == _full_parse(line)
    # another key order, an extra object after the message: still read right (slow path)
    doc["extra"] = {"usage": {"input_tokens": 99}, "stop_reason": "z"}
    moved = {"message": doc.pop("message"), **doc}
    for variant in (doc | {"message": moved["message"]}, moved):
        line = json.dumps(variant, separators=(",", ":")).encode()
        assert classify(line) == _full_parse(line)
