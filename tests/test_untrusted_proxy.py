"""Untrusted input through a real proxy (issue 13 F4 F8 F9 F11 F12, issue 12 Must 9): a field
too long, a count that is not a count, JSON too deep, an odd content-type or an event too
large never stalls the other calls, never stores negative or zero money for a billed call,
and never loses the row. Real HTTP through ``mitmdump -s addons/ccmeter.py`` to the stand-in,
in the user's default folders (only HOME set)."""

from __future__ import annotations

import json
import statistics
import threading
import time
from decimal import Decimal

import pytest
from capsproxy import write_caps
from standin import (
    Reply,
    StandIn,
    json_reply,
    message_events,
    message_json,
    serialize_events,
    sse_reply,
)
from userproxy import UserProxy, calls

SESSION = "5b0c6a4e-1d2f-4e3a-9a7b-123456789abc"
# Opus 4.8: $5 input, $25 output per MTok.
OPUS_IN, OPUS_OUT = Decimal(5), Decimal(25)


def cost(input_tokens: int, output_tokens: int) -> int:
    return int((input_tokens * OPUS_IN + output_tokens * OPUS_OUT) / 10**6 * 10**12)


def request(cwd: str = "/home/dev/src/proj", *, stream: bool = True, session: str = SESSION,
            model: str = "claude-opus-4-8", messages: list | None = None) -> bytes:
    return json.dumps({
        "model": model, "max_tokens": 1000, "stream": stream,
        "metadata": {"user_id": json.dumps({"session_id": session})},
        "system": [{"type": "text", "text": f"You are Claude Code.\n - Primary working "
                                            f"directory: {cwd}\n - Is a git repository: no"}],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": messages or [{"role": "user", "content": "hi"}],
    }).encode()


def deep(n: int) -> str:
    return '{"a":' * n + "1" + "}" * n


@pytest.fixture
def standin():
    with StandIn() as server:
        yield server


@pytest.fixture
def proxy(standin, user_dirs, tmp_path):
    with UserProxy(standin.url, tmp_path) as running:
        yield running


def test_a_100kb_working_directory_line_costs_the_other_calls_nothing(standin, user_dirs,
                                                                       tmp_path):
    """F4: such a line blocked every call for 50 s and grew the proxy to 12.3 GB."""
    standin.default = sse_reply(message_events(input_tokens=100, output_tokens=10),
                                chunk_sizes=4096)
    with UserProxy(standin.url, tmp_path) as proxy:
        base = []
        for _ in range(8):
            started = time.monotonic()
            assert proxy.post(request())[0] == 200
            base.append(time.monotonic() - started)
        rss_before, peak = proxy.rss_mb(), [0.0]
        stop = threading.Event()

        def watch() -> None:  # a runaway proxy is stopped before it takes the machine
            while not stop.wait(0.05):
                peak[0] = max(peak[0], proxy.rss_mb())
                if peak[0] > rss_before + 1500:
                    proxy.proc.kill()
                    return

        bad_status: list[int] = []

        def attack() -> None:
            for _ in range(4):
                try:
                    bad_status.append(proxy.post(request("/" + "a/" * 50_000), timeout=20)[0])
                except OSError:
                    bad_status.append(-1)

        threads = [threading.Thread(target=watch), threading.Thread(target=attack)]
        for thread in threads:
            thread.start()
        during = []
        try:
            for _ in range(16):
                started = time.monotonic()
                assert proxy.post(request(), timeout=20)[0] == 200
                during.append(time.monotonic() - started)
        finally:
            threads[1].join(120)
            stop.set()
            threads[0].join()
    print(f"F4: other calls p50 {statistics.median(base) * 1000:.1f} -> "
          f"{statistics.median(during) * 1000:.1f} ms, max {max(base) * 1000:.1f} -> "
          f"{max(during) * 1000:.1f} ms; proxy RSS {rss_before:.0f} -> peak {peak[0]:.0f} MB")
    assert bad_status == [200] * 4
    # The other calls keep their latency (a few ms here; allow for a busy 2-core machine).
    assert max(during) < max(0.5, 10 * max(base)), (base, during)
    assert statistics.median(during) < max(0.1, 5 * statistics.median(base)), (base, during)
    assert peak[0] - rss_before < 100, (rss_before, peak[0])
    rows = calls(user_dirs.db_file, expect=28)
    assert len(rows) == 28 and all(r["cost_picousd"] == cost(100, 10) for r in rows)
    assert sorted({r["project"] for r in rows}) == ["proj"]  # the session's project
    assert all(r["working_dir_name"] in ("proj", None) for r in rows)


