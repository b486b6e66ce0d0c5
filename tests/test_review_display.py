"""What a new user's review found in the output: a row that mixes projects, wide signs in
``watch``, the main model first in ``sessions``, singular counts. Default user layout."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from ccmeter import config, store
from ccmeter.cli import app


def _row(uid: str, ts: float, *, session: str | None, project: str | None,
         model: str = "claude-opus-4-8", cost: int | None = 10**12) -> dict:
    return {
        "call_uid": uid, "started_ts": ts,
        "started_at": datetime.fromtimestamp(ts, UTC).isoformat(),
        "session_id": session, "project": project, "model": model, "requested_model": model,
        "status": "ok", "call_kind": "main", "input_tokens": 10, "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0, "cache_read_tokens": 0, "output_tokens": 5,
        "cost_picousd": cost, "updated_ts": ts,
    }


def _fill(rows: list[dict]) -> None:
    db = store.connect(config.paths().db_file)
    try:
        store.upsert_calls(db, rows)
    finally:
        db.conn.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The installed command, as a user runs it (its errors are one line and an exit code)."""
    exe = os.path.join(os.path.dirname(sys.executable), "ccmeter")
    return subprocess.run([exe, *args], env=os.environ.copy(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def mixed(user_dirs):
    """Calls without a session from two projects, and one real session."""
    now = time.time() - 60
    _fill([_row("c1", now, session=None, project="alpha"),
           _row("c2", now + 1, session=None, project="mitmrev"),
           _row("c3", now + 2, session="s-1", project="web"),
           _row("c4", now + 3, session="s-1", project="web")])


def test_a_row_of_several_projects_says_so_in_every_report(mixed):
    for args in (["sessions"], ["report", "--by", "session", "--since", "1d"]):
        out = _run(*args)
        line = next(x for x in out.splitlines() if x.startswith("(no session)"))
        assert "(several)" in line and "alpha" not in line and "mitmrev" not in line, out
        web = next(x for x in out.splitlines() if x.startswith("s-1"))
        assert "web" in web
    for args in (["sessions", "--format", "json"],
                 ["report", "--by", "session", "--since", "1d", "--format", "json"]):
        rows = json.loads(_run(*args))["rows"]
        none = next(r for r in rows if r["session"] is None)
        assert none["project"] is None and none["projects"] == 2
        one = next(r for r in rows if r["session"] == "s-1")
        assert one["project"] == "web" and one["projects"] == 1
    for args in (["sessions", "--format", "csv"],
                 ["report", "--by", "session", "--since", "1d", "--format", "csv"]):
        rows = list(csv.DictReader(io.StringIO(_run(*args))))
        none = next(r for r in rows if r["session"] == "")
        assert none["project"] == "" and none["projects"] == "2"


@pytest.mark.parametrize("width", [80, 120])
def test_watch_shows_a_reached_caps_name_whole(user_dirs, monkeypatch, width):
    """⛔ takes two terminal cells: measured as one, the cap's name was cut to ``daily c…``."""
    monkeypatch.setenv("COLUMNS", str(width))
    _fill([_row("w1", time.time() - 30, session="s-w", project="web", cost=2 * 10**12)])
    assert CliRunner().invoke(app, ["caps", "set", "--daily", "1"]).exit_code == 0
    out = _run("watch", "--once")
    line = next(x for x in out.splitlines() if "⛔" in x)
    assert "…" not in line and "daily" in line, out


def test_a_table_measures_wide_names_in_terminal_cells(user_dirs):
    """A name in wide characters (two cells each) was sized by its length and cut."""
    _fill([_row("j1", time.time() - 30, session="s-j", project="日本語のプロジェクト")])
    out = _run("report", "--by", "project", "--since", "1d")
    assert "日本語のプロジェクト" in out and "…" not in out, out


def test_sessions_show_the_costliest_model_first_and_whole_at_80_columns(user_dirs,
                                                                          monkeypatch):
    """Sorted by calls, a session's many cheap haiku calls came first and were cut to
    ``haiku-4-5-2025…``, hiding that the money went to opus-4-8."""
    monkeypatch.setenv("COLUMNS", "80")
    now = time.time() - 600
    rows = [_row(f"o{i}", now + i, session="5e55-main", project="mitmrev",
                 model="claude-opus-4-8", cost=40 * 10**10) for i in range(3)]
    rows += [_row(f"h{i}", now + 10 + i, session="5e55-main", project="mitmrev",
                  model="claude-haiku-4-5-20251001", cost=10**9) for i in range(20)]
    _fill(rows)
    out = _run("sessions")
    line = next(x for x in out.splitlines() if x.startswith("5e55-mai"))
    assert "opus-4-8 ×3" in line, out
    assert "2025" not in line and "claude-" not in line, out
    models = json.loads(_run("sessions", "--format", "json"))["rows"][0]["models"]
    assert models == "opus-4-8 ×3, haiku-4-5 ×20"


def test_model_mix_keeps_a_date_where_two_models_would_read_the_same():
    from ccmeter.sessions import SessionSummary

    summary = SessionSummary("s", set(), 0.0, 0.0, 3, None, 0, 0,
                             {"claude-3-5-sonnet-20240620": 1, "claude-3-5-sonnet-20241022": 2},
                             {"claude-3-5-sonnet-20240620": 5, "claude-3-5-sonnet-20241022": 1})
    assert summary.model_mix() == "3-5-sonnet-20240620 ×1, 3-5-sonnet-20241022 ×2"


def _today(cost: int) -> None:
    _fill([_row("t1", time.time() - 5, session="s-t", project="web", cost=cost)])


def _statusline() -> str:
    from ccmeter.statusline import statusline_text

    return statusline_text(json.dumps({"session_id": "s-t"}))


def test_a_cap_shows_as_it_was_set_in_every_view(user_dirs, monkeypatch):
    """``caps set`` echoed $0.50, the caps table showed $0.5000 and the status line
    ``$7.42/$0.5000``: a cap is shown with the decimals it was set with everywhere."""
    monkeypatch.setenv("COLUMNS", "100")
    _today(742 * 10**10)
    assert "$0.50" in _run("caps", "set", "--daily", "0.5")
    caps = _run("caps")
    assert "$0.50 " in caps and "$0.5000" not in caps and "$7.42" in caps, caps
    assert "today $7.42/$0.50 " in _statusline()
    watch = _run("watch", "--once")
    assert "$0.5000" not in watch and "$0.50 " in watch, watch


def test_spend_against_a_cap_is_floored_everywhere(user_dirs, monkeypatch):
    """$1.29825 was ``$1.29 spent`` in the refusal but ``$1.30`` in the run summary, caps
    and the status line: beside a cap it has not passed, a spend never looks like the cap."""
    from ccmeter.caps.messages import refusal_message
    from ccmeter.caps.policy import CapStatus
    from ccmeter.runsummary import RunSummary

    monkeypatch.setenv("COLUMNS", "100")
    spent = 1_298_250_000_000
    _today(spent)
    _run("caps", "set", "--daily", "1.30")
    caps = _run("caps")
    assert "$1.29 " in caps and "$1.30 " in caps, caps
    assert "today $1.29/$1.30 " in _statusline()
    watch = _run("watch", "--once")
    assert "today $1.29" in watch and "$1.29 " in watch, watch
    summary = RunSummary(1, 1, spent, 0, spent, "daily cap reached").line()
    assert "this run $1.29 " in summary and "today $1.29 " in summary, summary
    status = CapStatus("daily", "global", 1_300_000_000_000, spent, None, 1.0, "calendar")
    assert "($1.29 spent)" in refusal_message(status, time.time())


def test_one_call_is_one_call_not_one_calls(user_dirs, monkeypatch):
    """``session`` said ``· 1 calls ·``; every printed count agrees with its noun."""
    monkeypatch.setenv("COLUMNS", "120")
    _fill([_row("u1", time.time() - 5, session="s-one", project="web", cost=None,
                model="claude-unknown-9")])
    assert " · 1 call · " in _run("session", "s-one")
    assert "1 call without a price: a model the catalog lacks" in " ".join(
        _run("report", "--by", "model", "--since", "1d").split())
    assert "(+1 unpriced call)" in _run("watch", "--once")
    assert "(1 call, schema v" in CliRunner().invoke(app, ["doctor"]).output
    _run("caps", "set", "--daily", "5")
    assert "removed 1 cap" in _run("caps", "clear")


def test_caps_pause_for_takes_a_date_as_its_message_says(user_dirs):
    result = CliRunner().invoke(app, ["caps", "pause", "--for", "999y"])
    assert result.exit_code == 2 and "or a date (2026-11-01)" in result.output
    year = datetime.now().year + 1
    out = _run("caps", "pause", "--for", f"{year}-12-01")
    assert f"caps paused until {year}-12-01 00:00" in out
    out = _run("caps", "pause", "--for", f"{year}-12-01T09:30")
    assert f"caps paused until {year}-12-01 09:30" in out
    past = CliRunner().invoke(app, ["caps", "pause", "--for", "2020-01-01"])
    assert past.exit_code == 2 and "not in the future" in past.output


@pytest.mark.parametrize("args", [["report", "--since", "1M"], ["sessions", "--since", "7D"],
                                  ["caps", "pause", "--for", "1M"]])
def test_uppercase_units_are_refused_not_read_as_minutes(user_dirs, args):
    """``--since 1M`` silently meant one minute."""
    _fill([_row("m1", time.time() - 5, session="s-m", project="web")])
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    assert "units are lowercase" in result.stderr and "mo months" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout


def test_a_corrupt_database_is_one_message_and_code_everywhere(user_dirs):
    db_file = config.paths().db_file
    db_file.parent.mkdir(parents=True, exist_ok=True)
    db_file.write_bytes(b"this is not sqlite at all " * 100)
    seen = set()
    for args in (["caps"], ["report"], ["sessions"], ["watch", "--once"]):
        result = _cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(f"ccmeter: cannot open {db_file}: "), result.stderr
        seen.add(result.stderr.strip())
    assert len(seen) == 1, seen


def test_env_help_does_not_say_it_listens_and_prices_names_no_missing_file(user_dirs):
    text = CliRunner().invoke(app, ["env", "--help"]).output
    assert "listen on" not in " ".join(text.split())
    out = _run("prices")
    assert not config.paths().config_file.exists()
    assert "overrides: 0 in" not in " ".join(out.split()) and "does not exist yet" in out
