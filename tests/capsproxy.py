"""Helpers for the caps tests that run a real ``mitmdump -s addons/ccmeter.py``.

Not a conftest: imported by name (``from capsproxy import ...``) like ``standin``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomlkit
from mitm import MitmDump, free_port  # noqa: F401 - re-exported for the caps tests


def write_caps(home: Path, caps: dict[str, Any], **top: Any) -> None:
    """Write config.toml with a ``[caps]`` table (and other top-level keys)."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(tomlkit.dumps({**top, "caps": caps}), encoding="utf-8")
    tmp.replace(path)


@contextlib.contextmanager
def mitmdump(home: Path, upstream: str, *, name: str = "proxy") -> Iterator[int]:
    """Run mitmdump in reverse mode in front of ``upstream``; yields its port."""
    with MitmDump(home, f"reverse:{upstream}") as proxy:
        yield proxy.port


def request_body(model: str = "claude-opus-4-8", *, stream: bool = True,
                 session: str = "sess-1") -> dict[str, Any]:
    return {
        "model": model, "max_tokens": 1000, "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "metadata": {"user_id": json.dumps({"session_id": session})},
    }


def post(port: int, body: dict[str, Any] | None = None, *, project: str | None = None,
         session: str = "sess-1", timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/messages through the proxy; returns status, lower-case headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"content-type": "application/json", "x-api-key": "sk-ant-test",
               "x-claude-code-session-id": session}
    if project:
        headers["x-ccmeter-project"] = project
    try:
        conn.request("POST", "/v1/messages?beta=true",
                     body=json.dumps(body or request_body(session=session)), headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def raw_post(port: int, body: dict[str, Any] | None = None, timeout: float = 20) -> bytes:
    """POST on a raw socket and return every byte the proxy sent until it closed."""
    payload = json.dumps(body or request_body()).encode()
    head = (
        b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nx-api-key: sk-ant-test\r\n"
        b"Content-Length: %d\r\n\r\n" % len(payload)
    )
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + payload)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    return data


def dechunk(body: bytes) -> tuple[list[bytes], bool]:
    """A chunked body's pieces and whether the terminating zero-size chunk came."""
    pieces: list[bytes] = []
    rest = body
    while rest:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return pieces, True
        pieces.append(rest[:size])
        rest = rest[size + 2:]
    return pieces, False


def seed_spend(home: Path, usd: str, *, project: str | None = None, session: str = "old",
               uid: str = "seed") -> None:
    """A call already in the database, spending ``usd`` five seconds ago."""
    from ccmeter import store
    from ccmeter.money import parse_usd

    db = store.connect(home / "ccmeter.db")
    now = time.time()
    store.upsert_calls(db, [{
        "call_uid": uid, "started_at": "seeded", "started_ts": now - 5, "status": "ok",
        "cost_picousd": parse_usd(usd), "project": project, "session_id": session,
        "model": "claude-opus-4-8", "updated_ts": now,
    }])
    db.conn.close()


def wait_rows(db_file: Path, where: str, count: int, timeout: float = 15) -> list[dict]:
    """Poll the database until ``count`` rows match ``where``."""
    import sqlite3

    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        if db_file.exists():
            conn = sqlite3.connect(db_file)
            conn.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in conn.execute(f"SELECT * FROM api_calls WHERE {where}")]
            except sqlite3.OperationalError:
                rows = []
            finally:
                conn.close()
            if len(rows) >= count:
                return rows
        time.sleep(0.05)
    return rows
