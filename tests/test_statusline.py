"""The status line Claude Code runs after each turn, and one frame of `ccmeter watch`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccmeter import config, store
from ccmeter.cli import app
from ccmeter.commands.live import render_watch_frame
from ccmeter.statusline import statusline_text

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
    line = statusline_text(SAMPLE.read_text(), now=now, cfg={})
    assert line.startswith("Opus 4.8 (1M context) · ")
    assert "session $0.0937" in line
    assert "today $1.09" in line
    assert "\n" not in line and "\x1b" not in line


def test_daily_cap_and_warning(home):
    pytest.importorskip("ccmeter.caps")
    now = time.time()
    fill([call("a", now - 5, 17 * 10**12, session_id=SESSION)])
    line = statusline_text(SAMPLE.read_text(), now=now, cfg={"caps": {"daily": 20}})
    assert "⚠ today $17.00/$20.00 (85%)" in line
    line = statusline_text(SAMPLE.read_text(), now=now, cfg={"caps": {"daily": 100}})
    assert "today $17.00/$100.00 (17%)" in line and "⚠" not in line


def test_subscriber_plan_windows(home):
    now = time.time()
    fill([call("a", now - 5, 10**12, session_id=SESSION, plan_5h_utilization=0.34,
               plan_5h_reset=int(now + 3600), plan_7d_utilization=0.12,
               plan_7d_reset=int(now + 86400 * 3))])
    line = statusline_text(SAMPLE.read_text(), now=now, cfg={})
    assert line.endswith("5h 34% · 7d 12%")


def test_unpriced_session_and_empty_home(home):
    sample = SAMPLE.read_text()
    assert "no calls metered yet" in statusline_text(sample, cfg={})
    now = time.time()
    fill([call("a", now - 5, None, session_id=SESSION)])
    assert "session unpriced" in statusline_text(sample, now=now, cfg={})


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
    text = render_watch_frame(db, {"caps": {"daily": 10}}, now, width=100)
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


# --- a session ccmeter never saw -------------------------------------------------------------

REFERENCE_SAMPLE = (Path(__file__).parent.parent.parent / "shared" / "reference"
                    / "claude-code-statusline-sample.json")


def run_statusline(stdin: str) -> str:
    """``ccmeter statusline`` as Claude Code runs it: a fresh process, the JSON on stdin."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ccmeter.entry", "statusline"], input=stdin,
                          capture_output=True, text=True, timeout=30, check=True)
    assert done.stderr == ""
    return done.stdout


@pytest.mark.parametrize("with_database", [True, False])
def test_an_unseen_session_shows_claude_codes_estimate(user_dirs, with_database):
    sample = SAMPLE.read_text()
    assert json.loads(sample)["cost"]["total_cost_usd"] == 0.0937365
    if REFERENCE_SAMPLE.exists():  # the fixture is the reference capture
        assert json.loads(REFERENCE_SAMPLE.read_text()) == json.loads(sample)
    if with_database:  # spend of other sessions, none of this one
        fill([call("a", time.time() - 5, 2 * 10**12, session_id="another-session")])
    line = run_statusline(sample)
    assert "session ≈$0.0937 (Claude Code's estimate)" in line, line
    assert "session $0.00" not in line
    assert line.count("\n") == 1


def test_a_metered_session_shows_ccmeters_own_figure(user_dirs):
    fill([call("a", time.time() - 5, 31_245_500_000, session_id=SESSION)])
    line = run_statusline(SAMPLE.read_text())
    assert "session $0.0312" in line and "estimate" not in line


@pytest.mark.parametrize("cost", ['{"total_cost_usd": "x"}', '{"total_cost_usd": -1}',
                                  '{"total_cost_usd": true}', '"nope"', "null"])
def test_a_bad_estimate_is_left_out(user_dirs, cost):
    fill([call("a", time.time() - 5, 10**12, session_id="another-session")])
    line = run_statusline(json.dumps({"session_id": "unseen"})[:-1] + f', "cost": {cost}}}')
    assert "session $0.00" in line and "estimate" not in line


def test_the_status_line_process_stays_lean(user_dirs):
    import subprocess
    import sys

    probe = ("import sys; from ccmeter.entry import main; sys.argv = ['ccmeter', 'statusline'];"
             " main(); print(sorted(m for m in ('typer', 'rich', 'mitmproxy', 'click')"
             " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], input=SAMPLE.read_text(),
                          capture_output=True, text=True, timeout=30, check=True)
    assert "Claude Code's estimate" in done.stdout
    assert done.stdout.splitlines()[-1] == "[]"
