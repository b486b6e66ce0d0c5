"""The status line Claude Code runs after each turn, and one frame of `ccmeter watch`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccmeter import config, store
from ccmeter.cli import app
from ccmeter.commands import reports as commands

SAMPLE = Path(__file__).parent / "fixtures" / "statusline-sample.json"
SESSION = json.loads(SAMPLE.read_text())["session_id"]



def call(uid: str, ts: float, cost: int | None, **extra) -> dict:
    return {"call_uid": uid, "started_at": "x", "started_ts": ts, "status": "ok",
            "model": "claude-opus-4-8", "cost_picousd": cost, "updated_ts": ts,
            "project": "proj", **extra}


def fill(rows: list[dict]) -> None:
    db = store.connect(config.paths().db_file)
    store.upsert_calls(db, rows)
    db.conn.close()


def test_sample_session_cost_and_today(home):
    now = time.time()
    fill([
        call("a", now - 30, 31_245_500_000, session_id=SESSION),
        call("b", now - 20, 62_491_000_000, session_id=SESSION),
        call("c", now - 10, 1_000_000_000_000, session_id="someone-else"),
    ])
    line = commands.statusline_text(SAMPLE.read_text(), now=now, cfg={})
    assert line.startswith("Opus 4.8 (1M context) · ")
    assert "session $0.0937" in line
    assert "today $1.09" in line
    assert "\n" not in line and "\x1b" not in line


def test_daily_cap_and_warning(home):
    pytest.importorskip("ccmeter.caps")
    now = time.time()
    fill([call("a", now - 5, 17 * 10**12, session_id=SESSION)])
    line = commands.statusline_text(SAMPLE.read_text(), now=now, cfg={"caps": {"daily": 20}})
    assert "⚠ today $17.00/$20.00 (85%)" in line
    line = commands.statusline_text(SAMPLE.read_text(), now=now, cfg={"caps": {"daily": 100}})
    assert "today $17.00/$100.00 (17%)" in line and "⚠" not in line


def test_subscriber_plan_windows(home):
    now = time.time()
    fill([call("a", now - 5, 10**12, session_id=SESSION, plan_5h_utilization=0.34,
               plan_5h_reset=int(now + 3600), plan_7d_utilization=0.12,
               plan_7d_reset=int(now + 86400 * 3))])
    line = commands.statusline_text(SAMPLE.read_text(), now=now, cfg={})
    assert line.endswith("5h 34% · 7d 12%")


def test_unpriced_session_and_empty_home(home):
    sample = SAMPLE.read_text()
    assert "no calls metered yet" in commands.statusline_text(sample, cfg={})
    now = time.time()
    fill([call("a", now - 5, None, session_id=SESSION)])
    assert "session unpriced" in commands.statusline_text(sample, now=now, cfg={})


@pytest.mark.parametrize("stdin", ["", "not json", "[1, 2]", '{"session_id": 42}'])
def test_never_fails(home, stdin):
    result = CliRunner().invoke(app, ["statusline"], input=stdin)
    assert result.exit_code == 0
    assert result.output.strip()
    assert len(result.output.splitlines()) == 1


def test_cli_with_the_sample(home):
    fill([call("a", time.time() - 5, 93_736_500_000, session_id=SESSION)])
    result = CliRunner().invoke(app, ["statusline"], input=SAMPLE.read_text())
    assert result.exit_code == 0
    assert "session $0.0937" in result.output


def test_statusline_queries_use_indexes(home):
    from ccmeter import sessions

    fill([call("a", time.time(), 1, session_id=SESSION)])
    db = store.connect(config.paths().db_file)
    for sql, params in ((sessions.SESSION_SPEND_SQL, {"session": SESSION}),
                        (sessions.SPEND_SINCE_SQL, {"since": 0}),
                        (sessions.LATEST_PLAN_SQL, {})):
        plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "USING" in plan and "INDEX" in plan, (sql, plan)


def test_watch_frame(home):
    now = time.time()
    fill([
        call("m1", now - 120, 2 * 10**12, session_id="sess-active-1", call_kind="main"),
        call("s1", now - 60, 5 * 10**11, session_id="sess-active-1", call_kind="subagent",
             agent_id="agent-42"),
        call("old", now - 5 * 3600, 10**12, session_id="sess-idle"),
        call("p", now - 30, 10**12, session_id="sess-active-1", plan_5h_utilization=0.5,
             plan_5h_reset=int(now + 3600), plan_7d_utilization=0.25,
             plan_7d_reset=int(now + 86400)),
    ])
    db = store.connect(config.paths().db_file)
    text = commands.render_watch_frame(db, {"caps": {"daily": 10}}, now, width=100)
    assert "today $" in text
    assert "burn $3.50/h" in text
    assert "sess-act" in text and "sess-idl" not in text
    assert "└ agent-42" in text and "$0.50" in text
    assert "plan 5h 50%" in text and "7d 25%" in text
    assert "\x1b" not in text
    try:
        import ccmeter.caps  # noqa: F401
    except ImportError:
        assert "caps:" in text
    else:
        assert "daily cap" in text and "$10.00" in text
    result = CliRunner().invoke(app, ["watch", "--once"])
    assert result.exit_code == 0 and "ccmeter watch" in result.output