def test_a_negative_count_is_a_metering_error_and_does_not_open_the_caps(standin, user_dirs,
                                                                          tmp_path):
    """F8: input_tokens = -1,000,000 stored -$5.00, and a $0.001 cap then let 40 of 40
    calls through."""
    write_caps(user_dirs.config_dir, {"daily": "0.001", "notify": False})
    standin.enqueue(sse_reply(message_events(input_tokens=-1_000_000, output_tokens=10)))
    standin.default = sse_reply(message_events(input_tokens=1000, output_tokens=10))
    with UserProxy(standin.url, tmp_path) as proxy:
        statuses = []
        for _ in range(6):
            statuses.append(proxy.post(request())[0])
            calls(user_dirs.db_file, expect=len(statuses))
    assert statuses == [200, 200, 429, 429, 429, 429]
    rows = calls(user_dirs.db_file, expect=6)
    bad = rows[0]
    assert bad["cost_picousd"] is None and "input_tokens=-1000000" in bad["pricing_note"]
    assert bad["input_tokens"] >= 0 and bad["output_tokens"] == 10
    assert rows[1]["cost_picousd"] == cost(1000, 10)
    assert all(r["cost_picousd"] is None or r["cost_picousd"] >= 0 for r in rows)
    assert [r["status"] for r in rows[2:]] == ["blocked"] * 4


@pytest.mark.parametrize("value", [10**20, "1000", 1.5, -1])
def test_absurd_or_mistyped_counts_are_never_money(standin, proxy, user_dirs, value):
    standin.enqueue(json_reply(message_json(input_tokens=5, extra_usage={"output_tokens": value})))
    assert proxy.post(request(stream=False))[0] == 200
    [row] = calls(user_dirs.db_file, expect=1)
    assert row["cost_picousd"] is None and "output_tokens=" in row["pricing_note"]


def test_json_nested_too_deep_keeps_the_row_with_its_session_and_model(standin, proxy,
                                                                       user_dirs):
    """F11: past ~1000 levels a request or answer gave no row, or a row without session and
    model (RecursionError)."""
    tool = {"name": "Read", "input": json.loads(deep(500))}
    deep_answer = message_json(input_tokens=300, output_tokens=20, tool_use=tool)
    body = json.dumps(deep_answer).replace(deep(500), deep(5000)).encode()
    standin.enqueue(Reply(headers={"content-type": "application/json"}, body=body))
    events = message_events(input_tokens=200, output_tokens=30)
    events[0][1]["message"]["content"] = [{"type": "text", "text": "x"}]
    stream = serialize_events(events).replace(b'"content":[{"type":"text","text":"x"}]',
                                              b'"content":[' + deep(5000).encode() + b"]", 1)
    standin.enqueue(sse_reply(stream, chunk_sizes=1024))
    messages = [{"role": "user", "content": [{"type": "text", "text": "see"}]}]
    deep_request = request(stream=False, messages=messages).replace(
        b'"text": "see"', b'"text": "see", "deep": ' + deep(5000).encode())
    assert proxy.post(deep_request)[2] == body  # the client gets every byte
    deep_request = deep_request.replace(b'"stream": false', b'"stream": true')
    assert proxy.post(deep_request)[2] == stream
    rows = calls(user_dirs.db_file, expect=2)
    assert [(r["session_id"], r["requested_model"], r["model"], r["project"]) for r in rows] == [
        (SESSION, "claude-opus-4-8", "claude-opus-4-8", "proj")] * 2
    assert [r["cost_picousd"] for r in rows] == [cost(300, 20), cost(200, 30)]


def test_content_type_in_capitals_or_missing_is_still_metered(standin, proxy, user_dirs):
    """F12 / issue 12 Must 9: TEXT/EVENT-STREAM, and answers with no content-type at all,
    were recorded at $0 with tokens 0."""
    events = message_events(input_tokens=400, output_tokens=40)
    loud = sse_reply(events, headers={"content-type": "TEXT/EVENT-STREAM; charset=UTF-8"})
    bare_stream = Reply(body=serialize_events(events), chunked=True)
    bare_json = Reply(body=json.dumps(message_json(input_tokens=400, output_tokens=40)).encode())
    for reply in (loud, bare_stream, bare_json):
        standin.enqueue(reply)
        sent = reply.render()[1]
        assert proxy.post(request(stream=reply is not bare_json))[2] == sent
    rows = calls(user_dirs.db_file, expect=3)
    assert [(r["input_tokens"], r["output_tokens"], r["cost_picousd"]) for r in rows] == [
        (400, 40, cost(400, 40))] * 3


