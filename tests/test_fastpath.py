"""The console script's fast path answers exactly as the full Typer CLI does.

``ccmeter.entry`` runs ``report``, ``sessions``, ``caps`` and ``watch --once`` through
:mod:`ccmeter.fastpath` without building the Typer app; these tests hold it to the CLI: the
same options, and byte for byte the same output, errors and exit codes, run as real
processes against a real database in the user's layout.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from ccmeter import fastpath, store
from ccmeter.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _click_command(name: str):
    group = typer.main.get_command(app)
    return group.commands[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(fastpath.OPTIONS))
def test_options_are_the_typer_commands_options(name):
    command = _click_command(name)
    declared = {}
    defaults = {}
    for param in command.params:
        if param.param_type_name != "option" or param.name == "help":
            continue
        kind = ("flag" if param.is_flag else "list" if param.multiple else
                "count" if isinstance(param.default, int) else
                "seconds" if isinstance(param.default, float) else "str")
        least = getattr(param, "min", None)  # typer >= 0.2x keeps it; click on its type
        least = getattr(getattr(param, "type", None), "min", None) if least is None else least
        assert least == {"count": 0, "seconds": 0.2}.get(kind), (param.name, least)
        for opt in (*param.opts, *param.secondary_opts):
            declared[opt] = (param.name, kind)
        defaults[param.name] = param.default
    assert fastpath.OPTIONS[name] == declared
    expected = dict(fastpath.DEFAULTS[name])
    if expected.get("by", "") is None:
        expected["by"] = defaults["by"]  # click keeps "no --by" as None or ()
    assert defaults == expected


def test_only_plain_command_lines_take_the_fast_path():
    assert fastpath.parse(["report", "--by", "model", "-b", "day", "--since=30d"]) == (
        "report", {"by": ["model", "day"], "since": "30d", "until": None, "project": None,
                   "model": None, "fmt": "table", "source": "all", "as_model": None,
                   "cache_ttl": None, "vs_plan": None})
    assert fastpath.parse(["report", "--source", "wire"])[1]["source"] == "wire"
    what_if = fastpath.parse(["report", "--as-model", "claude-sonnet-5", "--cache-ttl=5m"])
    assert what_if is not None
    assert (what_if[1]["as_model"], what_if[1]["cache_ttl"]) == ("claude-sonnet-5", "5m")
    assert fastpath.parse(["sessions", "-n", "5", "-n", "7"])[1]["limit"] == 7  # last wins
    for args in (["report", "--help"], ["report", "-h"], ["report", "--by"],
                 ["report", "--bogus"], ["report", "extra"], ["report", "-s30d"],
                 ["report", "--project", "-x"], ["sessions", "--limit", "-1"],
                 ["sessions", "--limit", "x"], ["caps", "set", "--daily", "5"],
                 ["watch", "--once", "--interval", "0.1"], ["watch", "--once=1"],
                 ["report", "--project", "caf\udcc3"], ["statusline"], []):
        assert fastpath.parse(args) is None, args


def _run(entry: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    code = f"import sys; sys.argv[0] = 'ccmeter'; from {entry} import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120, errors="surrogateescape")


def _steady(text: str) -> str:
    """Output without the clock: generated_at and watch's header second."""
    text = re.sub(r'"generated_at": "[^"]*"', '"generated_at": …', text)
    return re.sub(r"ccmeter watch · \S+ \S+", "ccmeter watch · …", text)


CASES = [
    ["report"], ["report", "--format", "json"], ["report", "-f", "csv"],
    ["report", "--by", "model", "--by", "day", "--since", "14d"],
    ["report", "--by", "session", "--project", "api-server"],
    ["report", "--by", "nonsense"], ["report", "--since", "tomorrow-ish"],
    ["report", "--since", "2d", "--until", "3d"], ["report", "--format", "yaml"],
    ["report", "--by", "day", "--source", "wire"], ["report", "--source", "transcript"],
    ["report", "--source", "nowhere"], ["sessions", "--source", "wire", "-f", "json"],
    ["report", "--since", "30d", "--as-model", "claude-sonnet-4-5", "--by", "model"],
    ["report", "--cache-ttl", "5m", "-f", "json"], ["report", "--as-model", "nope"],
    ["report", "--since", "7d", "--cache-ttl", "1h", "--as-model", "claude-haiku-5-5"],
    ["report", "--since", "7d", "--vs-plan", "max-5x"],
    ["sessions"], ["sessions", "-n", "3", "--format", "json"], ["sessions", "--since", "1d"],
    ["caps"], ["caps", "--format", "csv"], ["caps", "--session", "nope"],
    ["caps", "--format", "xml"],
    ["watch", "--once"], ["watch", "--once", "--active", "2h"],
    ["watch", "--once", "--active", "soon"],
]


