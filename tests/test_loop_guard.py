"""The loop guard: a session that makes the same tool call again and again is warned about,
and with ``[caps] loop = N`` refused after N — through a real ``mitmdump`` with a scripted
client, and with the real Claude Code CLI through ``ccmeter run`` in a user's layout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from capsproxy import mitmdump, post, write_caps
from mitm import db_rows
from standin import StandIn, _message_answer
from typer.testing import CliRunner

from ccmeter.cli import app

TOOL = {"name": "Read", "input": {"file_path": "/tmp/notes.txt"}}


def conversation(repeats: int, *, session: str) -> dict:
    """A request after the model made the same Read call ``repeats`` times."""
    messages: list[dict] = [{"role": "user", "content": "read my notes"}]
    for n in range(repeats):
        messages.append({"role": "assistant", "content": [
            {"type": "tool_use", "id": f"toolu_{session}_{n}", **TOOL}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{session}_{n}", "content": "notes"}]})
    return {"model": "claude-opus-4-8", "max_tokens": 1000, "stream": True,
            "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
            "messages": messages,
            "metadata": {"user_id": json.dumps({"session_id": session})}}


def same_tool_forever(rec):
    return _message_answer(rec, text="Let me read it again.", tool_use=TOOL, output_tokens=20)


@pytest.fixture
def api():
    with StandIn() as server:
        server.default = same_tool_forever
        yield server


def test_a_loop_is_refused_at_the_cap_other_sessions_go_on_and_a_pause_lets_it_continue(
        home, api):
    write_caps(home, {"loop": 3, "notify": False})
    with mitmdump(home, api.url) as port:
        statuses = [post(port, conversation(n, session="loopy"), session="loopy")[0]
                    for n in range(3)]
        status, headers, data = post(port, conversation(3, session="loopy"), session="loopy")
        assert statuses == [200, 200, 200]
        assert status == 429 and headers["x-should-retry"] == "false"
        message = json.loads(data)["error"]["message"]
        assert message == ("ccmeter: loop guard: this session made the same Read call 3 times "
                           "(loop cap 3); its requests are refused. To let it continue: "
                           "ccmeter caps pause --session loopy --for 10m")
        assert len(api.messages_requests()) == 3
        # another session is not touched
        assert post(port, conversation(2, session="calm"), session="calm")[0] == 200
        # the retry of a counted request is not a new repeat
        assert post(port, conversation(1, session="calm"), session="calm")[0] == 200
        assert post(port, conversation(2, session="calm"), session="calm")[0] == 200
        # the way out the message names
        result = CliRunner().invoke(app, ["caps", "pause", "--session", "loopy", "--for", "10m"])
        assert result.exit_code == 0, result.output
        assert "caps paused for session loopy until" in result.output
        assert post(port, conversation(4, session="loopy"), session="loopy")[0] == 200
        rows = db_rows(home, expect=8)
    from ccmeter.statusline import statusline_text

    line = statusline_text(json.dumps({"session_id": "loopy"}), cfg={"caps": {"loop": 3}})
    assert "⛔ loop: Read ×4/3" in line, line
    calm = statusline_text(json.dumps({"session_id": "calm"}), cfg={"caps": {"loop": 3}})
    assert "loop" not in calm
    blocked = [r for r in rows if r["status"] == "blocked"]
    assert [(r["session_id"], r["error_type"], r["cost_picousd"]) for r in blocked] == [
        ("loopy", "loop", 0)]
    repeats = [r["tool_repeats"] for r in rows if r["session_id"] == "loopy"]
    assert repeats == [None, 1, 2, 3, 4]
    assert {r["tool_call_fp"] for r in rows if r["tool_repeats"]} == {
        next(r["tool_call_fp"] for r in rows if r["tool_repeats"])}
    assert rows[1]["tool_call_fp"].startswith("Read:")


def test_without_a_loop_cap_a_loop_is_warned_about_not_refused(home, api):
    write_caps(home, {"notify": False})
    with mitmdump(home, api.url) as port:
        statuses = [post(port, conversation(n, session="w1"), session="w1")[0]
                    for n in range(7)]
        db_rows(home, expect=7)
        log = (home / f"mitmdump-{port}.log").read_text()
    assert statuses == [200] * 7
    assert log.count("session w1 made the same Read call 5 times: a loop?") == 1


@pytest.mark.realclient
def test_real_claude_code_in_a_loop_is_stopped_at_the_loop_cap(residents, user_home, work):
    """The real CLI against a stand-in that answers the same Read call forever: with
    ``ccmeter caps set --loop 8`` the session's ninth main call is refused, and the CLI
    shows the loop guard's message at once and exits."""
    from realclients import claude_bin

    claude = claude_bin()
    (user_home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    notes = work / "notes.txt"
    notes.write_text("the notes\n")
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-ant-api03-dummy-test-key",
               DISABLE_AUTOUPDATER="1")
    ccmeter = [sys.executable, "-m", "ccmeter.entry"]
    assert subprocess.run([*ccmeter, "caps", "set", "--loop", "8"], env=env,
                          capture_output=True).returncode == 0
    tool = {"name": "Read", "input": {"file_path": str(notes)}}

    def answer(rec):
        if not (rec.json or {}).get("tools"):  # the CLI's auxiliary calls: a short text
            return _message_answer(rec, text="Notes", output_tokens=2)
        return _message_answer(rec, text="Reading it again.", tool_use=tool, output_tokens=20)

    with StandIn() as standin:
        standin.default = answer
        started = time.monotonic()
        result = subprocess.run(
            [*ccmeter, "run", "--upstream", standin.url, "--", claude, "-p", "read notes.txt",
             "--allowedTools", "Read"], env=env, cwd=work, capture_output=True, text=True,
            timeout=300)
        elapsed = time.monotonic() - started
        main = [r for r in standin.messages_requests() if (r.json or {}).get("tools")]
    shown = result.stdout + result.stderr
    assert re.search(r"API Error: Request rejected \(429\) · ccmeter: loop guard: this session "
                     r"made the same Read call 8 times \(loop cap 8\); its requests are "
                     r"refused\. To let it continue: ccmeter caps pause --session "
                     r"[0-9a-f-]{36} --for 10m", shown), shown
    assert result.returncode != 0
    assert len(main) == 8, [(len(r.json["messages"]), r.headers.get("x-stainless-retry-count"),
                             r.json.get("max_tokens"), len(r.json["tools"])) for r in main]
    assert elapsed < 120
    db = Path(residents.db_file)
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        blocked = conn.execute("SELECT error_type, tool_repeats FROM api_calls "
                               "WHERE status = 'blocked'").fetchall()
    finally:
        conn.close()
    assert blocked == [("loop", 8)]
