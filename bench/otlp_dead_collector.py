"""What OTLP costs the calls: `ccmeter serve` side by side without OTLP, pushing to a working
receiver, and pushing to a "collector" that accepts connections and requests, never answering.

Usage::

    python bench/otlp_dead_collector.py            # 300 calls per setup
    python bench/otlp_dead_collector.py --calls 1000

The proxies run `ccmeter serve --reverse` in front of the tests' stand-in API (plain HTTP on
loopback), each in a HOME of its own; the dead collector's with ``OTEL_METRIC_EXPORT_INTERVAL=200``
and ``OTEL_EXPORTER_OTLP_TIMEOUT=30000`` (every push hangs for 30 s). A client alternates
streamed calls between them; a third proxy pushes every second to a receiver that answers
(``otlp_live``). Printed: each setup's whole-call time (p50, p99, max) and how
long ``serve`` took to stop after SIGINT.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mitm import free_port, wait_for_port  # noqa: E402
from otlpreceiver import Receiver  # noqa: E402
from standin import StandIn, message_events, sse_reply  # noqa: E402


class Silent:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return


def call(port: int) -> float:
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/messages", body=json.dumps({
        "model": "claude-opus-4-8", "max_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}), headers={
        "content-type": "application/json", "x-api-key": "sk-ant-api03-bench",
        "x-claude-code-session-id": "bench"})
    reply = conn.getresponse()
    reply.read()
    conn.close()
    assert reply.status == 200
    return (time.perf_counter() - began) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ccmeter-otlp-bench-"))
    silent = Silent()
    receiver = Receiver()
    with StandIn() as standin:
        standin.default = lambda rec: sse_reply(message_events("claude-opus-4-8"))
        procs, ports = {}, {}
        for name in ("plain", "otlp_dead", "otlp_live"):
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("OTEL_", "CCMETER_", "XDG_"))}
            env["HOME"] = str(work / name)
            if name == "otlp_dead":
                env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{silent.port}",
                           OTEL_METRIC_EXPORT_INTERVAL="200", OTEL_EXPORTER_OTLP_TIMEOUT="30000")
            if name == "otlp_live":
                env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                           OTEL_METRIC_EXPORT_INTERVAL="1000")
            ports[name] = free_port()
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "ccmeter.entry", "serve", "--reverse", "--upstream",
                 standin.url, "--port", str(ports[name])], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(ports[name], proc=procs[name])
        for name in procs:
            for _ in range(10):
                call(ports[name])
        deadline = time.monotonic() + 20
        while not silent.held and time.monotonic() < deadline:
            time.sleep(0.05)
        took: dict[str, list[float]] = {n: [] for n in procs}
        for i in range(args.calls):
            for name in (list(procs) if i % 2 else list(procs)[::-1]):
                took[name].append(call(ports[name]))
        stopped = {}
        for name, proc in procs.items():
            began = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
            stopped[name] = time.monotonic() - began
    print(json.dumps({
        "calls": args.calls, "pushes_hanging": len(silent.held),
        "pushes_received_live": len(receiver.requests),
        "call_ms": {n: {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "max": max(v)}
                    for n, v in took.items()},
        "stop_s": stopped}, indent=1))


if __name__ == "__main__":
    main()
