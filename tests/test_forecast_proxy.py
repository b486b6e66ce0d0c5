"""The forecast and the per-call and plan caps through a real ``mitmdump -s addons/ccmeter.py``
in the user's layout (HOME only), against the stand-in with the API's prompt caching
(tests/standin_cache.py: a word is a token).

Opus 4.8 per MTok: input $5, 5-minute write $6.25, read $0.50. The tool is 1,001 tokens,
the system prompt 2,000, so a first call of N more words writes 3,001 + N tokens.
"""

from __future__ import annotations

import json
import time

import pytest
from standin import StandIn
from standin_cache import Clock, PromptCache
from test_plan import _headers
from test_user_layout import cli
from test_waste_proxy import words
from userproxy import UserProxy, calls

MICRO = 10**6  # picodollars per micro-dollar: tokens x $/MTok
EPHEMERAL = {"type": "ephemeral"}


def body(turns: list[str], session: str, *, cwd: str = "/src/web") -> bytes:
    messages = [{"role": "user" if i % 2 == 0 else "assistant",
                 "content": [{"type": "text", "text": text}]} for i, text in enumerate(turns)]
    messages[-1]["content"][-1]["cache_control"] = EPHEMERAL
    return json.dumps({
        "model": "claude-opus-4-8", "max_tokens": 1000, "stream": True,
        "tools": [{"name": "Read", "description": words(1000)}],
        "system": [{"type": "text", "text": words(1990)},
                   {"type": "text", "cache_control": EPHEMERAL,
                    "text": f"You are Claude Code.\n - Primary working directory: {cwd}\n "
                            + words(1990)[:9]}],
        "messages": messages,
        "metadata": {"user_id": json.dumps({"session_id": session})},
    }).encode()


def send(proxy: UserProxy, payload: bytes, session: str) -> tuple[int, dict, bytes]:
    return proxy.post(payload, {"x-claude-code-session-id": session})


@pytest.fixture
def cached_api():
    with StandIn() as server:
        cache = PromptCache(Clock())
        server.default = cache.answer(lambda rec: {"text": "ok", "output_tokens": 5})
        yield server, cache


def input_side(row: dict) -> int:
    """The row's input-side cost by hand, Opus 4.8 rates."""
    return (row["input_tokens"] * 5 + row["cache_write_5m_tokens"] * 6.25
            + row["cache_read_tokens"] * 0.5) * MICRO


def test_each_call_records_its_forecast_near_what_it_cost(user_dirs, tmp_path, cached_api):
    server, _ = cached_api
    turns = [words(3000)]
    with UserProxy(server.url, tmp_path) as proxy:
        for turn in range(4):
            status, _, _ = send(proxy, body(turns, "s1"), "s1")
            assert status == 200
            calls(user_dirs.db_file, turn + 1)
            turns += [words(20, "ok"), words(400 * (turn + 1))]
        rows = calls(user_dirs.db_file, 4)
    assert [r["cache_read_tokens"] > 0 for r in rows] == [False, True, True, True]
    for row in rows:
        assert row["forecast_picousd"] is not None and row["forecast_note"]
    # the proxy's first call ever is sized at the default bytes per token (these one-letter
    # words run 2 bytes a token, not ~3.6); from its answer on, the forecast knows better
    assert 0.3 < rows[0]["forecast_picousd"] / input_side(rows[0]) < 1
    for row in rows[1:]:
        assert abs(row["forecast_picousd"] - input_side(row)) / input_side(row) < 0.10, row
    assert rows[0]["forecast_note"].endswith("nothing cached for this conversation yet")
    # what the second call reads is the first answer's exact count, not an estimate
    assert rows[1]["forecast_note"].endswith(
        f" {rows[1]['cache_read_tokens']:,} read from the cache")
    # the calls view carries it for reports and SQL
    import sqlite3
    conn = sqlite3.connect(user_dirs.db_file)
    got = conn.execute("SELECT forecast_usd, forecast_picousd FROM calls ORDER BY started_at"
                       ).fetchall()
    conn.close()
    assert [g[1] for g in got] == [r["forecast_picousd"] for r in rows]
    assert got[0][0] == pytest.approx(rows[0]["forecast_picousd"] / 10**12)


