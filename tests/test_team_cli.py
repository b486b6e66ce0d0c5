"""`ccmeter push` and `ccmeter team report` end to end: real processes pushing at once into
one share, then the team report checked against each user's own rows."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import click
import pytest
import typer
from test_share import expected_totals, fill_home, make_rows
from typer.testing import CliRunner

from ccmeter import config
from ccmeter.cli import app

runner = CliRunner()


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CCMETER_USER"}
    return env | {"CCMETER_HOME": str(home), "NO_COLOR": "1"} | extra


def start_push(home: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ccmeter.cli", "push", *args],
        env=cli_env(home, **env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture
def team(tmp_path: Path) -> tuple[Path, dict[str, list[dict]]]:
    """Four users, one of them on two machines, pushed by concurrent `ccmeter push` processes."""
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    users = {name: make_rows(name, seed) for seed, name in enumerate(("ana", "ben", "cho"))}
    procs = []
    for name, rows in users.items():
        home = tmp_path / name
        fill_home(home, rows)
        procs.append(start_push(home, "--to", str(share_dir), "--user", name))
    dee = {m: make_rows(f"dee-{m}", 50 + i) for i, m in enumerate(("desk", "laptop"))}
    for machine, rows in dee.items():
        home = tmp_path / f"dee-{machine}"
        fill_home(home, rows)
        procs.append(start_push(home, "--to", str(share_dir), CCMETER_USER="dee"))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert (proc.returncode, out, err) == (0, "", "")  # quiet on success, for cron
    users["dee"] = dee["desk"] + dee["laptop"]
    return share_dir, users


def report(*args: str) -> click.testing.Result:
    return runner.invoke(app, ["team", "report", *args], catch_exceptions=False)


def test_team_report_json_totals_equal_each_users_own_rows(team):
    share_dir, users = team
    result = report("--from", str(share_dir), "--by", "user", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {r["user"]: r for r in doc["rows"]}
    assert set(rows) == set(users)
    for name, raw in users.items():
        want = expected_totals(raw)
        got = rows[name]
        assert got["cost_picousd"] == want["cost_picousd"]
        whole, frac = divmod(want["cost_picousd"], 10**12)
        assert got["cost_usd"] == f"{whole}.{frac:012d}"
        for key in ("calls", "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                    "cache_read_tokens", "output_tokens", "unpriced_calls", "blocked_calls",
                    "cap_hits"):
            assert got[key] == want[key], (name, key)
    everyone = [r for raw in users.values() for r in raw]
    assert doc["totals"]["cost_picousd"] == expected_totals(everyone)["cost_picousd"]
    assert doc["totals"]["calls"] == expected_totals(everyone)["calls"]
    assert doc["meta"]["files"] == 2 * 5 and doc["meta"]["skipped"] == []
    assert result.stderr == ""


def test_team_report_by_project_and_model_csv_and_table(team):
    share_dir, users = team
    everyone = [r for raw in users.values() for r in raw]
    result = report("--from", str(share_dir), "--by", "project", "--by", "model",
                    "--format", "csv")
    assert result.exit_code == 0
    lines = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(lines[0])[:3] == ["project", "model", "users"]

    def key(project, model):
        return (project or None, model)

    for line in lines:
        mine = [r for r in everyone
                if key((r["project"] or "").rsplit("/", 1)[-1], r["model"] or
                       r["requested_model"]) == key(line["project"], line["model"])]
        want = expected_totals(mine)
        assert int(line["calls"]) == want["calls"]
        if want["calls"] and want["unpriced_calls"] == want["calls"]:
            assert line["cost_usd"] == "" and line["cost_picousd"] == ""
        else:
            assert int(line["cost_picousd"]) == want["cost_picousd"]
    assert sum(int(line["blocked_calls"]) for line in lines) == sum(
        r["status"] == "blocked" for r in everyone)

    table = report("--from", str(share_dir), "--by", "project", "--by", "model")
    assert table.exit_code == 0
    assert "Team spend by project x model" in table.stdout
    assert "unpriced" in table.stdout and "total" in table.stdout


def test_team_report_since_until_by_day(team):
    share_dir, users = team
    result = report("--from", str(share_dir), "--by", "day", "--since", "2026-11-01",
                    "--until", "2026-11-07", "--format", "json")
    doc = json.loads(result.stdout)
    assert [r["day"] for r in doc["rows"]] == sorted(r["day"] for r in doc["rows"])
    assert all("2026-11-01" <= r["day"] <= "2026-11-07" for r in doc["rows"])
    from datetime import datetime
    inside = [r for raw in users.values() for r in raw
              if "2026-11-01" <= datetime.fromtimestamp(r["started_ts"]).date().isoformat()
              <= "2026-11-07"]
    assert doc["totals"]["cost_picousd"] == expected_totals(inside)["cost_picousd"]
    assert doc["meta"]["since"] == "2026-11-01" and doc["meta"]["until"] == "2026-11-07"


def test_bad_files_are_named_on_stderr_and_the_report_still_comes_out(team):
    share_dir, users = team
    broken = share_dir / "ccmeter/v1/month=2026-11/user=zoe/part-feedfeedfeedfeed.jsonl"
    broken.parent.mkdir()
    broken.write_text('{"schema_version":1,"day":"2026-11-0')
    result = report("--from", str(share_dir), "--format", "json")
    assert result.exit_code == 0
    assert result.stderr.count(str(broken)) == 1 and "warning" in result.stderr
    doc = json.loads(result.stdout)
    assert {r["user"] for r in doc["rows"]} == set(users)
    assert doc["meta"]["skipped"][0]["file"] == str(broken)


def test_push_twice_from_the_cli_changes_nothing_and_verbose_says_so(tmp_path, user_dirs,
                                                                      monkeypatch):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    fill_home(user_dirs.data_dir, make_rows("ana", 1))
    config.save_config({"share": {"path": str(share_dir), "user": "ana"}})
    first = runner.invoke(app, ["push"], catch_exceptions=False)
    assert (first.exit_code, first.output) == (0, "")
    files = {p: p.read_bytes() for p in share_dir.rglob("*.jsonl")}
    second = runner.invoke(app, ["push", "-v"], catch_exceptions=False)
    assert second.exit_code == 0
    assert "0 files written, 2 unchanged" in second.stdout
    assert {p: p.read_bytes() for p in share_dir.rglob("*.jsonl")} == files
    from_config = report("--format", "json")  # [share] path serves the report too
    assert [r["user"] for r in json.loads(from_config.stdout)["rows"]] == ["ana"]


def test_dry_run_prints_rows_and_writes_nothing(tmp_path, user_dirs):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    fill_home(user_dirs.data_dir, make_rows("ana", 2))
    result = runner.invoke(app, ["push", "--to", str(share_dir), "--user", "ana",
                                 "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows and all(r["schema_version"] == 1 for r in rows)
    assert "month=2026-10/user=ana" in result.stderr
    assert list(share_dir.iterdir()) == []


def test_push_failure_is_one_line_and_non_zero_without_a_tty(tmp_path):
    home = tmp_path / "home"
    fill_home(home, make_rows("ana", 3))
    proc = start_push(home, "--to", str(tmp_path / "unmounted"), "--user", "ana")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "does not exist" in err
    (home / "config.toml").write_text('[share]\npath = "/x"\nsalt = "s"\n')
    proc = start_push(home, "--anonymize", "--user", "ana")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and len(err.strip().splitlines()) == 1


def test_push_with_no_database_yet_is_a_quiet_no_op(tmp_path):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    result = runner.invoke(app, ["push", "--to", str(share_dir)], catch_exceptions=False)
    assert (result.exit_code, result.output) == (0, "")
    assert not config.paths().db_file.exists()


def test_user_errors_in_team_report(tmp_path):
    with pytest.raises(config.CCMeterError, match="no share folder"):
        report()
    with pytest.raises(config.CCMeterError, match="does not exist"):
        report("--from", str(tmp_path / "nope"))
    with pytest.raises(config.CCMeterError, match="one or two"):
        report("--from", str(tmp_path), "--by", "user", "--by", "day", "--by", "model")
    with pytest.raises(config.CCMeterError, match="format"):
        report("--from", str(tmp_path), "--format", "xml")
    with pytest.raises(config.CCMeterError, match="after"):
        report("--from", str(tmp_path), "--since", "2026-11-10", "--until", "2026-11-01")


def test_every_share_command_and_option_has_help():
    command = typer.main.get_command(app)
    ctx = click.Context(command)
    for path in (["push"], ["team"], ["team", "report"]):
        cmd = command
        for name in path:
            cmd = cmd.get_command(ctx, name)
        assert cmd.help, path
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help, (path, param.name)
    assert "Example" in command.get_command(ctx, "push").help
    assert "Example" in command.get_command(ctx, "team").get_command(ctx, "report").help


def test_pushing_under_a_new_name_withdraws_the_old_copy_and_says_so(tmp_path):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    home = tmp_path / "home"
    rows = make_rows("ana", 31)
    fill_home(home, rows)
    first = start_push(home, "--to", str(share_dir), "--user", "alice")
    assert first.communicate(timeout=60) == ("", "") and first.returncode == 0
    refused = start_push(home, "--to", str(share_dir), "-v", CCMETER_USER="bob")
    out, err = refused.communicate(timeout=60)
    assert refused.returncode != 0 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and "ccmeter push --rename-to bob" in err
    assert len(list(share_dir.rglob("user=alice/*.jsonl"))) == 2  # untouched
    renamed = start_push(home, "--to", str(share_dir), "-v", "--rename-to", "bob")
    out, err = renamed.communicate(timeout=60)
    assert (renamed.returncode, err) == (0, "")
    lines = out.splitlines()
    assert "removed alice's copy from this machine: renamed to bob" in lines
    assert sum(line.startswith("  removed ") and "user=alice" in line for line in lines) == 2
    assert not list(share_dir.rglob("user=alice/*.jsonl"))
    doc = json.loads(report("--from", str(share_dir), "--format", "json").stdout)
    assert [r["user"] for r in doc["rows"]] == ["bob"]
    want = expected_totals(rows)
    assert {k: doc["totals"][k] for k in ("calls", "blocked_calls", "unpriced_calls")} == {
        k: want[k] for k in ("calls", "blocked_calls", "unpriced_calls")}
    assert doc["totals"]["cost_picousd"] == want["cost_picousd"]


def test_dry_run_names_the_copies_a_new_name_would_withdraw(tmp_path, user_dirs):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    fill_home(user_dirs.data_dir, make_rows("ana", 32))
    runner.invoke(app, ["push", "--to", str(share_dir), "--user", "alice"],
                  catch_exceptions=False)
    result = runner.invoke(app, ["push", "--to", str(share_dir), "--rename-to", "bob",
                                 "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stderr.count("# would remove ") == 2
    assert "alice's copy from this machine: renamed to bob" in result.stderr
    assert len(list(share_dir.rglob("user=alice/*.jsonl"))) == 2


def test_verbose_push_counts_in_the_singular_and_plural(tmp_path, user_dirs):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    fill_home(user_dirs.data_dir, make_rows("ana", 33, days=5,
                                                          first=date(2026, 11, 3)))
    args = ["push", "--to", str(share_dir), "--user", "ana", "-v"]
    first = runner.invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0
    assert ": 1 file written, 0 unchanged" in first.stdout
    assert "1 files" not in first.stdout
    second = runner.invoke(app, args, catch_exceptions=False)
    assert ": 0 files written, 1 unchanged" in second.stdout


def _cron_env(home: Path) -> dict[str, str]:
    """What cron gives a job: HOME, a bare PATH (plus where ccmeter is installed), no
    CCMETER_USER, no CCMETER_HOME, no XDG_*, no terminal."""
    venv_bin = str(Path(sys.executable).parent)
    return {"HOME": str(home), "PATH": f"/usr/bin:/bin:{venv_bin}"}


def _ccmeter(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "ccmeter"
    return subprocess.run([str(exe), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_the_docs_cron_line_pushes_under_the_name_the_user_published(tmp_path):
    """Issue: cron has no CCMETER_USER, so a push resolved login@host and moved alice's
    published files to it, deleting hers. The cron line of docs/team-share.md must work."""
    home = tmp_path / "home"
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    env = _cron_env(home)
    data_dir = Path(subprocess.run(
        [sys.executable, "-c", "from ccmeter import config; print(config.paths().data_dir)"],
        env=env, capture_output=True, text=True, check=True).stdout.strip())
    rows = make_rows("alice", 61)
    fill_home(data_dir, rows)
    first = _ccmeter("push", "--to", str(share_dir), env=env | {"CCMETER_USER": "alice"})
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    alice = sorted(share_dir.rglob("part-*.jsonl"))
    assert [p.parent.name for p in alice] == ["user=alice", "user=alice"]

    fill_home(data_dir, make_rows("alice", 62))  # more calls since the last push
    cron = _ccmeter("push", "--to", str(share_dir), env=env)  # the documented cron line
    assert (cron.returncode, cron.stdout, cron.stderr) == (0, "", "")
    assert sorted(share_dir.rglob("part-*.jsonl")) == alice  # same files, same name
    assert not list(share_dir.rglob("user=*@*"))

    other = _ccmeter("push", "--to", str(share_dir), "--user", "root@host", env=env)
    assert other.returncode != 0 and other.stdout == ""
    assert other.stderr.count("\n") == 1 and "Traceback" not in other.stderr
    assert "--rename-to root@host" in other.stderr
    assert sorted(share_dir.rglob("part-*.jsonl")) == alice


def test_rename_to_and_user_disagreeing_is_a_user_error(tmp_path, user_dirs):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    fill_home(user_dirs.data_dir, make_rows("ana", 63))
    result = runner.invoke(app, ["push", "--to", str(share_dir), "--user", "a",
                                 "--rename-to", "b"])
    assert result.exit_code != 0
    assert "not both" in str(result.exception)
    assert not list(share_dir.rglob("*.jsonl"))
