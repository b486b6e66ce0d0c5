"""Every CLI error is one line on stderr, no traceback, a non-zero exit: a sweep of bad input
for every command and option, run through the installed ``ccmeter`` in a user's layout
(HOME only, the platform folders), as a user's shell runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ccmeter import config, store

EXE = Path(sys.executable).parent / "ccmeter"

NOT_UTF8_CONFIG = b'[caps]\ndaily = "\xff\xfe"\n'
BAD_TOML = b"[caps\n"
BAD_VALUES = (b'port = "x"\n[caps]\ndaily = "abc"\n[share]\npath = 5\n'
              b'[prices]\ndiscount_percent = "x"\n')
WRONG_TABLES = b'share = 5\ncaps = 3\nprices = "x"\n'

#: (config.toml bytes or None, argv). ``@FILE`` is a plain file, ``@NOTJSON`` a file of bytes
#: that are neither UTF-8 nor JSON; bytes arguments are passed to the process as they are.
CASES: list[tuple[bytes | None, list[str | bytes]]] = [
    # durations, moments and groupings
    (None, ["report", "--since", "7x"]),
    (None, ["report", "--since", "9999999999999999999d"]),  # was an OverflowError traceback
    (None, ["report", "--until", "3 months"]),
    (None, ["report", "--since", "2026-12-01", "--until", "2026-11-01"]),
    (None, ["report", "--since", ""]),
    (None, ["report", "--since", "2026-13-45"]),
    (None, ["report", "--until", "9999-12-31"]),
    (None, ["report", "--by", "colour"]),
    (None, ["report", "--by", "day", "--by", "week"]),
    (None, ["report", "--by", "a", "--by", "b", "--by", "c"]),
    (None, ["report", "--format", "xml"]),
    (None, ["report", "--nope"]),
    (None, ["report", "--as-model", "gpt-5"]),
    (None, ["report", "--since", "7d", "--cache-ttl", "2h"]),
    (None, ["report", "--vs-plan", "max-5x"]),
    (b'[prices.plans.pro]\nmonthly_usd = "lots"\n', ["report", "--vs-plan", "pro"]),
    (None, ["report", "--since"]),
    (None, ["sessions", "--limit", "abc"]),
    (None, ["sessions", "--since", "30q"]),
    (None, ["sessions", "--format", "yaml"]),
    (None, ["session", ""]),
    (None, ["session", "nope"]),
    (None, ["session", "sess", "--format", "x"]),
    (None, ["session"]),
    (None, ["watch", "--once", "--interval", "abc"]),
    (None, ["watch", "--once", "--active", "abc"]),
    (None, ["watch", "--once", "--active", "-5"]),
    (None, ["watch", "--interval", "0"]),
    (None, ["reprice"]),
    (None, ["reprice", "--since", "7x"]),
    (None, ["reprice", "--all", "--format", "xml"]),
    (None, ["reprice", "--all", "--until", "9999999999999999999d"]),
    # arguments that are not UTF-8 (a shell passes bytes)
    (None, ["report", "--since", b"\xff"]),
    (None, ["report", "--project", b"\xff\xfe"]),
    (None, ["sessions", "--model", b"\xff"]),
    (None, ["session", b"\xff"]),
    (None, ["caps", "set", "--project", b"\xff", "--daily", "1"]),
    (None, ["push", "--to", b"/tmp/\xff"]),
    # caps
    (None, ["caps", "set", "--daily", "abc"]),
    (None, ["caps", "set", "--daily", "-5"]),
    (None, ["caps", "set", "--daily", "1e400"]),
    (None, ["caps", "set", "--daily", "nan"]),
    (None, ["caps", "set", "--daily", "0.0000000000001"]),
    (None, ["caps", "set", "--mode", "harsh"]),
    (None, ["caps", "set", "--window", "weird"]),
    (None, ["caps", "set", "--warn-at", "2"]),
    (None, ["caps", "set", "--timezone", "Mars/Base"]),
    (None, ["caps", "set", "--total", "3"]),
    (None, ["caps", "set", "--estimate", "x"]),
    (None, ["caps", "set"]),
    (None, ["caps", "unset", "yearly"]),
    (None, ["caps", "mode", "medium"]),
    (None, ["caps", "pause", "--for", "99999999d"]),  # was an OverflowError traceback
    (None, ["caps", "pause", "--for", "3x"]),
    (None, ["caps", "pause", "--for", "0m"]),
    (None, ["caps", "--format", "xml"]),
    (None, ["caps", "--session", "nope"]),
    # the team share
    (None, ["push"]),
    (None, ["push", "--to", "/nonexistent/share"]),
    (None, ["push", "--to", "@FILE"]),
    (None, ["push", "--to", "@SHARE", "--since", "7x"]),
    (None, ["push", "--to", "@SHARE", "--user", "a\nb"]),
    (None, ["push", "--to", "@SHARE", "--rename-to", "."]),
    (None, ["push", "--to", "@SHARE", "--user", "a", "--rename-to", "b"]),
    (None, ["push", "--to", "@SHARE", "--anonymize"]),
    (None, ["team", "report"]),
    (None, ["team", "report", "--from", "/nonexistent"]),
    (None, ["team", "report", "--from", "@SHARE", "--by", "colour"]),
    (None, ["team", "report", "--from", "@SHARE", "--since", "7x"]),
    (None, ["team", "report", "--from", "@SHARE", "--until", "2026-13"]),
    (None, ["team", "report", "--from", "@SHARE", "--format", "xml"]),
    # prices
    (None, ["prices", "import", "/nonexistent.json"]),
    (None, ["prices", "import", "@FILE"]),
    (None, ["prices", "import", "@NOTJSON"]),
    (None, ["prices", "--format", "xml"]),
    # the proxy's options (all refused before anything listens)
    (None, ["serve", "--port", "0"]),
    (None, ["serve", "--port", "99999"]),
    (None, ["serve", "--port", "abc"]),
    (None, ["serve", "--upstream", "notaurl"]),
    (None, ["serve", "--upstream", "ftp://x"]),
    (None, ["env", "--port", "abc"]),
    (None, ["env", "--port", "70000"]),
    (None, ["run", "--upstream", "notaurl", "--", "true"]),
    (None, ["run", "--", "/nonexistent/cmd"]),
    (None, ["nosuchcommand"]),
    (None, ["--nosuchoption"]),
    # a config.toml that is not UTF-8 (4 commands printed tracebacks), not TOML, or wrong
    *((NOT_UTF8_CONFIG, argv) for argv in (
        ["report"], ["caps"], ["caps", "set", "--daily", "5"], ["caps", "pause", "--for", "5m"],
        ["push", "--to", "@SHARE"], ["team", "report"], ["prices"], ["env"],
        ["reprice", "--all"])),
    *((BAD_TOML, argv) for argv in (
        ["report"], ["caps"], ["prices"], ["env"], ["push", "--to", "@SHARE"])),
    *((BAD_VALUES, argv) for argv in (
        ["report"], ["caps"], ["prices"], ["env"], ["push"], ["team", "report"],
        ["reprice", "--all"], ["serve"])),
    *((WRONG_TABLES, argv) for argv in (
        ["push", "--to", "@SHARE"], ["caps"], ["prices"], ["report"])),
]


def _case_id(case: tuple[bytes | None, list[str | bytes]]) -> str:
    cfg, argv = case
    label = {None: "", NOT_UTF8_CONFIG: "[not-utf8 config] ", BAD_TOML: "[bad toml] ",
             BAD_VALUES: "[bad values] ", WRONG_TABLES: "[wrong tables] "}[cfg]
    return label + " ".join(a if isinstance(a, str) else repr(a) for a in argv)


def _seed(home: Path) -> None:
    """A database with one call, in the platform data folder of ``home``."""
    paths = config.paths()
    assert str(paths.data_dir).startswith(str(home))
    db = store.connect(paths.db_file)
    now = time.time() - 60
    store.upsert_calls(db, [{"call_uid": "a", "started_at": "x", "started_ts": now,
                             "status": "ok", "model": "claude-opus-4-8", "project": "web",
                             "session_id": "sess-1", "input_tokens": 1, "output_tokens": 1,
                             "cost_picousd": 5, "updated_ts": now}])
    db.conn.close()


def _run(home: Path, tmp: Path, case: tuple[bytes | None, list[str | bytes]]) -> str | None:
    """None when the case behaves; else what went wrong."""
    cfg, argv = case
    config_file = home / ".config" / "ccmeter" / "config.toml"
    files = {"@FILE": tmp / "plain.txt", "@NOTJSON": tmp / "not.json", "@SHARE": tmp / "share"}
    args = [str(files[a]) if isinstance(a, str) and a in files else a for a in argv]
    if cfg is not None:  # one home per config; the seeded database is shared read-mostly
        home = tmp / f"home-{abs(hash(cfg))}"
        config_file = home / ".config" / "ccmeter" / "config.toml"
    env = {"HOME": str(home), "PATH": f"/usr/bin:/bin:{EXE.parent}", "COLUMNS": "80"}
    result = subprocess.run([str(EXE), *args], env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=60)
    out = result.stdout.decode("utf-8", "replace")
    err = result.stderr.decode("utf-8", "replace")
    problems = []
    if result.returncode == 0:
        problems.append("exit 0")
    if "Traceback" in out + err:
        problems.append("a traceback")
    if len(err.strip().splitlines()) != 1:
        problems.append(f"{len(err.strip().splitlines())} lines on stderr")
    if not err.startswith("ccmeter: "):
        problems.append("stderr does not start with 'ccmeter: '")
    del config_file
    return None if not problems else f"{_case_id(case)}: {', '.join(problems)}: {err[:300]!r}"


def test_every_bad_input_is_one_line_no_traceback_non_zero(user_home, user_dirs, tmp_path):
    _seed(user_home)
    (tmp_path / "plain.txt").write_text("x\n")
    (tmp_path / "not.json").write_bytes(b"\xff\xfe{")
    (tmp_path / "share").mkdir()
    for cfg in {c for c, _ in CASES if c is not None}:
        home = tmp_path / f"home-{abs(hash(cfg))}"
        (home / ".config" / "ccmeter").mkdir(parents=True)
        (home / ".config" / "ccmeter" / "config.toml").write_bytes(cfg)
        data = home / ".local" / "share" / "ccmeter"
        data.mkdir(parents=True)
        (data / "ccmeter.db").write_bytes(user_dirs.db_file.read_bytes())
    with ThreadPoolExecutor(4) as pool:
        failures = [f for f in pool.map(lambda c: _run(user_home, tmp_path, c), CASES) if f]
    assert failures == [], "\n".join(failures)
    assert len(CASES) > 100


@pytest.mark.parametrize("argv", [["report"], ["caps"], ["push", "--to", "."], ["prices"]])
def test_a_config_that_is_not_utf8_is_named_in_one_line(user_dirs, argv):
    """In-process too (CliRunner): the error is ccmeter's, naming the file and the byte."""
    from typer.testing import CliRunner

    from ccmeter.cli import app

    user_dirs.config_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_bytes(NOT_UTF8_CONFIG)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code != 0
    if isinstance(result.exception, config.CCMeterError):  # cli.main prints it
        message = str(result.exception)
    else:  # the command printed it (caps)
        assert result.stdout == ""
        message = result.stderr.strip()
    assert "\n" not in message
    assert str(user_dirs.config_file) in message and "not UTF-8" in message and "0xff" in message
