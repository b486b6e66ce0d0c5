"""A failing upstream is visible, and a normal proxy start and stop logs no traceback.

An upstream that cannot be reached (or answers 5xx) gets a line in ccmeter's log and in
``run``'s exit summary, and its rows keep the model, project and kind the request named.
Everything runs in the user's own folders (no CCMETER_HOME).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mitm import TUNNEL, MitmDump
from standin import StandIn, error_reply

from ccmeter import failures, launch, proxy, runsummary

CCMETER = [sys.executable, "-m", "ccmeter.cli"]

# Like Claude Code: HTTPS to api.anthropic.com through HTTPS_PROXY, a main-prompt body.
CLIENT = TUNNEL + textwrap.dedent("""
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 10, "stream": True,
        "system": [{"type": "text", "text": " - Primary working directory: /src/shop\\n"}],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "hi"}]})
    for _ in range(int(sys.argv[1])):
        conn = tunnel(30)
        conn.request("POST", "/v1/messages", body=body, headers={
            "content-type": "application/json", "x-api-key": "sk-ant-api03-dummy"})
        reply = conn.getresponse()
        reply.read()
        print(reply.status, flush=True)
        conn.close()
""")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    client = tmp_path / "client.py"
    client.write_text(CLIENT)
    work = tmp_path / "shop"  # the project ``run`` tags its calls with
    work.mkdir(exist_ok=True)
    return subprocess.run([*CCMETER, "run", *args, "--", sys.executable, str(client), "3"],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ),
                          cwd=work)


def db_rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM api_calls ORDER BY started_ts")]
    finally:
        conn.close()


def test_an_unreachable_upstream_is_told_in_the_log_and_the_summary(tmp_path, user_dirs):
    done = run("--upstream", f"http://127.0.0.1:{closed_port()}", tmp_path=tmp_path)
    assert done.stdout.split() == ["502", "502", "502"]
    assert ("3 calls failed: upstream unreachable (connection refused)"
            in done.stderr), done.stderr
    log = user_dirs.log_file.read_text()
    assert log.count("failed: upstream unreachable (connection refused)") == 3
    assert "Traceback" not in log
    rows = db_rows(user_dirs.db_file)
    assert len(rows) == 3
    for row in rows:  # what the request asked for, not "auxiliary" with no model
        assert (row["status"], row["error_type"]) == ("upstream_error", "connection")
        assert (row["model"], row["requested_model"]) == ("claude-opus-4-8", "claude-opus-4-8")
        assert (row["call_kind"], row["project"]) == ("main", "shop")
        assert row["cost_picousd"] == 0  # nothing reached the API: nothing billed


def test_an_upstream_answering_5xx_is_told_in_the_log_and_the_summary(tmp_path, user_dirs):
    with StandIn() as standin:
        standin.enqueue(*[error_reply(529, "overloaded_error", "Overloaded")] * 3)
        done = run("--upstream", standin.url, tmp_path=tmp_path)
    assert done.stdout.split() == ["529", "529", "529"]
    assert "3 calls failed: upstream answered 529 (overloaded_error)" in done.stderr, done.stderr
    assert user_dirs.log_file.read_text().count("failed: upstream answered 529") == 3
    rows = db_rows(user_dirs.db_file)
    assert [(r["model"], r["call_kind"], r["http_status"]) for r in rows] == [
        ("claude-opus-4-8", "main", 529)] * 3


def test_a_working_run_reports_no_failure(tmp_path, user_dirs):
    done = subprocess.run([*CCMETER, "run", "--", "true"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "failed" not in done.stderr


def test_failure_reasons_in_a_few_words():
    assert failures.reason("ok", None, 200, None) is None
    assert failures.reason("upstream_error", "connection", None,
                           "[Errno 111] Connect call failed ('127.0.0.1', 1)") == (
        "upstream unreachable (connection refused)")
    assert failures.reason("upstream_error", "connection", None,
                           "[Errno -2] Name or service not known") == (
        "upstream unreachable (host not found)")
    assert failures.reason("upstream_error", "connection", None, "server closed connection",
                           reached=True) == "upstream connection lost (server closed connection)"
    assert failures.reason("upstream_error", "connection", None, "Client disconnected.",
                           reached=True) == "the client went away before the answer"
    assert failures.reason("upstream_error", "api_error", 500, "x") == (
        "upstream answered 500 (api_error)")
    assert failures.reason("upstream_error", "stream_cut", 200, "x") == "the answer was cut off"
    assert failures.summary([None, None]) is None
    assert failures.summary(["a"]) == "1 call failed: a"
    assert failures.summary(["a", "b", "a", None]) == "3 calls failed: 2 a, 1 b"
    summary = runsummary.RunSummary(calls=2, sessions=0, cost_picousd=0,
                                unpriced_calls=0, today_picousd=0,
                                failures="2 calls failed: upstream unreachable (timed out)")
    assert summary.line().endswith("· 2 calls failed: upstream unreachable (timed out)")


# --- no tracebacks in a normal start and stop ---------------------------------------------


def test_starting_and_stopping_the_proxy_logs_no_traceback(user_dirs, caplog):
    """A client connection still open when the proxy stops (the wrapped program's keep-alive
    one) used to end in an asyncio CancelledError traceback in the log."""
    caplog.set_level(logging.INFO)
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 1,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    with StandIn() as standin:
        for _ in range(6):
            running = proxy.start(proxy.ProxySettings(paths=user_dirs, reverse=True,
                                                      upstream=standin.url))
            conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
            conn.request("POST", "/v1/messages", body=body,
                         headers={"content-type": "application/json"})
            conn.getresponse().read()  # the connection stays open (keep-alive)
            running.stop()
            conn.close()
    text = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "Traceback" not in caplog.text and "CancelledError" not in text, caplog.text[-3000:]


def test_stopping_mitmdump_with_the_addon_logs_no_traceback(tmp_path):
    """The same under ``mitmdump -s addons/ccmeter.py``: the addon ends the connections."""
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 1,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    with StandIn() as standin:
        for n in range(3):
            home = tmp_path / f"home{n}"
            home.mkdir()
            with MitmDump(home, f"reverse:{standin.url}") as running:
                conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
                conn.request("POST", "/v1/messages", body=body,
                             headers={"content-type": "application/json"})
                conn.getresponse().read()  # the connection stays open (keep-alive)
                running.stop()
                conn.close()
                assert "Traceback" not in running.log_text(), running.log_text()[-3000:]


def test_ccmeter_run_true_logs_no_traceback(user_dirs):
    for _ in range(3):
        done = subprocess.run([*CCMETER, "run", "--", "true"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert "Traceback" not in user_dirs.log_file.read_text()


def test_forward_mode_https_through_the_in_process_proxy_to_an_unreachable_upstream(
        user_dirs):
    """The first call through a fresh proxy (its body read before it goes) and the ones after
    a failure keep their model: what the row says is what the request asked for."""
    launch.ensure_ca(user_dirs)
    running = proxy.start(proxy.ProxySettings(paths=user_dirs,
                                              upstream=f"http://127.0.0.1:{closed_port()}"))
    running.meter.track_run = True
    try:
        context = ssl.create_default_context(cafile=str(user_dirs.ca_cert))
        for model in ("claude-opus-4-8", "claude-haiku-4-5"):
            conn = http.client.HTTPSConnection("127.0.0.1", running.port, context=context,
                                               timeout=30)
            conn.set_tunnel("api.anthropic.com", 443)
            conn.request("POST", "/v1/messages", headers={"content-type": "application/json"},
                         body=json.dumps({"model": model, "max_tokens": 1, "messages": []}))
            assert conn.getresponse().status == 502
            conn.close()
        deadline = time.monotonic() + 10
        while len(running.meter.final_rows) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        running.stop()
    rows = sorted(running.meter.final_rows.values(), key=lambda r: r["model"])
    assert [(r["model"], r["status"], r["failure"]) for r in rows] == [
        ("claude-haiku-4-5", "upstream_error", "upstream unreachable (connection refused)"),
        ("claude-opus-4-8", "upstream_error", "upstream unreachable (connection refused)"),
    ]


@pytest.fixture(autouse=True)
def _quiet_proxy_env(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
