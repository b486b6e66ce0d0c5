"""ccmeter as a newcomer has it: ``HOME`` set and nothing else, the platform folders.

Every command here is the installed CLI run as a process, exactly as the README tells a user:
``ccmeter caps set``, ``ccmeter run -- …``, ``ccmeter serve``, ``mitmdump -s``, ``report``,
``statusline``, ``push``. No test sets ``CCMETER_HOME`` or any ``XDG_*`` variable: what the
CLI writes to ``~/.config/ccmeter`` must be what the proxy does, and what the proxy writes to
``~/.local/share/ccmeter`` must be what the reports read. (The bug these tests guard against:
the proxy read its caps and prices from the data folder, so a cap set by ``caps set`` was
shown everywhere and enforced nowhere.)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mitm import ADDON, MITMDUMP, TUNNEL, free_port, wait_for_port
from standin import StandIn, message_events, sse_reply

PICO = 10**12
# One Opus 4.8 call of 40,000 input tokens: 40,000 x $5 / MTok = $0.20 exactly.
CALL_INPUT = 40_000
CALL_COST = 200_000 * 10**6

# A client like Claude Code: HTTPS through the proxy named in HTTPS_PROXY, trusting the CA
# named in NODE_EXTRA_CA_CERTS; one call per argument, each printing the HTTP status.
CLIENT = TUNNEL + textwrap.dedent("""
    for session in sys.argv[1:]:
        conn = tunnel(30)
        body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 10, "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]})
        conn.request("POST", "/v1/messages", body=body, headers={
            "content-type": "application/json", "x-api-key": "sk-ant-api03-dummy",
            "anthropic-version": "2023-06-01", "x-claude-code-session-id": session})
        reply = conn.getresponse()
        reply.read()
        print(reply.status, flush=True)
        conn.close()
""")


def cli(*args: str, cwd: Path | None = None, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed ``ccmeter`` command (its console script's module), with the test's
    environment (HOME only)."""
    return subprocess.run([sys.executable, "-m", "ccmeter.entry", *args], cwd=cwd,
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=timeout)


def priced_replies(standin: StandIn, count: int) -> None:
    standin.enqueue(*[sse_reply(message_events("claude-opus-4-8", input_tokens=CALL_INPUT,
                                               output_tokens=0)) for _ in range(count)])


def rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM calls ORDER BY started_at")]
    finally:
        conn.close()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository a user works in (``.git`` is all project detection needs)."""
    path = tmp_path / "shop-api"
    (path / ".git").mkdir(parents=True)
    (path / "src").mkdir()
    return path


def test_the_folders_are_the_platform_ones(user_home, user_dirs):
    assert "CCMETER_HOME" not in os.environ
    assert user_dirs.config_file == user_home / ".config" / "ccmeter" / "config.toml"
    assert user_dirs.db_file == user_home / ".local" / "share" / "ccmeter" / "ccmeter.db"


def test_a_cap_set_by_the_cli_stops_run_and_overrides_price_its_calls(user_home, user_dirs,
                                                                      repo):
    set_cap = cli("caps", "set", "--daily", "0.50")
    assert set_cap.returncode == 0, set_cap.stderr
    assert user_dirs.config_file.exists()
    assert not (user_dirs.data_dir / "config.toml").exists()

    with StandIn() as standin:
        priced_replies(standin, 5)
        result = cli("run", "--upstream", standin.url, "--", sys.executable, "-c", CLIENT,
                     "s1", "s1", "s1", "s1", "s1", cwd=repo / "src")
        reached = len(standin.messages_requests())

    # $0.20 a call against $0.50: the third call crosses the cap, the fourth is refused.
    assert result.stdout.split() == ["200", "200", "200", "429", "429"], result.stderr
    assert reached == 3
    recorded = rows(user_dirs.db_file)
    ok = [r for r in recorded if r["status"] == "ok"]
    assert [r["cost_picousd"] for r in ok] == [CALL_COST] * 3
    assert {r["project"] for r in recorded} == {"shop-api"}
    assert sum(r["status"] == "blocked" for r in recorded) == 2
    assert "refused by caps" in result.stderr


def test_price_overrides_and_project_in_the_config_folder_are_applied(user_dirs, tmp_path):
    user_dirs.config_dir.mkdir(parents=True)
    user_dirs.config_file.write_text('project = "billing"\n[prices]\ndiscount_percent = "10"\n')
    with StandIn() as standin:
        priced_replies(standin, 1)
        result = cli("run", "--upstream", standin.url, "--", sys.executable, "-c", CLIENT, "s1",
                     cwd=tmp_path)
    assert result.stdout.split() == ["200"], result.stderr
    [row] = rows(user_dirs.db_file)
    assert row["project"] == "billing"
    assert row["cost_picousd"] == CALL_COST * 9 // 10  # 10 % off: $0.18


def test_reports_status_line_and_push_read_what_run_wrote(user_dirs, repo, tmp_path):
    with StandIn() as standin:
        priced_replies(standin, 2)
        result = cli("run", "--upstream", standin.url, "--", sys.executable, "-c", CLIENT,
                     "sess-a", "sess-a", cwd=repo)
    assert result.stdout.split() == ["200", "200"], result.stderr

    report = cli("report", "--by", "project", "--since", "1d", "--format", "json")
    assert report.returncode == 0, report.stderr
    [line] = json.loads(report.stdout)["rows"]
    assert (line["project"], line["calls"], line["cost_picousd"]) == ("shop-api", 2,
                                                                        2 * CALL_COST)

    status = subprocess.run([sys.executable, "-m", "ccmeter.cli", "statusline"],
                            input=json.dumps({"session_id": "sess-a"}), capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "$0.40" in status.stdout

    share = tmp_path / "share"
    share.mkdir()
    push = cli("push", "--to", str(share), "--user", "ana")
    assert push.returncode == 0, push.stderr
    published = [json.loads(line) for f in share.rglob("*.jsonl")
                 for line in f.read_text().splitlines()]
    assert sum(int(r["cost_picousd"]) for r in published) == 2 * CALL_COST


def _proxy_env(port: int, ca: Path) -> dict[str, str]:
    return dict(os.environ, HTTPS_PROXY=f"http://127.0.0.1:{port}", NODE_EXTRA_CA_CERTS=str(ca))


def test_serve_enforces_a_cap_set_while_it_runs(user_dirs, tmp_path):
    port = free_port()
    with StandIn() as standin:
        priced_replies(standin, 3)
        proc = subprocess.Popen([sys.executable, "-m", "ccmeter.cli", "serve", "--port",
                                 str(port), "--upstream", standin.url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_port(port, proc=proc)
            env = _proxy_env(port, user_dirs.ca_cert)
            first = subprocess.run([sys.executable, "-c", CLIENT, "s1"], env=env,
                                   capture_output=True, text=True, timeout=60)
            assert cli("caps", "set", "--daily", "0.10").returncode == 0
            second = subprocess.run([sys.executable, "-c", CLIENT, "s1"], env=env,
                                    capture_output=True, text=True, timeout=60)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        reached = len(standin.messages_requests())
    assert (first.stdout.split(), second.stdout.split()) == (["200"], ["429"])
    assert reached == 1
    assert [r["status"] for r in rows(user_dirs.db_file)] == ["ok", "blocked"]


def test_plain_mitmdump_reads_the_cli_config(user_dirs, tmp_path):
    """The README's ``mitmdump -s`` line with only HOME set: same folders as the CLI."""
    assert cli("caps", "set", "--daily", "0.10").returncode == 0
    port = free_port()
    confdir = tmp_path / "mitmproxy-ca"
    log = tmp_path / "mitmdump.log"
    with StandIn() as standin, open(log, "wb") as out:
        priced_replies(standin, 3)
        proc = subprocess.Popen(
            [str(MITMDUMP), "-s", str(ADDON), "--listen-host", "127.0.0.1", "-p", str(port),
             "--set", f"confdir={confdir}", "--set", f"ccmeter_upstream={standin.url}",
             "--allow-hosts", r"^api\.anthropic\.com:443$",
             # No network here: don't dial api.anthropic.com on CONNECT (the upstream is the
             # stand-in, chosen once the request is read).
             "--set", "connection_strategy=lazy"],
            stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc=proc)
            for _ in range(600):  # mitmdump loads -s scripts just after it listens
                if b"ccmeter: metering into" in log.read_bytes():
                    break
                time.sleep(0.05)
            env = _proxy_env(port, confdir / "mitmproxy-ca-cert.pem")
            calls = subprocess.run([sys.executable, "-c", CLIENT, "s1", "s1"], env=env,
                                   capture_output=True, text=True, timeout=60)
        finally:
            proc.terminate()
            proc.wait(20)
        reached = len(standin.messages_requests())
    assert calls.stdout.split() == ["200", "429"], log.read_text()
    assert reached == 1
    assert str(user_dirs.db_file) in log.read_text()


MAC = textwrap.dedent("""
    import runpy, sys
    from ccmeter import config
    config.PLATFORM = "darwin"  # the macOS layout, on this machine
    sys.argv = ["ccmeter", *sys.argv[1:]]
    runpy.run_module("ccmeter.cli", run_name="__main__")
""")


