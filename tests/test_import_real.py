"""``ccmeter import`` and ``reconcile`` on transcripts the real Claude Code CLI wrote.

The CLI runs against the stand-in, in the user's layout (HOME only), once directly
(``ANTHROPIC_BASE_URL``) and once through ``ccmeter run``: the transcripts are the CLI's own,
not a guess at their format. The stand-in's handler makes the main agent hand work to a
subagent (so a subagent transcript is written beside the session's), and records what it
answered, call by call, to compare with what the import finds.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from standin import (
    Recorded,
    Reply,
    StandIn,
    _has_tool_result,
    _last_user_content,
    _message_answer,
    parse_sse,
)
from test_user_layout import cli

pytestmark = pytest.mark.realclient

PICO = 10**12


class Answers:
    """The stand-in's handler: main agent -> Agent tool -> a subagent answers -> main ends;
    calls without tools (Claude Code's auxiliary Haiku calls) get a short text. Keeps each
    answer's message id, model, usage and whether it was auxiliary."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, rec: Recorded) -> Reply:
        body = rec.json or {}
        tools = [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]
        if not tools:
            kind, reply = "auxiliary", _message_answer(rec, text="OK.", input_tokens=20,
                                                       output_tokens=2)
        elif rec.headers.get("x-claude-code-agent-id"):
            kind, reply = "subagent", _message_answer(rec, text="Subagent finished.",
                                                      input_tokens=111, cache_read=50,
                                                      output_tokens=7)
        elif _has_tool_result(_last_user_content(body)):
            kind, reply = "main", _message_answer(rec, text="All done.", input_tokens=300,
                                                  cache_write_5m=1000, output_tokens=9)
        else:
            agent = "Agent" if "Agent" in tools else "Task"
            kind, reply = "main", _message_answer(
                rec, text="Delegating.", output_tokens=40, input_tokens=200,
                tool_use={"name": agent, "input": {"description": "look around",
                                                   "prompt": "Say that you are done.",
                                                   "subagent_type": "general-purpose"}})
        assert isinstance(reply.body, bytes)
        events = parse_sse(reply.body)
        start = next(data for name, data in events if name == "message_start")["message"]
        final = next(data for name, data in events if name == "message_delta")["usage"]
        self.sent.append({"kind": kind, "message_id": start["id"], "model": start["model"],
                          "usage": {**start["usage"], **final},
                          "session": rec.headers.get("x-claude-code-session-id")})
        return reply


def _claude_env(home: Path) -> dict[str, str]:
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    return dict(os.environ, ANTHROPIC_API_KEY="sk-ant-api03-dummy-test-key",
                DISABLE_AUTOUPDATER="1")


def _calls(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY started_at")]
    finally:
        conn.close()


def _opus_cost(usage: dict[str, Any]) -> int:
    """Opus 4.8 list prices per MTok: $5 input, $6.25 5-minute writes, $0.50 reads, $25 out."""
    micro = (usage["input_tokens"] * 5 + usage["cache_creation_input_tokens"] * 6.25
             + usage["cache_read_input_tokens"] * 0.5 + usage["output_tokens"] * 25)
    return round(micro * 10**6)


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "shop-api"
    (path / ".git").mkdir(parents=True)
    (path / "src").mkdir()
    return path


def test_import_into_an_empty_home_gives_the_standins_usage_per_call(user_home, user_dirs,
                                                                       repo):
    from realclients import claude_bin

    claude = claude_bin()
    env = _claude_env(user_home)
    answers = Answers()
    import subprocess

    with StandIn() as standin:
        standin.default = answers
        env["ANTHROPIC_BASE_URL"] = standin.url
        done = subprocess.run([claude, "-p", "look around, with help"], env=env,
                              cwd=repo / "src", capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    transcripts = list((user_home / ".claude" / "projects").rglob("*.jsonl"))
    assert any("subagents" in str(p) for p in transcripts), transcripts  # the CLI's layout

    imported = cli("import", "--format", "json", env={k: v for k, v in env.items()
                                                       if k != "ANTHROPIC_BASE_URL"})
    assert imported.returncode == 0, imported.stderr
    stats = json.loads(imported.stdout)["rows"][0]
    expected = [a for a in answers.sent if a["kind"] != "auxiliary"]
    assert stats["new_calls"] == len(expected) and stats["on_wire"] == 0
    assert stats["malformed"] == 0 and stats["truncated"] == 0

    rows = {r["message_id"]: r for r in _calls(user_dirs.db_file)}
    assert set(rows) == {a["message_id"] for a in expected}  # auxiliary calls: not in them
    for answer in expected:
        row, usage = rows[answer["message_id"]], answer["usage"]
        assert row["source"] == "transcript"
        assert (row["input_tokens"], row["cache_write_5m_tokens"], row["cache_read_tokens"],
                row["output_tokens"]) == (usage["input_tokens"],
                                          usage["cache_creation_input_tokens"],
                                          usage["cache_read_input_tokens"],
                                          usage["output_tokens"])
        assert row["cost_picousd"] == _opus_cost(usage)
        assert row["model"] == answer["model"] and row["project"] == "shop-api"
        assert row["session_id"] == answer["session"]
        assert row["call_kind"] == ("subagent" if answer["kind"] == "subagent" else "main")
        assert row["request_id"].startswith("req_")

    again = cli("import")
    assert again.returncode == 0 and "Nothing new" in again.stdout, again.stdout
    assert len(_calls(user_dirs.db_file)) == len(expected)

    report = cli("report", "--by", "month", "--format", "json")
    totals = json.loads(report.stdout)["totals"]
    assert totals["calls"] == totals["transcript_calls"] == len(expected)
    assert totals["source"] == "transcript"
    assert totals["cost_picousd"] == sum(_opus_cost(a["usage"]) for a in expected)
    table = cli("report", "--by", "month")
    assert "imported:" in table.stdout and "transcript" in table.stdout


def test_import_after_ccmeter_run_adds_nothing_twice_and_reconcile_shows_what_is_missing(
        user_home, user_dirs, repo):
    from realclients import claude_bin

    claude = claude_bin()
    env = _claude_env(user_home)
    answers = Answers()
    with StandIn() as standin:
        standin.default = answers
        run = cli("run", "--upstream", standin.url, "--", claude, "-p",
                  "look around, with help", env=env, cwd=repo)
    assert run.returncode == 0, run.stderr
    assert "METERING FAILED" not in run.stderr, run.stderr
    # transcripts now exist and nothing was imported: the next run says how, in one line
    hint = [line for line in cli("run", "--", "true").stderr.splitlines()
            if "ccmeter import" in line]
    assert len(hint) == 1, hint

    def totals(*extra: str) -> dict[str, Any]:
        out = cli("report", "--by", "month", "--format", "json", *extra)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["totals"]

    before = totals()
    answered = len(answers.sent)
    assert before["calls"] == answered and before["source"] == "wire"

    imported = cli("import", "--format", "json")
    stats = json.loads(imported.stdout)["rows"][0]
    in_transcripts = [a for a in answers.sent if a["kind"] != "auxiliary"]
    auxiliary = [a for a in answers.sent if a["kind"] == "auxiliary"]
    assert auxiliary, "the forward-proxied CLI makes its auxiliary Haiku call"
    assert stats["new_calls"] == stats["on_wire"] == len(in_transcripts)

    after = totals()
    assert (after["calls"], after["cost_picousd"]) == (before["calls"], before["cost_picousd"])
    assert after["transcript_calls"] == 0 and after["source"] == "wire"
    assert totals("--source", "transcript")["calls"] == 0
    assert totals("--source", "wire")["calls"] == answered
    assert "ccmeter import" not in cli("run", "--", "true").stderr  # imported once: no hint

    out = cli("reconcile", "--since", "1d", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    [row] = doc["rows"]
    assert row["session"] == answers.sent[-1]["session"]
    assert row["project"] == "shop-api"
    assert row["wire_calls"] == answered
    assert row["transcript_calls"] == len(in_transcripts)
    assert row["missing_calls"] == len(auxiliary)
    aux_cost = sum(round((a["usage"]["input_tokens"] * 1 + a["usage"]["output_tokens"] * 5)
                         * 10**6) for a in auxiliary)  # Haiku 4.5: $1 in, $5 out per MTok
    assert row["difference_picousd"] == aux_cost
    assert row["wire_cost_picousd"] - row["transcript_cost_picousd"] == aux_cost
    assert row["input_tokens_diff"] == sum(a["usage"]["input_tokens"] for a in auxiliary)
    assert row["output_tokens_diff"] == sum(a["usage"]["output_tokens"] for a in auxiliary)
    assert doc["totals"]["missing_calls"] == len(auxiliary)
    table = cli("reconcile", "--since", "1d")
    assert table.returncode == 0 and "Missing" in table.stdout, table.stdout
