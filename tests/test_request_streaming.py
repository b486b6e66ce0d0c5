"""When the caps need nothing from a request's body, its bytes go upstream as they arrive
(as bare mitmproxy sends them); when they do (a per-project cap), the body is held until the
caps have read it. Real mitmdump, a raw upstream that timestamps what reaches it.

Until the upstream has answered once, a proxy reads each body before it goes (so that a call
that cannot reach the upstream keeps its model): the streaming tests warm the proxy up."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

from capsproxy import mitmdump, post, request_body, seed_spend, wait_rows, write_caps
from standin import message_events, sse_reply

PAUSE_S = 0.6  # between the two halves of the request body


class RawUpstream:
    """Accepts one connection, notes when each byte arrives, answers a short SSE stream."""

    def __init__(self, connections: int = 1) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.arrivals: list[tuple[float, int]] = []  # (monotonic time, bytes so far)
        self.thread = threading.Thread(target=self._serve, args=(connections,), daemon=True)
        self.thread.start()

    def _serve(self, connections: int) -> None:
        for _ in range(connections):  # the last connection's bytes are the ones timed
            self.arrivals = []
            self._serve_one()

    def _serve_one(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
                self.arrivals.append((time.monotonic(), len(data)))
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep:
                    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    if len(body) >= length:
                        break
            headers, payload = sse_reply(message_events(), chunk_sizes=10**6).render()
            lines = [b"HTTP/1.1 200 OK", b"connection: close",
                     *(f"{k}: {v}".encode() for k, v in headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding"))]
            conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + payload)

    def bytes_by(self, moment: float) -> int:
        return max((n for t, n in self.arrivals if t <= moment), default=0)


def post_head(body: bytes, session: str) -> bytes:
    """The request line and headers of a Messages call with ``body``."""
    return (b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"content-type: application/json\r\nx-api-key: sk-ant-test\r\n"
            b"x-claude-code-session-id: %s\r\ncontent-length: %d\r\n\r\n"
            % (session.encode(), len(body)))


@contextlib.contextmanager
def slow_post(port: int, body: bytes) -> Iterator[float]:
    """Send the headers and the first half of the body, pause, send the rest; yields the
    moment just before the second half went out, and reads the answer to its end."""
    head = post_head(body, "sess-s")
    half = len(body) // 2
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + body[:half])
        time.sleep(PAUSE_S)
        before_rest = time.monotonic()
        sock.sendall(body[half:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        yield before_rest


def body_with_working_dir() -> bytes:
    body = request_body(session="sess-s")
    body["system"] = [{"type": "text", "text": "Primary working directory: /home/dev/shop-api\n"
                       + "x" * 20_000}]
    return json.dumps(body).encode()


def test_a_body_streams_upstream_when_the_caps_need_nothing_from_it(home):
    write_caps(home, {"daily": "100", "notify": False})
    upstream = RawUpstream(connections=2)
    with mitmdump(home, upstream.url) as port:
        assert post(port, session="sess-warm-up")[0] == 200
        with slow_post(port, body_with_working_dir()) as rest:
            pass
    assert upstream.bytes_by(rest) > 10_000  # headers and the first half were already there
    (row,) = wait_rows(home / "ccmeter.db", "status = 'ok' AND session_id = 'sess-s'", 1)
    # the meter read its copy of the streamed body
    assert row["model"] == "claude-opus-4-8" and row["project"] == "shop-api"
    assert row["session_id"] == "sess-s" and row["cost_picousd"] > 0


def test_a_body_is_held_while_a_per_project_cap_needs_it(home):
    write_caps(home, {"projects": {"shop-api": {"daily": "100"}}, "notify": False})
    upstream = RawUpstream()
    with mitmdump(home, upstream.url) as port, slow_post(port, body_with_working_dir()) as rest:
        pass
    assert upstream.bytes_by(rest) == 0  # nothing went before the whole body was read
    (row,) = wait_rows(home / "ccmeter.db", "status = 'ok'", 1)
    assert row["project"] == "shop-api" and row["cost_picousd"] > 0


def test_a_call_refused_before_its_body_came_is_recorded_with_the_body_s_details(home):
    write_caps(home, {"daily": "0.000001", "notify": False})
    seed_spend(home, "1")
    upstream = RawUpstream()
    body = body_with_working_dir()
    head = post_head(body, "sess-s")
    with mitmdump(home, upstream.url) as port, \
            socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        rows = wait_rows(home / "ccmeter.db", "status = 'blocked'", 1)
    assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
    assert upstream.arrivals == []
    (row,) = rows
    assert row["model"] == "claude-opus-4-8" and row["project"] == "shop-api"
    assert row["session_id"] == "sess-s" and row["error_type"] == "cap_reached"


def test_a_call_whose_upstream_is_unreachable_is_recorded_at_no_cost(home):
    """The upstream refuses the connection before any of the body went: the row keeps
    what the headers say and costs $0 (nothing was billed), not "unpriced"."""
    closed = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    with mitmdump(home, url) as port:
        status, _, _ = post(port, session="sess-u")
        rows = wait_rows(home / "ccmeter.db", "1 = 1", 1)
    assert status == 502
    (row,) = rows
    assert row["status"] == "upstream_error" and row["error_type"] == "connection"
    assert row["session_id"] == "sess-u" and row["cost_picousd"] == 0


def test_an_early_answer_before_the_body_is_in_keeps_the_body_s_details(home):
    """The upstream answers (413) after the first half of a slowly sent body: the meter
    reads the copy it has (here the whole first half is not valid JSON, so the headers'
    details stay) and the call costs $0."""
    upstream_sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{upstream_sock.getsockname()[1]}"

    def answer_early() -> None:
        for _ in range(2):  # a warm-up call, then the one under test
            conn, _ = upstream_sock.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\n"
                             b"content-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: 2\r\n\r\n{}")
    threading.Thread(target=answer_early, daemon=True).start()
    body = body_with_working_dir()
    head = post_head(body, "sess-e")
    with mitmdump(home, url) as port:
        assert post(port, session="sess-warm-up")[0] == 413
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(head + body[: len(body) // 2])
            answer = sock.recv(65536)
            rows = wait_rows(home / "ccmeter.db", "session_id = 'sess-e'", 1)
    assert b" 413 " in answer.split(b"\r\n", 1)[0] or answer == b"", answer[:100]
    (row,) = rows
    assert row["session_id"] == "sess-e" and row["cost_picousd"] == 0
    assert row["status"] in ("upstream_error", "incomplete")
    upstream_sock.close()
