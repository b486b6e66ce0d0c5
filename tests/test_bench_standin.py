"""bench/standin_server.py by hand: --help prints help (it used to start a TLS server), and
--http serves plain HTTP a proxy's --upstream can point at."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "standin_server.py"


def test_help_prints_help_and_starts_nothing():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 0
    assert result.stdout.startswith("usage:") and "--http" in result.stdout
    assert '"port"' not in result.stdout


def test_http_serves_a_streamed_message_over_plain_http():
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--http"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        url = urlsplit(ready["url"])
        assert url.scheme == "http" and ready["ca"] is None
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("POST", "/v1/messages", body=json.dumps({"model": "claude-opus-4-8"}),
                     headers={"content-type": "application/json", "x-bench-events": "12"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200
        assert b"event: message_start" in body and b"event: message_stop" in body
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
