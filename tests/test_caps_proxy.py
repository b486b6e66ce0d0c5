"""Caps through a real ``mitmdump -s addons/ccmeter.py`` in front of the stand-in API."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from capsproxy import (
    dechunk,
    mitmdump,
    post,
    raw_post,
    request_body,
    seed_spend,
    wait_rows,
    write_caps,
)
from standin import StandIn, message_events, parse_sse, sse_reply

from ccmeter import store


@pytest.fixture
def api():
    with StandIn() as server:
        yield server


def proxy_log(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in home.glob("mitmdump-*.log"))


def test_refusal_is_answered_by_the_proxy_and_recorded(home, api):
    write_caps(home, {"daily": "20", "notify": False})
    seed_spend(home, "20.07")
    with mitmdump(home, api.url) as port:
        status, headers, body = post(port, project="api-server", session="sess-9")
        rows = wait_rows(home / "ccmeter.db", "status = 'blocked'", 1)
    assert status == 429, proxy_log(home)
    assert headers["x-should-retry"] == "false"
    assert headers["content-type"] == "application/json"
    assert headers["request-id"].startswith("ccmeter-")
    doc = json.loads(body)
    assert doc["type"] == "error" and doc["error"]["type"] == "rate_limit_error"
    message = doc["error"]["message"]
    assert message.startswith("ccmeter: daily cap $20.00 reached ($20.07 spent); resets 00:00 (in ")
    assert message.endswith("). Raise it with: ccmeter caps set --daily N")
    assert api.messages_requests() == []  # never sent upstream
    (row,) = rows
    assert row["cost_picousd"] == 0 and row["http_status"] == 429
    assert row["model"] == "claude-opus-4-8" and row["session_id"] == "sess-9"
    assert row["project"] == "api-server" and row["request_id"] == headers["request-id"]
    assert row["error_type"] == "cap_reached"


def test_caps_set_on_a_running_proxy_apply_at_once_and_project_caps_are_separate(home, api):
    with mitmdump(home, api.url) as port:
        assert post(port, project="a")[0] == 200
        write_caps(home, {"projects": {"a": {"hourly": "0.0001"}}, "notify": False})
        status, _, body = post(port, project="a")
        assert status == 429
        assert "hourly cap for project a $0.0001 reached ($0.0004 spent)" in body.decode()
        assert "ccmeter caps set --project a --hourly N" in body.decode()
        assert post(port, project="b")[0] == 200  # another project is not capped
        assert len(api.messages_requests()) == 2


def test_hard_mode_cuts_a_stream_and_the_retry_is_refused(home, api):
    write_caps(home, {"daily": "0.01", "mode": "hard", "notify": False})
    text = "word " * 4000  # ~20 kB: about $0.17 of Opus output, far over the cap
    events = message_events(text=text, output_tokens=5000)
    api.enqueue(sse_reply(events, chunk_sizes=200, delay_s=0.01))
    full = b"".join(f"event: {n}\ndata: {json.dumps(d, ensure_ascii=False, separators=(',', ':'))}"
                    f"\n\n".encode() for n, d in events)
    with mitmdump(home, api.url) as port:
        started = time.monotonic()
        raw = raw_post(port)
        elapsed = time.monotonic() - started
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"content-length" not in head.lower()
        pieces, ended = dechunk(body)
        assert ended  # a clean end of the chunked body, then the connection closes
        received = b"".join(pieces)
        error_at = received.rindex(b"event: error\n")
        forwarded = received[:error_at]
        # whole upstream events, byte for byte, up to the cut; then exactly one error event
        assert full.startswith(forwarded) and forwarded.endswith(b"\n\n")
        assert len(forwarded) < len(full) // 2
        events_seen = parse_sse(received)
        assert [n for n, _ in events_seen].count("error") == 1
        name, data = events_seen[-1]
        assert name == "error" and data["error"]["type"] == "rate_limit_error"
        message = data["error"]["message"]
        assert message.startswith("ccmeter: daily cap $0.01 reached")
        assert message.endswith("Raise it with: ccmeter caps set --daily N")
        # sending everything takes the stand-in len/200 pieces x 10 ms (~14 s): the client
        # was done long before, and the connection closed, not left to drain
        assert elapsed < (len(full) / 200 * 0.01) / 3
        # Claude Code retries once: the retry meets the clear refusal
        status, headers, retry = post(port)
        assert status == 429 and headers["x-should-retry"] == "false"
        assert json.loads(retry)["error"]["message"].startswith("ccmeter: daily cap $0.01")
        rows = wait_rows(home / "ccmeter.db", "1", 2)
    assert len(api.messages_requests()) == 1
    cut = next(r for r in rows if r["status"] != "blocked")
    assert cut["error_type"] == "cap_cut" and cut["cost_picousd"] >= 10**10  # >= $0.01
    assert cut["output_tokens"] > 1 and "estimated" in cut["metering_error"]
    assert any(r["status"] == "blocked" for r in rows)


def test_hard_mode_leaves_a_stream_under_the_cap_untouched(home, api):
    write_caps(home, {"daily": "10", "mode": "hard", "notify": False})
    events = message_events(text="short answer")
    api.enqueue(sse_reply(events, chunk_sizes=7))
    with mitmdump(home, api.url) as port:
        raw = raw_post(port)
    pieces, ended = dechunk(raw.partition(b"\r\n\r\n")[2])
    assert ended and [n for n, _ in parse_sse(b"".join(pieces))] == [n for n, _ in events]
    assert api.messages_requests()[0].headers.get("accept-encoding") == "identity"


def test_pause_lifts_enforcement_until_resumed(home, api):
    seed_spend(home, "5")
    paused = {"daily": "1", "notify": False, "paused_until": time.time() + 600}
    write_caps(home, paused)
    with mitmdump(home, api.url) as port:
        assert post(port)[0] == 200
        write_caps(home, {"daily": "1", "notify": False})  # resume
        assert post(port)[0] == 429
    assert "caps paused until" in proxy_log(home)


def _break_cap_tables(home: Path) -> None:
    conn = sqlite3.connect(home / "ccmeter.db")
    for trigger in ("cap_spend_insert", "cap_spend_update", "cap_spend_delete"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP TABLE cap_spend")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("on_error", "expected"), [("allow", 200), ("block", 429)])
def test_on_error_when_the_database_cannot_be_read(home, api, on_error, expected):
    write_caps(home, {"daily": "20", "on_error": on_error, "notify": False})
    store.connect(home / "ccmeter.db").conn.close()
    _break_cap_tables(home)
    with mitmdump(home, api.url) as port:
        status, _, body = post(port)
    assert status == expected
    assert "cannot check caps" in proxy_log(home)
    if expected == 429:
        assert "caps.on_error is \"block\"" in json.loads(body)["error"]["message"]
        assert api.messages_requests() == []


def post_while_another_process_writes(home: Path, api: StandIn) -> tuple[int, float]:
    """POST one call while another connection holds the database's write lock."""
    store.connect(home / "ccmeter.db").conn.close()
    with mitmdump(home, api.url) as port:
        locker = sqlite3.connect(home / "ccmeter.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            status, _, _ = post(port)
            return status, time.monotonic() - started
        finally:
            locker.execute("ROLLBACK")
            locker.close()


@pytest.mark.parametrize(("on_error", "expected"), [("allow", 200), ("block", 429)])
def test_a_locked_database_never_hangs_a_call(home, api, on_error, expected):
    """Another process holding the write lock: a check that must reserve gives up after
    ~2 s and on_error decides (with the default $0 estimate it only reads: see below)."""
    write_caps(home, {"daily": "20", "on_error": on_error, "notify": False,
                      "estimate": "0.05"})
    status, waited = post_while_another_process_writes(home, api)
    assert status == expected
    assert waited < 6, waited  # before the fix: until the lock was released (minutes)
    assert "cannot check caps" in proxy_log(home)


def test_with_no_reservation_the_check_only_reads_and_ignores_a_writer(home, api):
    write_caps(home, {"daily": "20", "on_error": "block", "notify": False})
    status, waited = post_while_another_process_writes(home, api)
    assert status == 200 and waited < 1.5, waited
    assert "cannot check caps" not in proxy_log(home)


def test_warning_once_per_window(home, api):
    write_caps(home, {"daily": "0.001", "warn_at": [0.5], "notify": False})
    seed_spend(home, "0.0006")
    with mitmdump(home, api.url) as port:
        assert post(port)[0] == 200
        assert post(port, body=request_body(stream=False))[0] in (200, 429)
    log = proxy_log(home)
    assert log.count("daily cap at") == 1 and "(warning at 50%)" in log
    conn = sqlite3.connect(home / "ccmeter.db")
    assert conn.execute("SELECT COUNT(*) FROM cap_warnings").fetchone()[0] == 1
    conn.close()


def test_per_session_cap(home, api):
    write_caps(home, {"per_session": {"total": "0.0004"}, "notify": False})
    with mitmdump(home, api.url) as port:
        assert post(port, session="s1")[0] == 200  # $0.000485
        status, _, body = post(port, session="s1")
        assert status == 429
        assert "session cap $0.0004 reached" in body.decode()
        assert "ccmeter caps set --per-session --total N" in body.decode()
        assert post(port, session="s2")[0] == 200


def test_reservations_are_released_with_the_final_row(home, api):
    write_caps(home, {"daily": "10", "estimate": "1", "notify": False})
    with mitmdump(home, api.url) as port:
        for _ in range(3):
            assert post(port)[0] == 200
        wait_rows(home / "ccmeter.db", "status = 'ok'", 3)
        time.sleep(0.3)
        db = store.connect(home / "ccmeter.db")
        assert store.cap_reservations(db) == []
        db.conn.close()
