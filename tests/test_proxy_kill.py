"""A proxy killed or stopped while a call streams: the billed input stays on record.

Real processes only: a real ``mitmdump -s addons/ccmeter.py`` (reverse mode) in the user's
own layout (HOME only), the stand-in holding its stream open after ``message_start``, and a
client that reads up to that event. SIGKILL leaves the call to the proxy's journal, which
the next proxy start folds in; SIGTERM/SIGINT finalize the call's row on the way out.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mitm import ADDON, MITMDUMP, TUNNEL, free_port, wait_for_port
from standin import StandIn, message_events, serialize_events, sse_reply

# 40,000 input tokens of Opus 4.8 at $5 / MTok and message_start's 1 output token at $25.
INPUT = 40_000
STARTED_COST = INPUT * 5 * 10**6 + 25 * 10**6


def held_reply(hold_s: float = 30.0):
    """A stream whose first piece is exactly its ``message_start`` event; the rest follows
    ``hold_s`` later (the stand-in's pause between pieces)."""
    events = message_events("claude-opus-4-8", input_tokens=INPUT, output_tokens=300)
    body = serialize_events(events)
    first = body.index(b"\n\n") + 2
    return sse_reply(events, chunk_sizes=[first, len(body)], delay_s=hold_s)


class Proxy:
    """``mitmdump -s addons/ccmeter.py --mode reverse:UPSTREAM`` as a user runs it."""

    def __init__(self, upstream: str, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / f"mitmdump-{self.port}.log"
        self._out = open(self.log, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [str(MITMDUMP), "-s", str(ADDON), "--mode", f"reverse:{upstream}",
             "--listen-host", "127.0.0.1", "-p", str(self.port),
             "--set", f"confdir={workdir / 'mitmproxy-ca'}", "--set", "termlog_verbosity=info",
             "--set", "flow_detail=0", "--set", "connection_strategy=lazy"],
            stdout=self._out, stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.monotonic() + 30
        while b"ccmeter: metering into" not in self.log.read_bytes():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.text()
            time.sleep(0.05)
        wait_for_port(self.port, proc=self.proc)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)
        self.wait()

    def wait(self) -> None:
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()


def stream_to_message_start(port: int) -> http.client.HTTPConnection:
    """POST a streamed call; return once its whole ``message_start`` event has arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/messages", body=json.dumps({
        "model": "claude-opus-4-8", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}).encode(), headers={
        "content-type": "application/json", "x-api-key": "sk-ant-api03-test",
        "x-claude-code-session-id": "sess-kill"})
    response = conn.getresponse()
    assert response.status == 200
    seen = b""
    while b"message_start" not in seen or not seen.endswith(b"\n\n"):
        piece = response.read1(65536)
        assert piece, seen
        seen += piece
    return conn


def rows(db: Path) -> list[dict]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM api_calls ORDER BY started_ts")]
    finally:
        conn.close()


def journals(user_dirs) -> list[Path]:
    where = user_dirs.data_dir / "journal"
    return sorted(where.glob("*.jsonl")) if where.exists() else []


def test_sigkill_right_after_message_start_keeps_the_billed_input(user_dirs, tmp_path):
    with StandIn() as standin:
        standin.enqueue(held_reply())
        proxy = Proxy(standin.url, tmp_path)
        conn = stream_to_message_start(proxy.port)
        time.sleep(0.1)
        proxy.signal(signal.SIGKILL)
        conn.close()
        assert rows(user_dirs.db_file) == []  # the row was still half a second away
        assert [p.stat().st_size > 0 for p in journals(user_dirs)] == [True]

        nxt = Proxy(standin.url, tmp_path)  # the next start folds the dead proxy's journal
        try:
            [row] = rows(user_dirs.db_file)
            assert all(p.stat().st_size == 0 for p in journals(user_dirs))  # folded, gone
            assert "recovered from its journal" in nxt.text()
        finally:
            nxt.signal(signal.SIGTERM)
    assert (row["status"], row["error_type"]) == ("incomplete", "proxy_died")
    assert (row["input_tokens"], row["output_tokens"]) == (INPUT, 1)
    assert row["cost_picousd"] == STARTED_COST
    assert (row["model"], row["session_id"]) == ("claude-opus-4-8", "sess-kill")
    assert len(rows(user_dirs.db_file)) == 1


def test_sigkill_after_the_started_row_counts_the_call_once(user_dirs, tmp_path):
    with StandIn() as standin:
        standin.enqueue(held_reply())
        proxy = Proxy(standin.url, tmp_path)
        conn = stream_to_message_start(proxy.port)
        deadline = time.monotonic() + 10
        while not rows(user_dirs.db_file) and time.monotonic() < deadline:
            time.sleep(0.05)  # the started row, written half a second in
        proxy.signal(signal.SIGKILL)
        conn.close()
        Proxy(standin.url, tmp_path).signal(signal.SIGTERM)
    [row] = rows(user_dirs.db_file)
    assert (row["status"], row["cost_picousd"]) == ("incomplete", STARTED_COST)
    assert row["error_type"] == "proxy_died"  # the started row is told why it never ended


def test_a_completed_call_in_a_killed_proxys_journal_keeps_its_final_row(user_dirs, tmp_path):
    with StandIn() as standin:
        standin.enqueue(sse_reply(message_events("claude-opus-4-8", input_tokens=INPUT,
                                                 output_tokens=300)))
        proxy = Proxy(standin.url, tmp_path)
        conn = stream_to_message_start(proxy.port)
        deadline = time.monotonic() + 10
        while not [r for r in rows(user_dirs.db_file) if r["status"] == "ok"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert [p.stat().st_size > 0 for p in journals(user_dirs)] == [True]
        proxy.signal(signal.SIGKILL)
        conn.close()
        Proxy(standin.url, tmp_path).signal(signal.SIGTERM)
    [row] = rows(user_dirs.db_file)
    assert (row["status"], row["output_tokens"], row["error_type"]) == ("ok", 300, None)
    assert row["cost_picousd"] == INPUT * 5 * 10**6 + 300 * 25 * 10**6


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_clean_stop_finalizes_the_call_in_flight(user_dirs, tmp_path, signum):
    user_dirs.config_dir.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text('[caps]\ndaily = "100"\nestimate = "1"\n')
    with StandIn() as standin:
        standin.enqueue(held_reply())
        proxy = Proxy(standin.url, tmp_path)
        conn = stream_to_message_start(proxy.port)
        time.sleep(0.1)
        proxy.signal(signum)
        conn.close()
    [row] = rows(user_dirs.db_file)
    assert (row["status"], row["error_type"]) == ("incomplete", "proxy_stopped")
    assert row["cost_picousd"] == STARTED_COST
    assert row["http_status"] == 200 and row["duration_ms"] is not None
    conn2 = sqlite3.connect(user_dirs.db_file)
    try:  # its cap reservation went with the final row
        assert conn2.execute("SELECT COUNT(*) FROM cap_reservations").fetchone()[0] == 0
    finally:
        conn2.close()
    assert journals(user_dirs) == []  # everything is in the database: no journal left


def test_ccmeter_serve_stopped_mid_stream_finalizes_the_row(user_dirs, tmp_path):
    port = free_port()
    with StandIn() as standin:
        standin.enqueue(held_reply())
        proc = subprocess.Popen([sys.executable, "-m", "ccmeter.cli", "serve", "--reverse",
                                 "--port", str(port), "--upstream", standin.url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_port(port, proc=proc)
            conn = stream_to_message_start(port)
            time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        conn.close()
    assert proc.returncode == 0, err
    [row] = rows(user_dirs.db_file)
    assert (row["status"], row["error_type"], row["cost_picousd"]) == (
        "incomplete", "proxy_stopped", STARTED_COST)


# ``ccmeter run``'s child starts a call in a process of its own, and exits once the answer
# has begun: run then stops its proxy with the call still streaming.
STREAMER = TUNNEL + """
conn = tunnel(60)
conn.request("POST", "/v1/messages", body=json.dumps({
    "model": "claude-opus-4-8", "max_tokens": 10, "stream": True,
    "messages": [{"role": "user", "content": "hi"}]}), headers={
    "content-type": "application/json", "x-api-key": "sk-ant-api03-test",
    "x-claude-code-session-id": "sess-run"})
reply = conn.getresponse()
seen = b""
while b"message_start" not in seen or not seen.endswith(b"\\n\\n"):
    seen += reply.read1(65536)
open(sys.argv[1], "w").write("started")
time.sleep(60)
"""
CHILD = """
import os, subprocess, sys, time
marker = sys.argv[1]
streamer = subprocess.Popen([sys.executable, "-c", sys.argv[2], marker],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
while not os.path.exists(marker):
    time.sleep(0.02)
print(streamer.pid, flush=True)
"""


def test_ccmeter_run_ending_mid_stream_counts_the_call_the_shared_proxy_finishes(user_dirs,
                                                                                  tmp_path):
    """The proxy is shared and outlives the run: the run's summary counts the call as its
    row stands when the run ends (billed from message_start); the call goes on, and its row
    is finished when the stream ends (here, cut by the client's death)."""
    with StandIn() as standin:
        standin.enqueue(held_reply())
        result = subprocess.run(
            [sys.executable, "-m", "ccmeter.cli", "run", "--upstream", standin.url, "--",
             sys.executable, "-c", CHILD, str(tmp_path / "started"), STREAMER],
            capture_output=True, text=True, timeout=120, cwd=tmp_path)
        streamer = int(result.stdout.split()[0])
        os.kill(streamer, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while not rows(user_dirs.db_file)[0]["error_type"] and time.monotonic() < deadline:
            time.sleep(0.05)
    assert result.returncode == 0, result.stderr
    [row] = rows(user_dirs.db_file)
    assert (row["status"], row["error_type"], row["cost_picousd"]) == (
        "incomplete", "stream_cut", STARTED_COST)
    assert "this run $0.20" in result.stderr and "(1 call, 1 session)" in result.stderr
