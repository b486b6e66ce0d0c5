"""Every table command at 80 columns against a realistic database, in the user's default
folders: the cells that matter are whole, no line is wider than the terminal, and money has
one precision per table. An empty database says what to do next."""

from __future__ import annotations

import re
import sqlite3

import pytest
from typer.testing import CliRunner

from ccmeter import config
from ccmeter.cli import app
from ccmeter.pricing import Catalog
from tests.realistic_db import MODELS, PROJECTS, fill_realistic

WIDTH = 80
NO_CALLS = "No calls recorded yet. Run Claude Code through ccmeter: ccmeter run -- claude"
_MONEY = re.compile(r"(?<![\w.])\$[\d,]+(?:\.(\d+))?")


@pytest.fixture
def narrow(monkeypatch, user_dirs):
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    fill_realistic()
    runner = CliRunner()
    for args in (["caps", "set", "--daily", "20", "--hourly", "2.5", "--monthly", "300"],
                 ["caps", "set", "--project", PROJECTS[0], "--daily", "10"],
                 ["caps", "set", "--per-session", "--total", "3"]):
        assert runner.invoke(app, args).exit_code == 0
    return runner


def show(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    wide = [line for line in lines if len(line) > WIDTH]
    assert not wide, f"wider than {WIDTH}: {wide}"
    return result.output


def one_precision(text: str) -> None:
    """Every amount in one table shows the same number of decimals."""
    places = {len(m.group(1) or "") for m in _MONEY.finditer(text)}
    assert len(places) <= 1, f"mixed precision {places} in:\n{text}"


def test_prices_shows_every_model_id_whole(narrow):
    out = show(narrow, "prices")
    ids = [line.split()[0] for line in out.splitlines() if line.startswith("claude-")]
    assert ids == [m.id for m in Catalog.bundled().models()]
    assert "…" not in out
    header = next(line for line in out.splitlines() if line.startswith("Model"))
    assert header.split() == ["Model", "Input", "Write", "5m", "Write", "1h", "Read", "Output"]
    rates = [line.split()[1:] for line in out.splitlines() if line.startswith("claude-")]
    assert {len(r.split(".")[1]) for row in rates for r in row} == {3}  # one precision


@pytest.mark.parametrize("by", ["project", "model", "session", "provider", "day", "hour",
                                "week", "month"])
def test_report_keeps_what_it_groups_by_whole(narrow, by):
    out = show(narrow, "report", "--by", by, "--since", "60d")
    one_precision(out)
    names = {"project": PROJECTS, "model": MODELS}.get(by, ())
    for name in names:
        assert re.search(rf"^{re.escape(name)}\s", out, re.M), f"{name} cut in:\n{out}"
    assert "Cost" in out and "Calls" in out


def test_report_two_levels_and_the_default_view(narrow):
    out = show(narrow, "report", "--by", "project", "--by", "model", "--since", "60d")
    one_precision(out)
    for model in MODELS:
        assert model in out
    for project in PROJECTS:  # a long project name gives way to the model ids last
        assert project[:28] in out
    out = show(narrow, "report")
    assert "Today by project" in out and PROJECTS[0] in out


def test_sessions_keep_their_times(narrow):
    out = show(narrow, "sessions")
    header = next(line for line in out.splitlines() if line.startswith("Session  "))
    assert "Started" in header and "Last call" in header and "Cost" in header
    rows = [line for line in out.splitlines() if re.match(r"[0-9a-f]{8}  ", line)]
    assert len(rows) >= 2
    for row in rows:
        assert re.match(r"[0-9a-f]{8}  \d{4}-\d\d-\d\d \d\d:\d\d  (\d{4}-\d\d-\d\d )?\d\d:\d\d",
                        row), row
    one_precision(out)


def test_one_session_keeps_its_model_ids(narrow):
    db = sqlite3.connect(config.paths().db_file)
    sid = db.execute("SELECT session_id FROM calls WHERE model LIKE '%unknown%' "
                     "ORDER BY started_at DESC LIMIT 1").fetchone()[0]
    db.close()
    out = show(narrow, "session", sid[:8])
    assert "unknown-model-9-20260101" in out
    table = out.split("By agent")[0]
    one_precision(table.split("\n", 2)[2])  # the title's lone total aside


def test_caps_keep_used_and_resets(narrow):
    out = show(narrow, "caps")
    header = next(line for line in out.splitlines() if line.startswith("Cap"))
    assert "Used" in header and "Resets" in header and "Spent" in header
    for name in ("hourly", "daily", "monthly"):
        row = next(line for line in out.splitlines() if line.startswith(name))
        assert re.search(r"\d+%", row) and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row), row
    one_precision(out)