def test_an_answer_without_usage_is_unknown_never_zero(standin, proxy, user_dirs):
    body = message_json()
    del body["usage"]
    standin.enqueue(json_reply(body), Reply(headers={"content-type": "text/event-stream"},
                                            body=b"not an event stream", chunked=True))
    for _ in range(2):
        assert proxy.post(request(stream=False))[0] == 200
    rows = calls(user_dirs.db_file, expect=2)
    assert [r["cost_picousd"] for r in rows] == [None, None]
    assert all("cost unknown" in r["pricing_note"] for r in rows)


def test_a_message_start_over_16_mb_is_billed_from_its_ends_and_memory_stays_bounded(
        standin, proxy, user_dirs):
    """It went unbilled without a note: now its model, id and usage are read from its first
    and last bytes (the rest skipped, 16 MB held at most), or the cost is NULL with a note."""
    events = message_events(input_tokens=500, output_tokens=50, message_id="msg_big")
    events[0][1]["message"]["content"] = [{"type": "text", "text": "x" * (17 * 2**20)}]
    stream = serialize_events(events[:1]) + b"event: message_stop\ndata: {}\n\n"
    usage = events[0][1]["message"].pop("usage")
    events[0][1]["message"]["zzz"] = usage  # usage not where the API puts it: not found
    unfindable = serialize_events(events)
    standin.enqueue(sse_reply(stream, chunk_sizes=65536), sse_reply(unfindable, chunk_sizes=65536))
    rss_before = proxy.rss_mb()
    assert proxy.post(request())[2] == stream
    assert proxy.post(request())[2] == unfindable
    rows = calls(user_dirs.db_file, expect=2)
    assert (rows[0]["cost_picousd"], rows[0]["model"], rows[0]["message_id"]) == (
        cost(500, 1), "claude-opus-4-8", "msg_big")  # the start's own output count
    assert "only its model, id and usage were read" in rows[0]["metering_error"]
    assert rows[1]["cost_picousd"] is None
    assert "message_start event over 16 MB, not read" in rows[1]["pricing_note"]
    assert proxy.rss_mb() - rss_before < 120  # 17 MB passed through, a 16 MB bound held


def test_ids_names_and_models_are_length_limited_and_free_of_control_characters(
        standin, proxy, user_dirs):
    """F9, the storage side: the tag header, the session, the model and the message id."""
    answer = message_json(input_tokens=10, output_tokens=1,
                          message_id="msg_\u001b[2J" + "9" * 5000)
    answer["model"] = "claude-opus-4-8\u0000\r\n"
    standin.enqueue(json_reply(answer))
    headers = {"x-ccmeter-project": "\x1b]0;evil\x07shop" + "p" * 5000,
               "x-claude-code-session-id": "s\x1b[31m" + "1" * 5000}
    body = request(stream=False, model="claude-opus-4-8\u0000\u009b")
    assert proxy.post(body, headers)[0] == 200
    [row] = calls(user_dirs.db_file, expect=1)
    for name, limit in (("project", 200), ("session_id", 128), ("message_id", 128),
                        ("model", 256), ("requested_model", 256)):
        value = row[name]
        assert value and len(value) <= limit, name
        assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value), (name, value)
    assert row["model"] == row["requested_model"] == "claude-opus-4-8"
    assert row["cost_picousd"] == cost(10, 1)


