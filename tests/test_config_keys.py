"""A config ccmeter cannot fully understand is said out loud, never silently half-applied.

A typo in ``[caps]`` (``dialy``) once removed the cap without a word: ``caps`` said "No
spending caps set.", ``doctor`` "all good", and calls passed. A bad ``[prices]`` stopped
``report`` but let ``run`` store list prices. These tests run the CLI as a process with HOME
only (the user's layout), as a new user meets it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mitm import free_port, wait_for_port
from standin import StandIn
from test_user_layout import CALL_COST, CLIENT, _proxy_env, cli, priced_replies, rows

from ccmeter import config, pricing
from ccmeter.caps import windows


def write_config(user_dirs: config.Paths, text: str) -> None:
    user_dirs.config_dir.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text(text, encoding="utf-8")


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ccmeter: warning:")]


# --- the one list of keys ----------------------------------------------------------------


def test_the_schema_knows_what_the_code_reads():
    """The valid keys are listed once, in config.py: they must agree with the readers."""
    assert tuple(config.SCHEMA["prices"]["models"]["*"]) == pricing.RATE_NAMES
    assert tuple(config.SCHEMA["caps"]["projects"]["*"]) == (*windows.WINDOWS, "per_call")
    assert tuple(config.SCHEMA["caps"]["per_session"]) == windows.SESSION_WINDOWS
    documented = Path(__file__).resolve().parent.parent / "docs"
    text = "".join((documented / name).read_text() for name in
                   ("configuration.md", "caps.md", "team-share.md"))
    for table, keys in config.SCHEMA.items():
        assert table in text
        for key in keys if isinstance(keys, dict) else ():
            assert key == "*" or key in text, f"{table}.{key} is not documented"


def test_unknown_keys_name_the_closest_valid_one():
    cfg = {"prot": 9000, "upstream": "http://x", "caps": {
        "dialy": "5", "daily": "1", "projects": {"api": {"montly": "3"}},
        "estimates": {"claude-opus": "1"}, "per_session": {"totl": "2"}},
        "prices": {"models": {"m": {"inptu": "1"}}}, "share": {"project_names": {"a": "b"}},
        "zzz": 1}
    assert [str(u) for u in config.unknown_keys(cfg)] == [
        "prot (did you mean port?)", "caps.dialy (did you mean daily?)",
        "caps.projects.api.montly (did you mean monthly?)",
        "caps.per_session.totl (did you mean total?)",
        "prices.models.m.inptu (did you mean input?)", "zzz"]


# --- 1. unknown keys -----------------------------------------------------------------------


def test_a_typo_in_caps_is_refused_and_named_everywhere(user_dirs, tmp_path):
    write_config(user_dirs, '[caps]\ndialy = "5"\n')
    shown = cli("caps")
    assert shown.returncode == 2, shown.stdout
    assert "No spending caps set" not in shown.stdout
    [line] = shown.stderr.splitlines()  # one line: no "ignored" warning before the error
    assert line.startswith("ccmeter: unknown key in [caps]: caps.dialy (did you mean daily?)")
    report = cli("report")  # a command that goes on says the caps are off, not "ignored"
    assert report.returncode == 0
    [warning] = report.stderr.splitlines()
    assert warning.endswith("[caps] not applied, unknown key: caps.dialy (did you mean daily?)")

    doctor = cli("doctor")
    assert doctor.returncode == 1 and "all good" not in doctor.stdout
    assert doctor.stdout.count("caps.dialy") == 1  # one problem, said once
    assert "unknown key in [caps]: caps.dialy (did you mean daily?)" in " ".join(
        doctor.stdout.split())

    run = cli("run", "--", sys.executable, "-c", "print('ran')")
    assert run.returncode == 2 and "ran" not in run.stdout
    last = run.stderr.splitlines()[-1]
    assert last.startswith("ccmeter: ") and "dialy" in last and "daily" in last
    assert "Traceback" not in run.stderr

    before = user_dirs.config_file.read_text()
    setting = cli("caps", "set", "--weekly", "50")
    assert setting.returncode == 2 and "dialy" in setting.stderr
    assert user_dirs.config_file.read_text() == before

    port = free_port()
    serve = subprocess.run([sys.executable, "-m", "ccmeter.cli", "serve", "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert serve.returncode == 2 and "dialy" in serve.stderr.splitlines()[-1]


def test_an_unknown_top_level_key_is_warned_about_once_and_ignored(user_dirs):
    write_config(user_dirs, 'prot = 9000\n[caps]\ndaily = "5"\n')
    for args in (["caps"], ["report"], ["prices"]):
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        [warning] = warnings_in(result.stderr)
        assert "prot (did you mean port?)" in warning and str(user_dirs.config_file) in warning
    # the status line is not stopped by it either (Claude Code shows its stdout, not stderr)
    assert cli("statusline").returncode == 0
    doctor = cli("doctor")
    assert doctor.returncode == 1 and "unknown key prot" in doctor.stdout
    assert "did you mean port?" in doctor.stdout

    with StandIn() as standin:
        priced_replies(standin, 1)
        run = cli("run", "--upstream", standin.url, "--", sys.executable, "-c", CLIENT, "s1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["200"]
    assert len(warnings_in(run.stderr)) == 1
    log = user_dirs.log_file.read_text()
    assert "WARNING" in log and "prot (did you mean port?)" in log


# --- 2. [prices] ---------------------------------------------------------------------------


@pytest.mark.parametrize("prices", [
    '[prices]\ndiscount_percent = "150"\n',
    '[prices]\ndiscount_percent = "-20"\n',
    '[prices.models."my-gateway-model"]\ninput = "1"\n',
])
def test_a_bad_prices_table_stops_run_and_fails_doctor(user_dirs, prices):
    write_config(user_dirs, prices)
    run = cli("run", "--", sys.executable, "-c", "print('ran')")
    assert run.returncode == 2 and "ran" not in run.stdout
    assert run.stderr.count("\n") == 1 and "[prices]" in run.stderr, run.stderr
    doctor = cli("doctor")
    assert doctor.returncode == 1 and "all good" not in doctor.stdout
    assert "[prices]" in doctor.stdout


def test_serve_keeps_its_prices_when_a_bad_prices_table_comes_and_says_so(user_dirs):
    write_config(user_dirs, '[prices]\ndiscount_percent = "50"\n')
    port = free_port()
    with StandIn() as standin:
        priced_replies(standin, 2)
        proc = subprocess.Popen([sys.executable, "-m", "ccmeter.cli", "serve", "--port",
                                 str(port), "--upstream", standin.url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_port(port, proc=proc)
            env = _proxy_env(port, user_dirs.ca_cert)
            first = subprocess.run([sys.executable, "-c", CLIENT, "s1"], env=env,
                                   capture_output=True, text=True, timeout=60)
            time.sleep(0.05)  # a new modification time
            write_config(user_dirs, '[prices]\ndiscount_percent = "150"\n')
            second = subprocess.run([sys.executable, "-c", CLIENT, "s1"], env=env,
                                    capture_output=True, text=True, timeout=60)
            doctor = cli("doctor")
            status = subprocess.run([sys.executable, "-m", "ccmeter.cli", "statusline"],
                                    input="{}", capture_output=True, text=True, timeout=60)
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
    assert (first.stdout.split(), second.stdout.split()) == (["200"], ["200"])
    assert [r["cost_picousd"] for r in rows(user_dirs.db_file)] == [CALL_COST // 2] * 2
    assert doctor.returncode == 1
    assert "config not applied: [prices]" in doctor.stdout
    assert "discount_percent" in doctor.stdout
    assert status.stdout.startswith("⚠ config not applied (ccmeter doctor)"), status.stdout


# --- 4. env --------------------------------------------------------------------------------


def test_env_warns_on_stderr_when_no_proxy_answers(user_dirs):
    port = free_port()
    alone = cli("env", "--port", str(port))
    assert alone.returncode == 0
    assert [line.split("=")[0] for line in alone.stdout.splitlines()] == [
        "export HTTPS_PROXY", "export NODE_EXTRA_CA_CERTS"]
    [warning] = alone.stderr.splitlines()
    assert f"127.0.0.1:{port}" in warning and f"ccmeter serve --port {port}" in warning
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", port))
        listening.listen()
        served = cli("env", "--port", str(port))
    assert served.returncode == 0 and served.stderr == ""
    assert served.stdout == alone.stdout


def test_every_command_reading_the_config_warns_once(user_dirs):
    write_config(user_dirs, 'prot = 9000\nhostz = ["x"]\n')
    result = cli("prices", "--format", "json")
    [warning] = warnings_in(result.stderr)
    assert "prot (did you mean port?)" in warning and "hostz (did you mean hosts?)" in warning
    json.loads(result.stdout)
    assert os.environ.get("CCMETER_HOME") is None
