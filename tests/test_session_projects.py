"""Every call gets its session's project, even one seen before the project was known.

Claude Code's first calls of a session (a title, a quota check) carry no working directory;
under ``serve``/``mitmdump`` they used to stay without a project for good. Proven through
the in-process proxy that ``serve`` runs, in reverse and in forward mode, in the user's own
folders (no CCMETER_HOME).
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import ssl
import time
from pathlib import Path

import pytest
from standin import StandIn, message_events, sse_reply

from ccmeter import proxy
from ccmeter.sessionprojects import SessionProjects

SESSION = "0c9e3a52-7d7e-4f5e-8d55-5a1d2b3c4d5e"


def body(*, cwd: str | None, session: str = SESSION) -> bytes:
    metadata = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": session})
    message: dict = {"model": "claude-haiku-4-5", "max_tokens": 512, "stream": True,
                     "metadata": {"user_id": metadata},
                     "messages": [{"role": "user", "content": "Please write a title"}]}
    if cwd is not None:
        message["model"] = "claude-opus-4-8"
        message["system"] = [{"type": "text", "text": f" - Primary working directory: {cwd}\n"}]
    return json.dumps(message).encode()


HEADERS = {"content-type": "application/json", "x-api-key": "sk-ant-api03-dummy",
           "user-agent": "claude-cli/2.1.197 (external, sdk-cli)"}


def reverse_post(port: int, data: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/messages?beta=true", body=data, headers=HEADERS)
    reply = conn.getresponse()
    reply.read()
    conn.close()
    return reply.status


def forward_post(port: int, cafile: Path, data: bytes) -> int:
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    conn.set_tunnel("api.anthropic.com", 443)
    conn.request("POST", "/v1/messages?beta=true", body=data, headers=HEADERS)
    reply = conn.getresponse()
    reply.read()
    conn.close()
    return reply.status


def rows(db: Path, expect: int, until=lambda rows: True) -> list[dict]:
    deadline, found = time.monotonic() + 10, []
    while time.monotonic() < deadline:
        if db.exists():
            conn = sqlite3.connect(db)
            conn.row_factory = sqlite3.Row
            found = [dict(r) for r in conn.execute(
                "SELECT * FROM api_calls ORDER BY started_ts")]
            conn.close()
            if len(found) >= expect and all(r["http_status"] for r in found) and until(found):
                return found
        time.sleep(0.05)
    return found


def reply(standin: StandIn, model: str) -> None:
    standin.enqueue(sse_reply(message_events(model, input_tokens=100, output_tokens=10)))


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_a_sessions_first_calls_get_its_project_once_it_is_known(user_dirs, mode):
    with StandIn() as standin:
        settings = proxy.ProxySettings(paths=user_dirs, reverse=mode == "reverse",
                                       upstream=standin.url)
        running = proxy.start(settings)
        try:
            def post(data: bytes) -> int:
                if mode == "reverse":
                    return reverse_post(running.port, data)
                return forward_post(running.port, user_dirs.ca_cert, data)

            reply(standin, "claude-haiku-4-5")
            assert post(body(cwd=None)) == 200  # the title call: no working directory
            # Its row is on disk, with no project yet, before the main prompt arrives.
            first = rows(user_dirs.db_file, 1)
            assert [r["project"] for r in first] == [None]
            reply(standin, "claude-opus-4-8")
            assert post(body(cwd="/home/dev/src/billing")) == 200
            reply(standin, "claude-haiku-4-5")
            assert post(body(cwd=None)) == 200  # a later auxiliary call
            reply(standin, "claude-haiku-4-5")
            assert post(body(cwd=None, session="other-session")) == 200
            found = rows(user_dirs.db_file, 4,
                         until=lambda rs: rs[0]["project"] is not None)
        finally:
            running.stop()
    assert [(r["session_id"], r["project"]) for r in found] == [
        (SESSION, "billing"), (SESSION, "billing"), (SESSION, "billing"),
        ("other-session", None),  # a session that never named its folder stays without one
    ]
    # The filled-in row kept everything else it had.
    assert found[0]["model"] == "claude-haiku-4-5" and found[0]["cost_picousd"] > 0
    # ... and the spend buckets the caps read moved with it.
    conn = sqlite3.connect(user_dirs.db_file)
    buckets = dict(conn.execute(
        "SELECT scope, SUM(cost_picousd) FROM cap_spend GROUP BY scope").fetchall())
    conn.close()
    assert buckets["p:billing"] == sum(r["cost_picousd"] for r in found[:3])


def test_rows_written_without_a_project_are_filled_once():
    sessions = SessionProjects()
    early = {"call_uid": "a", "session_id": "s", "project": None, "started_at": "t", "status": "ok",
             "started_ts": 1.0, "updated_ts": 2.0}
    sessions.written(dict(early))
    sessions.written(dict(early))  # the same call's final row: remembered once
    assert sessions.resolve("s", None) == (None, [])
    project, fills = sessions.resolve("s", "billing")
    assert project == "billing"
    assert [(f["call_uid"], f["project"], f["status"]) for f in fills] == [
        ("a", "billing", "ok")]
    assert sessions.resolve("s", "billing") == ("billing", [])  # nothing left to fill
    late = dict(early, call_uid="b")
    sessions.written(late)  # built before the project was known, written after
    assert late["project"] == "billing"
    assert sessions.resolve(None, "x") == ("x", [])
