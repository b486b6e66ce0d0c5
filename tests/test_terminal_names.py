"""Names as a terminal shows them: one name for "no project" everywhere, and no control
characters or escape sequences from a tag header or a teammate's share file."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from ccmeter import config, store
from ccmeter.cli import app

runner = CliRunner()


def call(uid: str, project: str | None, *, ago: float = 60, **extra) -> dict:
    ts = time.time() - ago
    return {"call_uid": uid, "started_at": datetime.fromtimestamp(ts, UTC).isoformat(),
            "started_ts": ts, "status": "ok", "model": "claude-opus-4-8", "project": project,
            "session_id": f"sess-{uid}", "input_tokens": 10, "output_tokens": 5,
            "cost_picousd": 1_000_000, "updated_ts": ts} | extra


def fill(rows: list[dict]) -> None:
    db = store.connect(config.paths().db_file)
    store.upsert_calls(db, rows)
    db.conn.close()


def test_no_project_has_one_name_in_report_and_team_report(user_dirs, tmp_path: Path):
    fill([call("a", None), call("b", "web")])
    shown = runner.invoke(app, ["report", "--by", "project", "--since", "1d"])
    assert shown.exit_code == 0, shown.output
    assert "(no project)" in shown.output and "(none)" not in shown.output
    for args in (["sessions"], ["session", "sess-a"]):
        listed = runner.invoke(app, args)
        assert listed.exit_code == 0, listed.output
        assert "(no project)" in listed.output and "(none)" not in listed.output
    from ccmeter.commands.live import render_watch_frame

    db = store.connect(config.paths().db_file)
    try:
        assert "(no project)" in render_watch_frame(db, {})
    finally:
        db.conn.close()

    share_dir = tmp_path / "share"
    share_dir.mkdir()
    pushed = runner.invoke(app, ["push", "--to", str(share_dir), "--user", "ana"])
    assert pushed.exit_code == 0, pushed.output
    team = runner.invoke(app, ["team", "report", "--from", str(share_dir), "--by", "project"])
    assert team.exit_code == 0, team.output
    assert "(no project)" in team.output


EVIL_PROJECT = "\x1b[31mevil\x1b[0m\x1b]0;pwned\x07\x9b2J[/x]"
EVIL_MODEL = "claude-\x1b[5mopus\x1b[0m"
EVIL_SESSION = "sess-\x1b[2Jcafe"
RAW = ("\x1b", "\x9b", "\x07", "\x00")


def _no_raw(text: str) -> None:
    assert not any(c in text for c in RAW), repr(text)


def evil_rows() -> list[dict]:
    return [call("e1", EVIL_PROJECT, model=EVIL_MODEL, session_id=EVIL_SESSION,
                 agent_id="agent-\x1b[1mx", call_kind="subagent", ago=30),
            call("e2", EVIL_PROJECT, model=EVIL_MODEL, session_id=EVIL_SESSION, ago=20)]


def test_tables_show_names_without_escapes_or_markup(user_dirs):
    """A database written by an older ccmeter (or by hand) may hold raw escape sequences:
    report, sessions and session show the names as plain text."""
    fill(evil_rows())
    for args in (["report", "--by", "project", "--since", "1d"],
                 ["report", "--by", "model", "--by", "session", "--since", "1d"],
                 ["sessions", "--since", "1d"],
                 ["session", "sess-"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        _no_raw(result.output)
    shown = runner.invoke(app, ["session", "sess-"]).output
    assert "evil" in shown and "[/x]" in shown  # markup shown as text, not an error


def test_json_keeps_the_data_escaped_and_csv_carries_no_raw_controls(user_dirs):
    import json

    fill(evil_rows())
    result = runner.invoke(app, ["report", "--by", "project", "--since", "1d", "-f", "json"])
    assert result.exit_code == 0
    _no_raw(result.output)
    doc = json.loads(result.output)
    assert "evil" in doc["rows"][0]["project"]  # the data as stored, raw bytes as \u escapes
    result = runner.invoke(app, ["sessions", "--since", "1d", "-f", "csv"])
    assert result.exit_code == 0
    _no_raw(result.output)


def test_watch_frame_and_status_line_show_no_escapes(user_dirs):
    import json
    import subprocess
    import sys

    from ccmeter.commands.live import render_watch_frame

    fill(evil_rows())
    db = store.connect(config.paths().db_file)
    try:
        text = render_watch_frame(db, {})
    finally:
        db.conn.close()
    _no_raw(text)
    stdin = json.dumps({"session_id": EVIL_SESSION,
                        "model": {"id": EVIL_MODEL, "display_name": "Opus\x1b]0;x\x07 4.8"}})
    exe = str(Path(sys.executable).parent / "ccmeter")
    line = subprocess.run([exe, "statusline"], input=stdin, capture_output=True, text=True,
                          timeout=60).stdout
    assert "Opus 4.8" in line
    _no_raw(line)


def test_a_teammates_file_cannot_write_escapes_to_the_terminal(user_dirs, tmp_path: Path):
    import json

    share_dir = tmp_path / "share"
    folder = share_dir / "ccmeter/v1/month=2026-11/user=mal%1B%5B2Jlory"
    folder.mkdir(parents=True)
    row = {"schema_version": 1, "day": "2026-11-20", "project": EVIL_PROJECT,
           "model": EVIL_MODEL, "calls": 1, "input_tokens": 1, "cache_write_5m_tokens": 0,
           "cache_write_1h_tokens": 0, "cache_read_tokens": 0, "output_tokens": 1,
           "cost_usd": "0.000001000000", "cost_picousd": 1_000_000, "unpriced_calls": 0,
           "blocked_calls": 0, "cap_hits": 0}
    (folder / "part-0123456789abcdef.jsonl").write_text(json.dumps(row) + "\n")
    (folder / "part-\x1b[2J.jsonl").write_text("not json\n")  # named in a warning
    for by in (["--by", "user"], ["--by", "project", "--by", "model"]):
        result = runner.invoke(app, ["team", "report", "--from", str(share_dir), *by,
                                     "--since", "2026-11"])
        assert result.exit_code == 0, result.output
        _no_raw(result.stdout)
        _no_raw(result.stderr)
    assert "evil" in result.stdout


def test_push_dry_run_and_the_share_file_carry_no_raw_controls(user_dirs, tmp_path: Path):
    """`push --dry-run` prints the rows it would publish: C1 controls (U+009B is a CSI) were
    written raw by json.dumps(ensure_ascii=False); now escaped, the same JSON."""
    import json

    fill([call("c1", "web\x9b2J\x7f")])
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    dry = runner.invoke(app, ["push", "--to", str(share_dir), "--user", "ana", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    _no_raw(dry.stdout)
    assert "\x7f" not in dry.stdout
    assert json.loads(dry.stdout.splitlines()[0])["project"] == "web\x9b2J\x7f"
    assert runner.invoke(app, ["push", "--to", str(share_dir), "--user", "ana"]).exit_code == 0
    [part] = share_dir.rglob("part-*.jsonl")
    assert "\x9b" not in part.read_text()
    assert json.loads(part.read_text())["project"] == "web\x9b2J\x7f"  # the data is kept
