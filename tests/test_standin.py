"""The stand-in API server behaves like the wire a meter has to survive."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from mitmproxy.net import encoding as mitm_encoding
from standin import (
    NON_ASCII_SAMPLE,
    Recorded,
    StandIn,
    chunk_plan,
    decompress,
    error_reply,
    json_reply,
    message_events,
    message_json,
    parse_sse,
    serialize_events,
    sse_reply,
    tool_round_trip,
)


@pytest.fixture
def api():
    with StandIn() as server:
        yield server


def post(
    server: StandIn,
    path: str = "/v1/messages?beta=true",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    payload = json.dumps(body if body is not None else {"model": "m", "stream": True})
    conn.request(
        "POST", path, body=payload, headers={"content-type": "application/json"} | (headers or {})
    )
    resp = conn.getresponse()
    return resp, resp.read()


def raw_exchange(server: StandIn, path: str = "/v1/messages") -> tuple[bytes, list[bytes], bool]:
    """Send one request on a raw socket; return the head, each chunk's payload, and whether the
    terminating zero-size chunk arrived."""
    body = b'{"model":"m","stream":true}'
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), len(body), body)
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    chunks: list[bytes] = []
    while rest:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(line, 16)
        if size == 0:
            return head, chunks, rest == b"\r\n"
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return head, chunks, False


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize(("seed", "crlf"), [(0, False), (1, False), (2, True)])
def test_random_split_reassembles_exactly(api: StandIn, seed: int, crlf: bool) -> None:
    events = message_events(
        thinking="Let me think — 考虑", tool_use={"name": "Read", "input": {"file_path": "/é"}}
    )
    expected = serialize_events(events, crlf=crlf)
    api.enqueue(sse_reply(events, seed=seed, crlf=crlf))

    head, chunks, terminated = raw_exchange(api)

    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert terminated
    assert [len(c) for c in chunks] == chunk_plan(expected, "random", seed)
    assert b"".join(chunks) == expected
    assert parse_sse(b"".join(chunks)) == events
    # Splits land inside lines and inside multi-byte UTF-8 characters.
    ends = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks) - 1)]
    assert any(expected[e - 1 : e] not in (b"\n", b"\r") for e in ends)
    assert any(expected[e] & 0xC0 == 0x80 for e in ends)
    if crlf:
        assert b"\r\n\r\n" in expected and b"\n\n" not in expected.replace(b"\r\n", b"")


def test_chunk_plan_fixed_and_listed_sizes() -> None:
    assert chunk_plan(10, 4) == [4, 4, 2]
    assert chunk_plan(10, [1, 3]) == [1, 3, 1, 3, 1, 1]
    assert chunk_plan(0) == []
    assert chunk_plan(500, seed=7) == chunk_plan(500, seed=7) != chunk_plan(500, seed=8)
    assert max(chunk_plan(5000)) <= 64 and sum(chunk_plan(5000)) == 5000
    text = ("abc " + NON_ASCII_SAMPLE).encode() * 10
    ends = list(itertools.accumulate(chunk_plan(text)))
    assert sum(1 for e in ends[:-1] if text[e] & 0xC0 == 0x80) >= 10  # inside characters
    with pytest.raises(ValueError):
        chunk_plan(10, [2, 0])


def test_fixed_chunk_sizes_on_the_wire(api: StandIn) -> None:
    events = message_events()
    api.enqueue(sse_reply(events, chunk_sizes=[1, 2, 3]))
    _, chunks, terminated = raw_exchange(api)
    assert terminated and [len(c) for c in chunks[:6]] == [1, 2, 3, 1, 2, 3]
    assert b"".join(chunks) == serialize_events(events)


@pytest.mark.parametrize("enc", ["gzip", "br", "zstd", "deflate"])
def test_compressed_bodies_decode_back(api: StandIn, enc: str) -> None:
    events = message_events(text=NON_ASCII_SAMPLE * 20)
    api.enqueue(sse_reply(events, encoding=enc, seed=3))
    api.enqueue(json_reply(message_json(text=NON_ASCII_SAMPLE), encoding=enc))

    resp, body = post(api)
    assert resp.getheader("content-encoding") == enc
    assert resp.getheader("transfer-encoding") == "chunked"
    assert decompress(body, enc) == serialize_events(events)
    assert mitm_encoding.decode(body, enc) == serialize_events(events)  # what mitmproxy sees

    resp, body = post(api, body={"model": "m"})
    assert resp.getheader("content-encoding") == enc
    assert int(resp.getheader("content-length")) == len(body)
    assert json.loads(mitm_encoding.decode(body, enc))["content"][0]["text"] == NON_ASCII_SAMPLE


# --------------------------------------------------------------------------- aborted streams


def test_cut_stream_lacks_final_chunk(api: StandIn) -> None:
    events = message_events()
    full = serialize_events(events)
    api.enqueue(sse_reply(events, cut_after_bytes=150), sse_reply(events, cut_after_bytes=150))

    head, chunks, terminated = raw_exchange(api)
    assert head.startswith(b"HTTP/1.1 200")
    assert not terminated
    assert b"".join(chunks) == full[:150]

    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    conn.request("POST", "/v1/messages", body=b"{}")
    resp = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert info.value.partial == full[:150]

    # The server is fine afterwards.
    resp, body = post(api)
    assert resp.status == 200 and parse_sse(body)[-1][0] == "message_stop"


def test_cut_with_reset(api: StandIn) -> None:
    api.enqueue(sse_reply(message_events(), cut_after_bytes=10, cut_reset=True, chunk_sizes=5))
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    conn.request("POST", "/v1/messages", body=b"{}")
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        conn.getresponse().read()


# --------------------------------------------------------------------------- TLS


def test_tls_with_generated_ca() -> None:
    with StandIn(tls=True) as api:
        assert api.url == f"https://127.0.0.1:{api.port}"
        ctx = ssl.create_default_context(cafile=api.ca_path)
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        for host in ("127.0.0.1", "localhost"):
            conn = http.client.HTTPSConnection(host, api.port, context=ctx, timeout=5)
            resp, body = post(api, conn=conn)
            assert resp.status == 200 and parse_sse(body)[0][0] == "message_start"
            conn.close()

        untrusting = ssl.create_default_context()
        conn = http.client.HTTPSConnection("127.0.0.1", api.port, context=untrusting, timeout=5)
        with pytest.raises(ssl.SSLCertVerificationError):
            conn.request("GET", "/api/claude_code/settings")

        api.enqueue(sse_reply(message_events(), cut_after_bytes=64))
        conn = http.client.HTTPSConnection("127.0.0.1", api.port, context=ctx, timeout=5)
        conn.request("POST", "/v1/messages", body=b"{}")
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()


# --------------------------------------------------------------------------- concurrency


def test_parallel_streams_and_keep_alive(api: StandIn) -> None:
    n = 32
    replies = {}
    for i in range(n):
        events = message_events(text=f"stream {i} {NON_ASCII_SAMPLE}", message_id=f"msg_{i}")
        replies[f"msg_{i}"] = serialize_events(events)
        api.enqueue(sse_reply(events, chunk_sizes=len(replies[f"msg_{i}"]) // 4 + 1, delay_s=0.05))

    def one(_: int) -> bytes:
        return post(api)[1]

    started = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        bodies = list(pool.map(one, range(n)))
    elapsed = time.monotonic() - started

    assert elapsed < 2.5, f"{n} streams of ~0.15 s took {elapsed:.2f} s: not concurrent"
    by_id = {parse_sse(b)[0][1]["message"]["id"]: b for b in bodies}
    assert by_id == replies
    assert len(api.messages_requests()) == n and api.queued == 0

    # Keep-alive: one connection, several answers of each kind.
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    api.enqueue(error_reply(529, "overloaded_error", "Overloaded"))
    post(api, conn=conn)
    sock = conn.sock
    for path in ("/v1/messages", "/api/event_logging/v2/batch", "/v1/messages"):
        resp, _ = post(api, path=path, conn=conn)
        assert resp.status == 200
    assert conn.sock is sock


def test_close_is_prompt_with_streams_in_flight() -> None:
    api = StandIn()
    api.enqueue(sse_reply(message_events(), chunk_sizes=8, delay_s=1.0))
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    conn.request("POST", "/v1/messages", body=b"{}")
    resp = conn.getresponse()
    idle = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    idle.request("GET", "/api/claude_code/settings")
    idle.getresponse().read()  # an idle keep-alive connection stays open
    before = threading.active_count()

    started = time.monotonic()
    api.close()
    assert time.monotonic() - started < 1.0
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        resp.read()
    deadline = time.monotonic() + 2
    while threading.active_count() >= before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() < before
    api.close()  # idempotent


# --------------------------------------------------------------------------- requests and routes


def test_requests_are_recorded_and_routed(api: StandIn) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    for path in (
        "/api/claude_code/policy_limits",
        "/api/claude_code/settings",
        "/api/claude_cli/bootstrap",
        "/api/claude_code_penguin_mode",
        "/mcp-registry/v0/servers",
        "/something/else",
    ):
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and isinstance(json.loads(resp.read()), dict)
    resp, body = post(api, "/api/event_logging/v2/batch", {"events": []}, conn=conn)
    assert resp.status == 200 and json.loads(body) == {}
    resp, body = post(api, "/v1/messages/count_tokens", {"model": "m", "messages": []}, conn=conn)
    assert json.loads(body)["input_tokens"] > 0

    session = "0b6c5d7e-1111-4222-8333-444455556666"
    resp, body = post(
        api,
        body={"model": "claude-haiku-4-5-20251001", "stream": True},
        headers={"X-Claude-Code-Session-Id": session, "x-api-key": "sk-ant-test"},
        conn=conn,
    )
    assert resp.getheader("content-type") == "text/event-stream; charset=utf-8"
    assert resp.getheader("request-id").startswith("req_")
    assert parse_sse(body)[0][1]["message"]["model"] == "claude-haiku-4-5-20251001"
    resp, body = post(api, "/v1/messages", {"model": "claude-opus-4-8"}, conn=conn)
    assert json.loads(body)["usage"]["input_tokens"] == 27

    assert [r.path for r in api.requests][-4:] == [
        "/api/event_logging/v2/batch",
        "/v1/messages/count_tokens",
        "/v1/messages?beta=true",
        "/v1/messages",
    ]
    msgs = api.messages_requests()
    assert [r.path for r in msgs] == ["/v1/messages?beta=true", "/v1/messages"]
    first = msgs[0]
    assert first.method == "POST"
    assert first.headers["x-claude-code-session-id"] == session
    assert first.headers["content-type"] == "application/json"
    assert (
        json.loads(first.body)
        == first.json
        == {
            "model": "claude-haiku-4-5-20251001",
            "stream": True,
        }
    )
    assert api.requests[0].json is None and api.requests[0].body == b""


def test_queue_is_fifo_then_default(api: StandIn) -> None:
    api.enqueue(error_reply(429, "rate_limit_error", "cap reached", {"x-should-retry": "false"}))
    api.enqueue(
        json_reply({"custom": 1}, headers={"anthropic-ratelimit-unified-5h-utilization": "0.42"})
    )
    resp, body = post(api)
    doc = json.loads(body)
    assert resp.status == 429 and resp.getheader("x-should-retry") == "false"
    assert doc["type"] == "error"
    assert doc["error"] == {"type": "rate_limit_error", "message": "cap reached"}
    assert doc["request_id"] == resp.getheader("request-id")

    resp, body = post(api)
    assert json.loads(body) == {"custom": 1}
    assert resp.getheader("anthropic-ratelimit-unified-5h-utilization") == "0.42"

    api.default = sse_reply(message_events(text="fixed"), status=200)
    ids = set()
    for _ in range(2):
        resp, body = post(api)
        ids.add(resp.getheader("request-id"))
        assert (
            "".join(d["delta"]["text"] for e, d in parse_sse(body) if e == "content_block_delta")
            == "fixed"
        )
    assert len(ids) == 2  # a reused Reply still gets a fresh request-id

    def broken(rec: Recorded) -> Any:
        raise RuntimeError("boom")

    api.default = broken
    resp, body = post(api)
    assert resp.status == 500 and "boom" in json.loads(body)["error"]["message"]
    assert isinstance(api.errors[-1], RuntimeError)


# --------------------------------------------------------------------------- event builders


def test_message_events_shape() -> None:
    events = message_events(
        "claude-sonnet-4-5",
        input_tokens=100,
        cache_write_5m=20,
        cache_write_1h=30,
        cache_read=400,
        output_tokens=55,
        message_id="msg_x",
        web_search_requests=2,
        speed="fast",
        inference_geo="us",
        extra_usage={"iterations": []},
    )
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names and names.count("content_block_delta") >= 3
    start = events[0][1]["message"]
    assert start["id"] == "msg_x" and start["model"] == "claude-sonnet-4-5"
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == {
        "input_tokens": 100,
        "cache_creation_input_tokens": 50,
        "cache_read_input_tokens": 400,
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
        "output_tokens": 1,
        "service_tier": "standard",
        "inference_geo": "us",
        "server_tool_use": {"web_search_requests": 2},
        "speed": "fast",
        "iterations": [],
    }
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": 100,
        "cache_creation_input_tokens": 50,
        "cache_read_input_tokens": 400,
        "output_tokens": 55,
        "server_tool_use": {"web_search_requests": 2},
        "iterations": [],
    }
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert NON_ASCII_SAMPLE in text
    assert message_json(
        "claude-sonnet-4-5",
        input_tokens=100,
        cache_write_5m=20,
        cache_write_1h=30,
        cache_read=400,
        output_tokens=55,
        web_search_requests=2,
        speed="fast",
        inference_geo="us",
        extra_usage={"iterations": []},
    )["usage"] == {**start["usage"], "output_tokens": 55}

    short = message_events(delta_usage_full=False, pings=False, output_tokens=3)
    assert short[-2][1]["usage"] == {"output_tokens": 3}
    assert "ping" not in [e for e, _ in short]


def test_tool_use_thinking_and_error_events() -> None:
    events = message_events(
        thinking="hmm…", tool_use={"name": "Read", "input": {"file_path": "/tmp/a b.txt"}}
    )
    starts = [d["content_block"] for e, d in events if e == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "text", "tool_use"]
    assert starts[2]["name"] == "Read" and starts[2]["input"] == {}
    assert starts[2]["id"].startswith("toolu_")
    pieces = [d["delta"] for e, d in events if e == "content_block_delta" and d["index"] == 2]
    assert all(p["type"] == "input_json_delta" for p in pieces) and len(pieces) > 2
    assert json.loads("".join(p["partial_json"] for p in pieces)) == {"file_path": "/tmp/a b.txt"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    kinds = [d["delta"]["type"] for e, d in events if e == "content_block_delta"]
    assert "thinking_delta" in kinds and "signature_delta" in kinds
    body = message_json(tool_use={"name": "Read", "input": {"file_path": "/x"}})
    assert body["stop_reason"] == "tool_use" and body["content"][-1]["type"] == "tool_use"

    failed = message_events(error_after_start=("overloaded_error", "Overloaded"))
    names = [e for e, _ in failed]
    assert (
        names[-2:] == ["content_block_delta", "error"] and names.count("content_block_delta") == 1
    )
    assert failed[-1][1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


# --------------------------------------------------------------------------- tool round trip


def test_tool_round_trip(api: StandIn) -> None:
    api.default = tool_round_trip("/work/notes.txt", "The file says hi.")
    tools = [{"name": "Read", "input_schema": {"type": "object"}}]

    def blocks(body: bytes) -> list[dict[str, Any]]:
        return [d["content_block"] for e, d in parse_sse(body) if e == "content_block_start"]

    def texts(body: bytes) -> str:
        return "".join(
            d["delta"].get("text", "") for e, d in parse_sse(body) if e == "content_block_delta"
        )

    # First turn: the prompt as a plain string, or as a list of text blocks.
    for content in ("read it", [{"type": "text", "text": "read it"}]):
        req = {
            "model": "claude-opus-4-8",
            "stream": True,
            "tools": tools,
            "messages": [{"role": "user", "content": content}],
        }
        _, body = post(api, body=req)
        tool = blocks(body)[-1]
        assert tool["type"] == "tool_use" and tool["name"] == "Read"
        pieces = [
            d["delta"]["partial_json"]
            for e, d in parse_sse(body)
            if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
        ]
        assert json.loads("".join(pieces)) == {"file_path": "/work/notes.txt"}
        assert parse_sse(body)[-2][1]["delta"]["stop_reason"] == "tool_use"

    # Second turn: the tool result comes back.
    req["messages"] += [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "Read",
                    "input": {"file_path": "/work/notes.txt"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "hi"},
                {"type": "text", "text": "<reminder>"},
            ],
        },
    ]
    _, body = post(api, body=req)
    assert [b["type"] for b in blocks(body)] == ["text"]
    assert texts(body) == "The file says hi."
    assert parse_sse(body)[-2][1]["delta"]["stop_reason"] == "end_turn"

    # An auxiliary call without tools (streamed or not) gets a short plain answer.
    _, body = post(
        api,
        body={
            "model": "claude-haiku-4-5-20251001",
            "stream": True,
            "messages": [{"role": "user", "content": "title?"}],
        },
    )
    assert texts(body) == "OK."
    assert parse_sse(body)[0][1]["message"]["model"] == "claude-haiku-4-5-20251001"
    _, body = post(api, body={"model": "claude-haiku-4-5-20251001", "messages": []})
    assert json.loads(body)["content"] == [{"type": "text", "text": "OK."}]