def test_a_per_call_cap_refuses_one_absurd_call_and_names_the_way_through(
        user_dirs, tmp_path, cached_api):
    server, _ = cached_api
    assert cli("caps", "set", "--per-call", "0.05").returncode == 0
    with UserProxy(server.url, tmp_path) as proxy:
        # ~6,000 tokens written at $6.25/MTok: about $0.04, under the cap
        status, _, _ = send(proxy, body([words(3000)], "small"), "small")
        assert status == 200
        # a new conversation pasting 20,000 tokens: about $0.14 before any output
        huge = body([words(20000)], "big-session-1")
        status, headers, data = send(proxy, huge, "big-session-1")
        assert status == 429 and headers.get("x-should-retry") == "false"
        message = json.loads(data)["error"]["message"]
        assert message.startswith("ccmeter: per-call cap $0.05: this call would cost about $0.")
        # the system prompt the first session wrote is read; the pasted text is not cached
        assert "k uncached tokens, 3,0" in message and "read from the cache" in message
        assert "ccmeter caps pause --session big-session-1 --for 1h" in message
        assert message.endswith("or raise the cap: ccmeter caps set --per-call N")
        assert len(server.messages_requests()) == 1  # never sent
        rows = calls(user_dirs.db_file, 2)
        blocked = rows[-1]
        assert blocked["status"] == "blocked" and blocked["cost_picousd"] == 0
        assert blocked["forecast_picousd"] > 5 * 10**10
        # the command the message gives lets that session through, at once
        done = cli("caps", "pause", "--session", "big-session-1", "--for", "1h")
        assert done.returncode == 0, done.stderr
        time.sleep(0.05)
        status, _, _ = send(proxy, huge, "big-session-1")
        assert status == 200
        # another session is still held to the cap
        status, _, _ = send(proxy, body([words(20000, "x")], "other"), "other")
        assert status == 429
        # a project's own per-call cap overrides the global one for that project
        assert cli("caps", "set", "--project", "big", "--per-call", "1").returncode == 0
        time.sleep(0.05)
        status, _, _ = send(proxy, body([words(20000, "y")], "p1", cwd="/src/big"), "p1")
        assert status == 200
        rows = calls(user_dirs.db_file, 5)
    assert [r["status"] for r in rows] == ["ok", "blocked", "ok", "blocked", "ok"]


def test_a_plan_cap_refuses_once_the_window_is_used_and_warns_before(user_dirs, tmp_path):
    reset_5h, reset_7d = time.time() + 7200, time.time() + 3 * 86400
    assert cli("caps", "set", "--plan-5h", "90", "--plan-warn-at", "75").returncode == 0
    payload = json.dumps({"model": "claude-opus-4-8", "max_tokens": 10, "stream": True,
                          "messages": [{"role": "user", "content": "hi"}]}).encode()
    oauth = {"x-api-key": "", "authorization": "Bearer sk-ant-oat01-T",
             "x-claude-code-session-id": "sub"}
    from standin import message_events, sse_reply
    with StandIn() as standin, UserProxy(standin.url, tmp_path) as proxy:
        for used in (0.50, 0.80, 0.91):
            standin.enqueue(sse_reply(message_events(), headers=_headers(
                used, reset_5h, 0.1, reset_7d)))
            status, _, _ = proxy.post(payload, oauth)
            assert status == 200
            calls(user_dirs.db_file, 3 if used > 0.9 else (2 if used > 0.6 else 1))
        status, headers, data = proxy.post(payload, oauth)
        assert status == 429 and headers.get("x-should-retry") == "false"
        message = json.loads(data)["error"]["message"]
        assert message.startswith("ccmeter: plan 5-hour window at 91%, cap 90%; it resets in ")
        assert len(standin.messages_requests()) == 3
    assert "plan 5-hour window at 80% (warning at 75%)" in proxy.log_path.read_text()
    # a new proxy takes the window from the database: still refused, nothing sent
    (tmp_path / "again").mkdir()
    with StandIn() as standin, UserProxy(standin.url, tmp_path / "again") as proxy:
        status, _, _ = proxy.post(payload, oauth)
        assert status == 429 and standin.messages_requests() == []


def test_a_restarted_proxy_knows_what_the_last_one_saw_cached(user_dirs, tmp_path, cached_api):
    """The resident proxy exits when idle and the next run starts another: a conversation
    going on through it is forecast as reading its cache, not writing it all again."""
    server, _ = cached_api
    turns = [words(3000)]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with UserProxy(server.url, tmp_path / "one") as proxy:
        assert send(proxy, body(turns, "s1"), "s1")[0] == 200
        calls(user_dirs.db_file, 1)
    with UserProxy(server.url, tmp_path / "two") as proxy:
        turns += [words(20, "ok"), words(300)]
        assert send(proxy, body(turns, "s1"), "s1")[0] == 200
        first, second = calls(user_dirs.db_file, 2)
    cached = first["cache_write_5m_tokens"]
    assert second["cache_read_tokens"] == cached  # the stand-in read it
    assert second["forecast_note"].endswith(f" {cached:,} read from the cache")
    assert abs(second["forecast_picousd"] - input_side(second)) / input_side(second) < 0.25
