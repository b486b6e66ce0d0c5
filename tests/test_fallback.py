"""A server-side fallback is recorded and priced as the model that served the answer.

The stream starts as the requested model (``message_start``); a ``fallback`` content block
hands it to another one, which writes the answer and is what is billed. The official SDK's
stream accumulator relabels the message to that model; ccmeter does the same, and keeps the
model the answer began with in ``fallback_from_model``. Through the in-process proxy that
``serve`` runs, in the user's own folders.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from datetime import UTC, datetime

from standin import StandIn, fallback_events, serialize_events, sse_reply

from ccmeter import pricing, proxy
from ccmeter.attribution import Attribution
from ccmeter.callrow import Call
from ccmeter.caps.hardmode import RunningCost, StreamLimit
from ccmeter.caps.policy import CapStatus
from ccmeter.sse import SSEDecoder
from ccmeter.tees import METERED_EVENTS, StreamTee
from ccmeter.usage import MessageState

# Sonnet 4.5 list prices: $3 in, $15 out per MTok; 25 in + 8 out = $0.000195.
SONNET_4_5_COST = (25 * 3 + 8 * 15) * 10**6  # picodollars
OPUS_4_7_COST = (25 * 5 + 8 * 25) * 10**6  # what was recorded before: +66.7 %


def test_a_fallback_answer_is_priced_as_the_model_that_served_it(user_dirs):
    events = fallback_events("claude-opus-4-7", "claude-sonnet-4-5",
                             input_tokens=25, output_tokens=8)
    body = json.dumps({"model": "claude-opus-4-7", "max_tokens": 100, "stream": True,
                       "messages": [{"role": "user", "content": "Say hello there!"}]})
    with StandIn() as standin:
        standin.enqueue(sse_reply(events, chunk_sizes="random", seed=3))
        running = proxy.start(proxy.ProxySettings(paths=user_dirs, reverse=True,
                                                  upstream=standin.url))
        try:
            conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
            conn.request("POST", "/v1/messages", body=body,
                         headers={"content-type": "application/json", "x-api-key": "sk-x"})
            reply = conn.getresponse()
            data = reply.read()
            conn.close()
            row = wait_row(user_dirs.db_file)
        finally:
            running.stop()
    assert reply.status == 200 and data == serialize_events(events)  # not a byte changed
    assert row["cost_picousd"] == SONNET_4_5_COST == 195_000_000
    assert row["cost_picousd"] != OPUS_4_7_COST
    assert row["model"] == "claude-sonnet-4-5"
    assert row["requested_model"] == "claude-opus-4-7"
    assert row["fallback_from_model"] == "claude-opus-4-7"
    assert (row["input_tokens"], row["output_tokens"], row["status"]) == (25, 8, "ok")


def test_the_fallback_is_found_whatever_the_chunking():
    raw = serialize_events(fallback_events())
    for cut in range(len(raw) + 1):
        decoder, state = SSEDecoder(METERED_EVENTS), MessageState()
        for piece in (raw[:cut], raw[cut:], b""):
            for event in decoder.feed(piece) if piece else decoder.flush():
                if event.data is not None:
                    state.apply_event(event.name, event.data)
        assert (state.model, state.fallback_from) == ("claude-sonnet-4-5", "claude-opus-4-7"), cut


def wait_row(db) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if db.exists():
            conn = sqlite3.connect(db)
            conn.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in conn.execute(
                    "SELECT * FROM api_calls WHERE http_status IS NOT NULL")]
            except sqlite3.OperationalError:
                rows = []
            conn.close()
            if rows:
                return rows[0]
        time.sleep(0.05)
    raise AssertionError("no final row")


def test_a_hard_cap_prices_the_rest_of_a_fallback_stream_at_the_serving_model():
    """Hard mode's running cost switches to the serving model at the fallback block, not
    only when the final usage comes (until then it over-counted by two thirds)."""
    catalog = pricing.Catalog.bundled()
    when = datetime(2026, 11, 27, tzinfo=UTC)
    status = CapStatus("daily", "global", 10**12, 0, None, 0.0, "calendar")
    call = Call(uid="u", started_ts=when.timestamp(), host="api.anthropic.com",
                attribution=Attribution(stream=True), project=None,
                limit=StreamLimit(status, 10**12, RunningCost(catalog, when)))
    tee = StreamTee(_Recorder(), call, None)
    events = fallback_events(input_tokens=25, output_tokens=8)
    tee(serialize_events(events[:2]))  # message_start, then the fallback block
    assert call.limit is not None
    assert call.limit.running.model == "claude-sonnet-4-5"
    assert call.limit.running.picousd == (25 * 3 + 1 * 15) * 10**6  # Sonnet 4.5 rates


class _Recorder:
    def record(self, call, *, status, flow=None) -> None:
        pass

    def record_started(self, call, start=None) -> None:
        pass