def test_the_fast_path_prints_what_the_cli_prints(user_dirs):
    from tests.realistic_db import fill_realistic

    fill_realistic()
    user_dirs.config_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text('[caps]\ndaily = "5"\nweekly = "40"\n\n'
                                     '[caps.projects.web]\ndaily = "1"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    for args in CASES:
        fast, full = _both(args, env)
        assert fast.returncode == full.returncode, (args, fast.stderr, full.stderr)
        assert _steady(fast.stdout) == _steady(full.stdout), args
        assert fast.stderr == full.stderr, args
        assert "Traceback" not in fast.stderr


def _both(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess,
                                                          subprocess.CompletedProcess]:
    """Both runs of ``args``. The output holds the clock ("since 05:51", "3m ago"): a pair
    that straddles such a change runs again (it cannot straddle one every time)."""
    for _ in range(4):
        fast, full = _run("ccmeter.entry", args, env), _run("ccmeter.cli", args, env)
        if (fast.returncode, _steady(fast.stdout), fast.stderr) == (
                full.returncode, _steady(full.stdout), full.stderr):
            break
    return fast, full


def test_an_empty_home_gets_the_same_first_steps(user_dirs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["report"], ["sessions"], ["caps"], ["watch", "--once"]):
        fast, full = _both(args, env)
        assert (fast.returncode, _steady(fast.stdout), fast.stderr) == (
            full.returncode, _steady(full.stdout), full.stderr), args


def test_a_migrated_database_opens_without_sqlite_utils(tmp_path):
    path = tmp_path / "ccmeter.db"
    store.connect(path).conn.close()
    db = store.connect_migrated(path)
    assert isinstance(db, store.MigratedDatabase)
    assert db.execute("SELECT COUNT(*) FROM api_calls").fetchone() == (0,)
    assert "api_calls" in db.table_names()  # anything else: sqlite-utils, built on demand
    assert db["api_calls"].count == 0
    db.conn.close()
    code = ("import sys; from ccmeter import store; db = store.connect_migrated(sys.argv[1]); "
            "db.execute('SELECT 1'); print('sqlite_utils' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert shown.stdout.strip() == "False"


#: What the reading commands must not import off a terminal: the CLI framework, rich, the
#: proxy, sqlite-utils, and ``dataclasses`` (~6 ms with the ``inspect`` it imports, then
#: ~0.35 ms for each class it builds): the modules these commands import define their
#: records as :class:`ccmeter.record.Record` (or a plain class with ``__slots__`` where one
#: changes). Nor what only other commands use: the desktop notification's ``shutil``, the
#: proxy's threads.
NOT_FOR_READING = ("typer", "click", "rich", "mitmproxy", "sqlite_utils", "dataclasses",
                   "inspect", "shutil", "threading")
#: ... and a table that prices nothing reads no catalog and writes no JSON
NOT_FOR_TABLES = (*NOT_FOR_READING, "json", "ccmeter.pricing")


def test_the_reading_commands_import_only_what_they_use(user_dirs):
    from tests.realistic_db import fill_realistic

    fill_realistic()
    user_dirs.config_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text('[caps]\ndaily = "5"\n\n[caps.projects.web]\ndaily = "1"\n',
                                     encoding="utf-8")
    for args in (*READING, ["report", "--by", "session", "--since", "30d"]):
        unwanted = NOT_FOR_READING if args[0] == "report" else NOT_FOR_TABLES
        code = ("import atexit, sys; atexit.register(lambda: print(*sorted(m for m in "
                f"{unwanted!r} if m in sys.modules), file=sys.stderr)); "
                "sys.argv[0] = 'ccmeter'; from ccmeter.entry import main; main()")
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr.strip() == "", (args, done.stderr)


def test_an_older_database_is_migrated_as_before(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    db = store.connect_migrated(path)  # not WAL, schema 0: the full connect migrates it
    assert not isinstance(db, store.MigratedDatabase)
    assert store.schema_version(db) == len(store.MIGRATIONS)
    db.conn.close()
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        store.connect_migrated(tmp_path / "junk.db")


def _call(uid: str, ts: float, *, session: str | None, project: str | None,
          model: str = "claude-opus-4-8", cost: int = 10**12) -> dict:
    from datetime import UTC, datetime

    return {
        "call_uid": uid, "started_ts": ts,
        "started_at": datetime.fromtimestamp(ts, UTC).isoformat(),
        "session_id": session, "project": project, "model": model, "requested_model": model,
        "status": "ok", "call_kind": "main", "input_tokens": 10, "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0, "cache_read_tokens": 0, "output_tokens": 5,
        "cost_picousd": cost, "updated_ts": ts,
    }


def _fill_calls(paths, rows: list[dict]) -> None:
    db = store.connect(paths.db_file)
    try:
        store.upsert_calls(db, rows)
    finally:
        db.conn.close()


def _assert_same(cases: list[list[str]], env: dict[str, str]) -> dict[str, tuple]:
    """Each command line through both paths: the same exit code, stdout and stderr."""
    seen = {}
    for args in cases:
        fast, full = _both(args, env)
        assert (fast.returncode, _steady(fast.stdout), fast.stderr) == (
            full.returncode, _steady(full.stdout), full.stderr), args
        assert "Traceback" not in fast.stderr, args
        seen[" ".join(args)] = (fast.returncode, fast.stdout, fast.stderr)
    return seen


READING = [["report"], ["sessions"], ["caps"], ["watch", "--once"]]


def test_unknown_config_keys_are_warned_on_the_fast_path_too(user_dirs):
    import time

    _fill_calls(user_dirs, [_call("k1", time.time() - 60, session="s-k", project="web")])
    user_dirs.config_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text('prot = 8080\n[share]\nusr = "me"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    seen = _assert_same([*READING, ["report", "--format", "json"]], env)
    for args, (rc, _out, err) in seen.items():
        assert rc == 0
        if args == "sessions":
            assert err == ""  # it does not read the config
            continue
        assert err.startswith("ccmeter: warning: ") and "prot (did you mean port?)" in err, err
        assert len(err.splitlines()) == 1, err  # once per command, however often it is read


def test_a_caps_typo_is_refused_on_the_fast_path_too(user_dirs):
    import time

    _fill_calls(user_dirs, [_call("t1", time.time() - 60, session="s-t", project="web")])
    user_dirs.config_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text('[caps]\ndialy = "5"\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    seen = _assert_same([*READING, ["caps", "--format", "json"]], env)
    rc, _out, err = seen["caps"]
    assert rc != 0 and "unknown key in [caps]: caps.dialy (did you mean daily?)" in err, err
    assert "caps.dialy" in seen["watch --once"][1] + seen["watch --once"][2]


def test_a_corrupt_database_is_the_same_message_on_both_paths(user_dirs):
    user_dirs.db_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.db_file.write_bytes(b"this is not sqlite at all " * 100)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seen = _assert_same([*READING, ["sessions", "--format", "json"]], env)
    for rc, out, err in seen.values():
        assert rc == 2 and not out
        assert err.startswith(f"ccmeter: cannot open {user_dirs.db_file}: "), err


def test_a_row_mixing_projects_reads_the_same_on_both_paths(user_dirs):
    import time

    now = time.time() - 60
    _fill_calls(user_dirs, [
        _call("m1", now, session=None, project="alpha"),
        _call("m2", now + 1, session=None, project="mitmrev",
              model="claude-haiku-4-5-20251001", cost=10**11),
        _call("m3", now + 2, session="s-1", project="web"),
        _call("m4", now + 3, session="s-1", project="web", model="claude-haiku-4-5-20251001")])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    by_session = ["report", "--by", "session", "--since", "1d"]
    seen = _assert_same([["sessions"], ["sessions", "-f", "json"], ["sessions", "-f", "csv"],
                         by_session, [*by_session, "-f", "json"], [*by_session, "-f", "csv"]],
                        env)
    for args in ("sessions", " ".join(by_session)):
        line = next(x for x in seen[args][1].splitlines() if x.startswith("(no session)"))
        assert "(several)" in line, seen[args][1]
    assert '"projects": 2' in seen["sessions -f json"][1]


@pytest.mark.parametrize("width", ["60", "80", "120"])
def test_a_reached_cap_in_watch_once_reads_the_same_on_both_paths(user_dirs, width):
    import time

    _fill_calls(user_dirs, [_call("w1", time.time() - 30, session="s-w", project="web",
                                  cost=2 * 10**12)])
    user_dirs.config_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text('[caps]\ndaily = "1"\nweekly = "1.50"\n',
                                     encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": width}
    seen = _assert_same([["watch", "--once"], ["caps"]], env)
    frame = seen["watch --once"][1]
    daily, weekly = (x for x in frame.splitlines() if "⛔" in x)
    assert "daily" in daily and "$2.00" in daily and "$1.00" in daily, frame
    assert "$1.50" in weekly, frame  # the cap's own decimals
    if width != "60":  # ⛔ is two cells: measured as one, 'weekly cap' was cut
        assert "weekly cap" in weekly and "…" not in weekly, frame