def test_watch_once_fits(narrow):
    out = show(narrow, "watch", "--once")
    caps = out.split("Caps")[1].split("Active sessions")[0]
    assert "Resets" in caps and "Used" in caps
    assert re.search(r"daily cap\s+\$\S+\s+\$\S+\s+\d+%\s+\w{3} \d\d:\d\d", caps), caps
    one_precision(caps)
    one_precision(out.split("Active sessions")[1])


def test_team_report_keeps_projects_and_models_whole(narrow, tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    assert narrow.invoke(app, ["push", "--to", str(share)]).exit_code == 0
    out = show(narrow, "team", "report", "--from", str(share), "--by", "project", "--by",
               "model")
    for model in MODELS:
        assert model in out
    one_precision(out)


def test_doctor_fits(narrow):
    result = narrow.invoke(app, ["doctor"])
    assert all(len(line) <= WIDTH for line in result.output.splitlines()), result.output


# --- an empty database -----------------------------------------------------------------------


@pytest.mark.parametrize("args", [["report"], ["report", "--by", "model", "--since", "30d"],
                                  ["sessions"]])
def test_an_empty_database_says_what_to_do(user_dirs, args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0
    assert result.output == NO_CALLS + "\n"


def test_watch_on_an_empty_database(user_dirs):
    result = CliRunner().invoke(app, ["watch", "--once"])
    assert result.exit_code == 0 and NO_CALLS in result.output
    assert "$0.00" not in result.output


def test_an_empty_period_says_so(user_dirs, monkeypatch):
    fill_realistic(now=1_700_000_000)
    result = CliRunner().invoke(app, ["report", "--by", "model", "--since", "1d"])
    assert result.exit_code == 0
    assert result.output.startswith("No calls in this period") and "total" not in result.output
    result = CliRunner().invoke(app, ["sessions"])
    assert result.output.startswith("No sessions since")


def test_team_report_on_an_empty_share(user_dirs, tmp_path):
    share = tmp_path / "share"
    (share / "ccmeter" / "v1").mkdir(parents=True)
    result = CliRunner().invoke(app, ["team", "report", "--from", str(share)])
    assert result.exit_code == 0
    assert result.output.startswith(f"No spend summaries in {share} yet")
    assert f"ccmeter push --to {share}" in result.output


# --- the renderer's rules, one by one --------------------------------------------------------


def table_text(rows, columns, width=WIDTH, **kwargs) -> str:
    import io

    from ccmeter.render import make_console, render_table

    out = io.StringIO()
    make_console(out, width=width).print(render_table(rows, columns, width=width, **kwargs))
    return out.getvalue()


def test_money_has_one_precision_per_table():
    from ccmeter.money import usd_places
    from ccmeter.render import Column

    assert usd_places([10**12, 25 * 10**12, 0, None]) == 2
    assert usd_places([10**12, 5 * 10**11]) == 4
    cols = [Column("name", "Name"), Column("cost", "Cost", "usd")]
    text = table_text([{"name": "a", "cost": 9_330_000_000_000},
                       {"name": "b", "cost": 526_600_000_000}], cols)
    assert "$9.3300" in text and "$0.5266" in text
    text = table_text([{"name": "a", "cost": 9_330_000_000_000},
                       {"name": "b", "cost": 1_500_000_000_000}], cols)
    assert "$9.33" in text and "$1.50" in text and "$9.3300" not in text


def test_whole_keep_and_drop():
    from ccmeter.render import Column

    long_id = "claude-sonnet-4-5-20250929-and-then-some"  # 40 characters
    cols = [Column("id", "Id", whole=True), Column("a", "Alpha", "int"),
            Column("b", "Beta", "int", keep=True), Column("c", "Gamma", "int", drop=1),
            Column("when", "When", "datetime", keep=True)]
    rows = [{"id": long_id, "a": 1, "b": 2, "c": 3, "when": 1_764_230_400}]
    text = table_text(rows, cols, width=72)
    assert long_id in text and "Beta" in text and "When" in text and "…" not in text
    assert "Gamma" not in text and "1 column hidden" in text  # dropped first
    assert all(len(line) <= 72 for line in text.splitlines())
    # other text gives way first, with an ellipsis
    cols.insert(1, Column("note", "Note"))
    rows[0]["note"] = "a long free-text note that may well be cut short"
    text = table_text(rows, cols, width=95)
    assert long_id in text and re.search(r"  a long free-te?…  ", text), text
    assert "2025-11-27" in text and all(len(line) <= 95 for line in text.splitlines())
