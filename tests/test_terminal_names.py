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

    share_dir = tmp_path / "share"
    share_dir.mkdir()
    pushed = runner.invoke(app, ["push", "--to", str(share_dir), "--user", "ana"])
    assert pushed.exit_code == 0, pushed.output
    team = runner.invoke(app, ["team", "report", "--from", str(share_dir), "--by", "project"])
    assert team.exit_code == 0, team.output
    assert "(no project)" in team.output
