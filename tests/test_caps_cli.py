"""``ccmeter caps``: set, show, unset, clear, mode, pause/resume, and user errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccmeter import config, store
from ccmeter.cli import app


@pytest.fixture
def home(home, monkeypatch) -> Path:
    monkeypatch.setenv("COLUMNS", "140")  # the caps table is wide
    return home


def run(*args: str):
    return CliRunner().invoke(app, ["caps", *args])


def caps_table(home: Path) -> dict:
    return tomllib.loads((home / "config.toml").read_text()).get("caps", {})


def test_set_writes_exact_amounts_and_show_lists_them(home):
    result = run("set", "--hourly", "5", "--daily", "20", "--monthly", "300")
    assert result.exit_code == 0, result.output
    assert "hourly $5.00, daily $20.00, monthly $300.00" in result.output
    result = run("set", "--project", "big-refactor", "--daily", "10.125")
    assert result.exit_code == 0, result.output
    table = caps_table(home)
    assert table["daily"] == "20" and table["monthly"] == "300"
    assert table["projects"]["big-refactor"] == {"daily": "10.125"}

    db = store.connect(home / "ccmeter.db")
    import time
    now = time.time()
    store.upsert_calls(db, [{"call_uid": "c1", "started_at": "x", "started_ts": now - 1,
                             "status": "ok", "cost_picousd": 4 * 10**12, "project": "big-refactor",
                             "updated_ts": now}])
    db.conn.close()

    shown = run()
    assert shown.exit_code == 0, shown.output
    assert "project:big-refactor" in shown.output and "$10.13" not in shown.output
    assert "$4.00" in shown.output and "calendar" in shown.output
    doc = json.loads(run("--format", "json").output)
    rows = {(r["cap"], r["scope"]): r for r in doc["rows"]}
    assert rows[("daily", "global")]["spent_picousd"] == 4 * 10**12
    assert rows[("daily", "global")]["limit_usd"] == "20.00" or \
        rows[("daily", "global")]["limit_picousd"] == 20 * 10**12
    assert rows[("daily", "project:big-refactor")]["used"] == pytest.approx(4 / 10.125)
    assert rows[("hourly", "global")]["resets"] is not None
    assert doc["meta"]["mode"] == "soft"


def test_unset_clear_mode_and_settings(home):
    assert run("set", "--daily", "20", "--weekly", "50").exit_code == 0
    assert run("set", "--per-session", "--total", "3").exit_code == 0
    assert run("unset", "weekly").exit_code == 0
    assert "weekly" not in caps_table(home)
    assert run("mode", "hard").exit_code == 0
    assert caps_table(home)["mode"] == "hard"
    assert run("set", "--window", "rolling", "--warn-at", "0.5,0.9", "--on-error", "block",
               "--timezone", "Europe/Berlin").exit_code == 0
    table = caps_table(home)
    assert table["warn_at"] == [0.5, 0.9] and table["on_error"] == "block"
    assert table["per_session"] == {"total": "3"}
    assert run("clear").exit_code == 0
    table = caps_table(home)
    assert "daily" not in table and "per_session" not in table and table["mode"] == "hard"
    assert "No spending caps set" in run().output


def test_pause_and_resume_are_shown_and_logged(home):
    assert run("set", "--daily", "20").exit_code == 0
    result = run("pause", "--for", "30m")
    assert result.exit_code == 0, result.output
    assert "paused until" in result.output
    assert "paused_until" in caps_table(home)
    assert "PAUSED" in run().output
    assert "caps paused until" in (home / "logs" / "ccmeter.log").read_text()
    assert run("resume").exit_code == 0
    assert "paused_until" not in caps_table(home)
    assert "PAUSED" not in run().output
    assert "caps resumed" in (home / "logs" / "ccmeter.log").read_text()


@pytest.mark.parametrize(("args", "needle"), [
    (["set", "--daily", "abc"], "'abc' is not a dollar amount"),
    (["set", "--daily", "-5"], "cannot be negative"),
    (["set", "--daily", "0.0000000000001"], "more decimals than a picodollar"),
    (["set"], "nothing to set"),
    (["set", "--total", "3"], "add --per-session"),
    (["set", "--project", "p", "--per-session", "--daily", "1"], "choose one of"),
    (["set", "--mode", "harsh"], "mode must be one of"),
    (["set", "--timezone", "Mars/Base"], "unknown time zone"),
    (["set", "--warn-at", "2"], "warn_at"),
    (["unset", "weekly"], "no weekly cap is set"),
    (["unset", "yearly"], "unknown cap 'yearly'"),
    (["mode", "medium"], "mode must be hard or soft"),
    (["pause", "--for", "soon"], "is not a duration"),
    (["--format", "xml"], "unknown format"),
])
def test_user_errors_are_one_line_and_exit_2(home, args, needle):
    result = CliRunner().invoke(app, ["caps", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_a_broken_config_is_reported_not_overwritten(home):
    (home / "config.toml").write_text("[caps\n")
    result = run("set", "--daily", "20")
    assert result.exit_code == 2 and "not valid TOML" in result.output
    assert (home / "config.toml").read_text() == "[caps\n"


def test_every_caps_command_and_option_has_help(home):
    import typer.main

    group = typer.main.get_command(app).commands["caps"]
    assert group.help
    for name, command in group.commands.items():
        assert command.help, name
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"caps {name} {param.name}"


def test_cap_statuses_for_the_status_line(home):
    from ccmeter.caps.guard import cap_statuses
    from ccmeter.caps.policy import CapStatus

    cfg = {"caps": {"daily": "1", "per_session": {"total": "0.5"}}}
    db = store.connect(config.paths().db_file)
    statuses = cap_statuses(db, cfg, session_id="abc")
    assert all(isinstance(s, CapStatus) for s in statuses)
    assert {(s.name, s.scope, s.window) for s in statuses} == {
        ("daily", "global", "calendar"), ("total", "session:abc", "total")}
    assert all(s.fraction == 0 and s.spent_picousd == 0 for s in statuses)


def test_show_session_takes_the_short_id_that_sessions_prints(home):
    import time

    now = time.time()
    spend = {"72292d5c-0d7e-4a51-9d7b-5f3c8c1a2b3c": 30, "7229aaaa-1111-4a51-9d7b-000000000001": 7,
             "0b1e2f3a-2222-4a51-9d7b-000000000002": 5}
    db = store.connect(home / "ccmeter.db")
    store.upsert_calls(db, [
        {"call_uid": f"c-{sid}", "started_at": "x", "started_ts": now - 5, "status": "ok",
         "cost_picousd": cents * 10**10, "session_id": sid, "updated_ts": now}
        for sid, cents in spend.items()])
    db.conn.close()
    assert run("set", "--per-session", "--total", "1").exit_code == 0

    listed = CliRunner().invoke(app, ["sessions"])
    assert "72292d5c " in listed.output  # the short form a user copies from `ccmeter sessions`
    doc = json.loads(run("--session", "72292d5c", "--format", "json").output)
    [row] = [r for r in doc["rows"] if r["scope"].startswith("session:")]
    assert row["scope"] == "session:72292d5c-0d7e-4a51-9d7b-5f3c8c1a2b3c"
    assert row["spent_picousd"] == 30 * 10**10 and row["used"] == pytest.approx(0.30)
    full = run("--session", "72292d5c-0d7e-4a51-9d7b-5f3c8c1a2b3c", "--format", "json")
    assert json.loads(full.output)["rows"] == doc["rows"]

    ambiguous = run("--session", "7229")
    assert ambiguous.exit_code == 2 and len(ambiguous.output.strip().splitlines()) == 1
    assert "matches 2 sessions" in ambiguous.output
    assert "72292d5c-0d7e" in ambiguous.output and "7229aaaa-1111" in ambiguous.output
    unknown = run("--session", "ffff")
    assert unknown.exit_code == 2 and "no session starts with 'ffff'" in unknown.output


def test_unset_takes_any_mix_of_names_and_says_which_apply_everywhere(home):
    run = lambda *a: CliRunner().invoke(app, ["caps", *a])  # noqa: E731
    assert run("set", "--daily", "5", "--per-call", "2", "--loop", "8", "--plan-5h", "90",
               "--plan-7d", "95").exit_code == 0
    done = run("unset", "daily", "per-call", "loop", "plan_5h")
    assert done.exit_code == 0, done.output
    assert "removed for all spending: daily, per_call, loop, plan_5h" in done.output
    table = caps_table(home)
    assert table == {"plan_7d": 95}
    wrong = run("unset", "plan_7d", "--project", "x")
    assert wrong.exit_code == 2
    assert "plan_7d applies to every session" in wrong.output
    unknown = run("unset", "yearly")
    assert "one of hourly, daily, weekly, monthly, per_call, loop, plan_5h, plan_7d" in (
        unknown.output)
