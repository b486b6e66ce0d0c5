"""A lean HTTPS streaming client for the benchmarks: blocking sockets, keep-alive, no library.

One :class:`Connection` is one TCP connection (through a forward proxy with ``CONNECT`` when
``proxy`` is given, as Claude Code does with ``HTTPS_PROXY``), wrapped in TLS, reused for
every call. :meth:`Connection.stream` sends one ``POST /v1/messages`` and reads the chunked
event stream, timing the first body byte and the arrival of every chunk.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field

_MSG_ID = re.compile(rb'"id":"(msg_[A-Za-z0-9]+)"')


def request_body(session_id: str, size_kb: int) -> bytes:
    """A Claude Code-shaped request: billing marker, a system prompt with the working
    directory line, tools, and a history padded to about ``size_kb`` KB."""
    tools = [{"name": f"Tool{i}", "description": "Does a thing. " * 20,
              "input_schema": {"type": "object", "properties": {
                  "path": {"type": "string", "description": "A path."},
                  "limit": {"type": "integer"}}, "required": ["path"]}} for i in range(12)]
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 64000,
        "stream": True,
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "",
                                            "session_id": session_id})},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.123; "
                                     "cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are Claude Code.\n - Primary working directory: "
                                     "/tmp/ccmeter-bench-project\n - Is a git repository: "
                                     "false\n" + "Be helpful. " * 200},
        ],
        "tools": tools,
        "messages": [],
    }
    raw = json.dumps(body)
    turn = 0
    while len(raw) < size_kb * 1024:
        role = "user" if turn % 2 == 0 else "assistant"
        body["messages"].append({"role": role, "content": f"Message {turn}. " + "lorem " * 150})
        raw = json.dumps(body)
        turn += 1
    body["messages"].append({"role": "user", "content": "Go on."})
    return json.dumps(body).encode()


@dataclass
class Result:
    ok: bool
    ttfb: float = 0.0  # request sent -> first body byte (the message_start event), seconds
    total: float = 0.0
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each chunk read
    nbytes: int = 0
    message_id: str | None = None
    error: str | None = None


class Connection:
    """A keep-alive HTTPS connection to ``target`` (host, port), optionally via ``proxy``."""

    def __init__(self, target: tuple[str, int], cafile: str,
                 proxy: tuple[str, int] | None = None, timeout: float = 60.0,
                 proxy_auth: str | None = None) -> None:
        self.target, self.proxy, self.cafile, self.timeout = target, proxy, cafile, timeout
        #: ``Proxy-Authorization`` for the CONNECT (a ``ccmeter run``'s credentials).
        self.proxy_auth = proxy_auth
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sock: ssl.SSLSocket | None = None
        self.buf = b""

    def connect(self) -> None:
        host, port = self.target
        raw = socket.create_connection(self.proxy or self.target, timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.proxy is not None:
            auth = f"Proxy-Authorization: {self.proxy_auth}\r\n" if self.proxy_auth else ""
            raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n"
                        .encode())
            head = b""
            while b"\r\n\r\n" not in head:
                data = raw.recv(4096)
                if not data:
                    raise ConnectionError("proxy closed the CONNECT")
                head += data
            if b" 200" not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(f"CONNECT refused: {head[:80]!r}")
        self.sock = self.ctx.wrap_socket(raw, server_hostname=host)
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _fill(self) -> bool:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def stream(self, body: bytes, headers: dict[str, str], *, keep_arrivals: bool = False,
               want_id: bool = False) -> Result:
        """One streamed call; reconnects once if the kept-alive connection was closed."""
        for attempt in (0, 1):
            if self.sock is None:
                self.connect()
            try:
                return self._stream(body, headers, keep_arrivals, want_id)
            except (ConnectionError, ssl.SSLError, OSError) as exc:
                self.close()
                if attempt or not isinstance(exc, ConnectionResetError | BrokenPipeError |
                                             _Closed):
                    return Result(False, error=f"{type(exc).__name__}: {exc}")
        return Result(False, error="unreachable")

    def _stream(self, body: bytes, headers: dict[str, str], keep_arrivals: bool,
                want_id: bool) -> Result:
        assert self.sock is not None
        host, port = self.target
        head = (f"POST /v1/messages?beta=true HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        began = time.perf_counter()
        self.sock.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise _Closed("closed before the response")
        header_end = self.buf.index(b"\r\n\r\n")
        status_line = self.buf[:self.buf.index(b"\r\n")]
        lower = self.buf[:header_end].lower()
        self.buf = self.buf[header_end + 4:]
        if b" 200 " not in status_line + b" ":
            raise ConnectionError(f"status {status_line!r}")
        if b"transfer-encoding: chunked" not in lower:
            raise ConnectionError("expected a chunked answer")
        ttfb = 0.0
        arrivals: list[float] = []
        nbytes = 0
        message_id = None
        while True:  # chunked body: size line, data, CRLF ... 0 CRLF CRLF
            while b"\r\n" not in self.buf:
                if not self._fill():
                    raise _Closed("closed mid-body")
            line_end = self.buf.index(b"\r\n")
            size = int(self.buf[:line_end].split(b";")[0], 16)
            while len(self.buf) < line_end + 2 + size + 2:
                if not self._fill():
                    raise _Closed("closed mid-chunk")
            now = time.perf_counter()
            if size == 0:
                self.buf = self.buf[line_end + 4:]
                break
            piece = self.buf[line_end + 2:line_end + 2 + size]
            self.buf = self.buf[line_end + 4 + size:]
            if not ttfb:
                ttfb = now - began
                if want_id:
                    match = _MSG_ID.search(piece)
                    message_id = match.group(1).decode() if match else None
            if keep_arrivals:
                arrivals.append(now)
            nbytes += size
        return Result(True, ttfb, time.perf_counter() - began, arrivals, nbytes, message_id)


class _Closed(ConnectionError):
    pass


def claude_headers(session_id: str | None = None, **extra: str) -> dict[str, str]:
    headers = {
        "User-Agent": "claude-cli/2.1.197 (external, sdk-cli)",
        "x-app": "cli",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,context-1m-2025-08-07",
        "x-api-key": "sk-ant-api03-bench",
        "X-Claude-Code-Session-Id": session_id or str(uuid.uuid4()),
    }
    headers.update(extra)
    return headers