def test_answer_headers_that_are_no_numbers_or_carry_escapes_keep_the_row(standin, proxy,
                                                                          user_dirs):
    """A plan header of ``1e999`` raised OverflowError while the row was built: no row."""
    standin.enqueue(json_reply(message_json(input_tokens=10, output_tokens=1), headers={
        "anthropic-ratelimit-unified-7d-reset": "1e999",
        "anthropic-ratelimit-unified-5h-utilization": "nan",
        "anthropic-ratelimit-unified-status": "allowed\x1b[2J",
        "request-id": "req_\x1b]0;x\x07" + "r" * 5000}))
    assert proxy.post(request(stream=False))[0] == 200
    [row] = calls(user_dirs.db_file, expect=1)
    assert row["cost_picousd"] == cost(10, 1)
    assert (row["plan_7d_reset"], row["plan_5h_utilization"]) == (None, None)
    assert row["plan_status"] == "allowed[2J"
    assert row["request_id"].startswith("req_]0;x") and len(row["request_id"]) <= 128


def test_a_compression_bomb_stops_the_meter_not_the_proxy(standin, proxy, user_dirs):
    """128 MB of blank lines in a 130 KB gzip stream, and a 100 MB JSON answer in 100 KB:
    the client gets every byte, the meter stops at its budget with a note, and the proxy's
    memory stays put (mitmproxy's own decode held the whole JSON body; the old SSE decoder
    split the blank lines one by one: minutes of the event loop)."""
    start = serialize_events(message_events(input_tokens=700, output_tokens=70)[:1])
    stream = sse_reply(start + b"\n" * (128 * 2**20), encoding="gzip", chunk_sizes=65536)
    doc = json.dumps(message_json(input_tokens=700, output_tokens=70)).encode()
    huge = doc.replace(b'"content": [', b'"pad": "' + b"x" * (100 * 2**20) + b'", "content": [')
    bomb = json_reply({}, encoding="gzip")
    bomb.body = huge
    standin.enqueue(stream, bomb)
    rss_before = proxy.rss_mb()
    started = time.monotonic()
    assert proxy.post(request(), timeout=60)[2] == stream.render()[1]
    assert proxy.post(request(stream=False), timeout=60)[2] == bomb.render()[1]
    assert time.monotonic() - started < 20
    assert proxy.rss_mb() - rss_before < 100, (rss_before, proxy.rss_mb())
    rows = calls(user_dirs.db_file, expect=2)
    assert all("decodes to more than" in r["metering_error"] for r in rows)
    assert rows[0]["input_tokens"] == 700  # what came before the bomb is on record
    assert rows[1]["cost_picousd"] is None  # a 2xx answer whose usage was never read


def test_a_compressed_request_that_expands_without_end_costs_nothing(standin, proxy, user_dirs):
    """A request body is read for its session and project: gzip of 300 MB in 300 KB was
    expanded whole by get_content, then parsed, on the event loop."""
    import gzip

    bomb = gzip.compress(b'{"model": "claude-opus-4-8", "x": "' + b"x" * (300 * 2**20) + b'"}',
                         compresslevel=1)
    rss_before = proxy.rss_mb()
    started = time.monotonic()
    status, _, _ = proxy.post(bomb, {"content-encoding": "gzip",
                                     "x-claude-code-session-id": "bomb"}, timeout=60)
    assert status == 200 and time.monotonic() - started < 5
    assert proxy.rss_mb() - rss_before < 100, (rss_before, proxy.rss_mb())
    assert proxy.post(request())[0] == 200
    rows = calls(user_dirs.db_file, expect=2)
    assert [r["session_id"] for r in rows] == ["bomb", SESSION]


def test_hard_mode_holds_back_at_most_a_megabyte_of_an_event_without_end(standin, user_dirs,
                                                                        tmp_path):
    """Hard mode forwards whole events only: a 20 MB event was held whole (the client got
    nothing meanwhile) and rescanned from its start at every chunk (quadratic)."""
    write_caps(user_dirs.config_dir, {"daily": "1000", "mode": "hard", "notify": False})
    events = message_events(input_tokens=500, output_tokens=50)
    events[0][1]["message"]["content"] = [{"type": "text", "text": "x" * (20 * 2**20)}]
    stream = serialize_events(events)
    standin.enqueue(sse_reply(stream, chunk_sizes=16384))
    with UserProxy(standin.url, tmp_path) as proxy:
        rss_before = proxy.rss_mb()
        started = time.monotonic()
        assert proxy.post(request(), timeout=60)[2] == stream
        took = time.monotonic() - started
        grew = proxy.rss_mb() - rss_before
    assert took < 5 and grew < 100, (took, grew)
    [row] = calls(user_dirs.db_file, expect=1)
    assert row["cost_picousd"] == cost(500, 50) and "over 16 MB" in row["metering_error"]