def test_the_macos_layout_holds_config_and_data_together(user_home, tmp_path):
    def mac(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", MAC, *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)

    folder = user_home / "Library" / "Application Support" / "ccmeter"
    assert mac("caps", "set", "--daily", "0.30").returncode == 0
    assert (folder / "config.toml").exists()
    with StandIn() as standin:
        priced_replies(standin, 3)
        result = mac("run", "--upstream", standin.url, "--project", "mac", "--",
                     sys.executable, "-c", CLIENT, "s1", "s1", "s1")
    assert result.stdout.split() == ["200", "200", "429"], result.stderr
    assert [r["status"] for r in rows(folder / "ccmeter.db")] == ["ok", "ok", "blocked"]
    report = mac("report", "--by", "project", "--since", "1d", "--format", "json")
    [line] = json.loads(report.stdout)["rows"]
    assert (line["project"], line["cost_picousd"]) == ("mac", 2 * CALL_COST)
    assert not (user_home / ".config").exists() and not (user_home / ".local").exists()


def test_serve_applies_price_overrides_changed_while_it_runs(user_dirs):
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
            user_dirs.config_dir.mkdir(parents=True, exist_ok=True)
            user_dirs.config_file.write_text('[prices]\ndiscount_percent = "50"\n')
            second = subprocess.run([sys.executable, "-c", CLIENT, "s1"], env=env,
                                    capture_output=True, text=True, timeout=60)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    assert (first.stdout.split(), second.stdout.split()) == (["200"], ["200"])
    assert [r["cost_picousd"] for r in rows(user_dirs.db_file)] == [CALL_COST, CALL_COST // 2]


@pytest.mark.realclient
def test_real_claude_code_in_the_default_folders_meets_the_cap_the_cli_set(user_home, user_dirs,
                                                                           repo):
    """The newcomer's path with the real CLI: `caps set`, then `ccmeter run -- claude`."""
    from realclients import claude_bin

    claude = claude_bin()
    (user_home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-ant-api03-dummy-test-key",
               DISABLE_AUTOUPDATER="1")
    assert cli("caps", "set", "--daily", "0.05", env=env).returncode == 0
    user_dirs.config_file.write_text(user_dirs.config_file.read_text()
                                     + '[prices]\ndiscount_percent = "20"\n')

    def answer(rec):  # every call: 20,000 input tokens of its own model, a short answer
        return sse_reply(message_events((rec.json or {}).get("model", "claude-opus-4-8"),
                                        text="Hello.", input_tokens=20_000, output_tokens=5))

    with StandIn() as standin:
        standin.default = answer
        first = cli("run", "--upstream", standin.url, "--", claude, "-p", "hi", env=env,
                    cwd=repo)
        sent_first = len(standin.messages_requests())
        second = cli("run", "--upstream", standin.url, "--", claude, "-p", "hi again",
                     env=env, cwd=repo)
        sent_second = len(standin.messages_requests()) - sent_first

    assert first.returncode == 0, first.stderr
    recorded = [r for r in rows(user_dirs.db_file) if r["status"] == "ok"]
    assert len(recorded) == sent_first >= 1
    assert {r["project"] for r in recorded} == {"shop-api"}
    main = [r for r in recorded if r["model"] == "claude-opus-4-8"]
    # Opus 4.8: 20,000 x $5 + 5 x $25 per MTok = $0.100125, less the 20 % discount.
    assert main and all(r["cost_picousd"] == 100_125 * 10**6 * 8 // 10 for r in main)
    assert sent_second == 0  # today's spend is over $0.05: nothing more goes upstream
    assert "ccmeter: daily cap $0.05 reached" in second.stdout + second.stderr
    assert second.returncode != 0


@pytest.mark.parametrize("first", [["report"], ["import"], ["sessions"]])
def test_the_data_folder_is_private_whichever_command_makes_it(user_dirs, first):
    """Projects, sessions and spend are the user's: the folder 0700 and the database 0600
    from the first command on (a reading command used to make them 0755/0644)."""
    assert cli(*first).returncode == 0
    assert stat.S_IMODE(user_dirs.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(user_dirs.db_file.stat().st_mode) == 0o600
    user_dirs.db_file.chmod(0o644)  # as an older ccmeter left it
    user_dirs.data_dir.chmod(0o755)
    assert cli("report").returncode == 0
    assert stat.S_IMODE(user_dirs.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(user_dirs.db_file.stat().st_mode) == 0o600


def test_a_proxy_status_file_is_the_owners_only(user_dirs, tmp_path):
    old = os.umask(0)
    try:
        assert cli("run", "--", sys.executable, "-c", "pass", cwd=tmp_path).returncode == 0
    finally:
        os.umask(old)
    files = list((user_dirs.data_dir / "proxies").glob("*.json"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
