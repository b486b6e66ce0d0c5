"""Where metered calls go (the config's ``upstream`` and ``hosts`` under ``mitmdump -s``
too), and what a client gets when that upstream cannot be reached.

A new user's ``ccmeter run --upstream http://127.0.0.1:1 -- claude -p x`` took 2 min 56 s:
the proxy answered with mitmproxy's HTML 502 page, Claude Code retried 21 times and blamed
status.claude.com, and ccmeter's log named api.anthropic.com. No test here touches the
network: every upstream is a stand-in on 127.0.0.1 or a closed loopback port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mitm import ADDON, MITMDUMP, TUNNEL, free_port, wait_for_port
from realclients import claude_bin
from standin import StandIn
from test_user_layout import CLIENT, _proxy_env, cli, priced_replies, rows

from ccmeter import config, routing

# One call through HTTPS_PROXY; prints the status, x-should-retry and the error message.
ONE_CALL = TUNNEL + textwrap.dedent("""
    conn = tunnel(60)
    conn.request("POST", "/v1/messages", body=json.dumps({
        "model": "claude-opus-4-8", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}), headers={
        "content-type": "application/json", "x-api-key": "sk-ant-api03-dummy",
        "anthropic-version": "2023-06-01"})
    reply = conn.getresponse()
    raw = reply.read()
    print(reply.status, reply.headers.get("x-should-retry"), reply.headers["content-type"])
    if reply.headers["content-type"] == "application/json":
        body = json.loads(raw)
        print(body["type"], body["error"]["type"])
        print(body["error"]["message"])
""")


def start_mitmdump(port: int, confdir: Path, log: Path, *sets: str) -> subprocess.Popen:
    """The README's line, with no connection_strategy: the addon must choose it."""
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [str(MITMDUMP), "-s", str(ADDON), "--listen-host", "127.0.0.1", "-p", str(port),
         "--set", f"confdir={confdir}", "--allow-hosts", r"^api\.anthropic\.com:443$", *sets],
        stdout=out, stderr=subprocess.STDOUT)
    out.close()
    wait_for_port(port, proc=proc)
    for _ in range(600):  # mitmdump loads -s scripts just after it listens
        if b"ccmeter: metering into" in log.read_bytes():
            break
        time.sleep(0.05)
    return proc


def test_mitmdump_takes_upstream_from_the_config_and_never_dials_the_original_host(
        user_dirs, tmp_path):
    """No ``ccmeter_upstream`` option and no ``connection_strategy=lazy``: the config's
    upstream is used, and api.anthropic.com (which does not resolve here) is never dialled
    at CONNECT time; a change of upstream in the config applies to the next call."""
    port, confdir, log = free_port(), tmp_path / "ca", tmp_path / "mitmdump.log"
    user_dirs.config_dir.mkdir(parents=True)
    with StandIn() as first, StandIn() as second:
        priced_replies(first, 1)
        priced_replies(second, 1)
        user_dirs.config_file.write_text(f'upstream = "{first.url}"\n')
        proc = start_mitmdump(port, confdir, log)
        try:
            env = _proxy_env(port, confdir / "mitmproxy-ca-cert.pem")
            one = subprocess.run([sys.executable, "-c", CLIENT, "s1"], env=env,
                                 capture_output=True, text=True, timeout=60)
            time.sleep(0.05)
            user_dirs.config_file.write_text(f'upstream = "{second.url}"\n')
            two = subprocess.run([sys.executable, "-c", CLIENT, "s1"], env=env,
                                 capture_output=True, text=True, timeout=60)
        finally:
            proc.terminate()
            proc.wait(20)
        reached = (len(first.messages_requests()), len(second.messages_requests()))
    text = log.read_text()
    assert (one.stdout.split(), two.stdout.split()) == (["200"], ["200"]), text
    assert reached == (1, 1)
    assert "connection_strategy set to lazy" in text
    assert "api.anthropic.com" not in text.replace("^api\\.anthropic\\.com", ""), text
    assert [r["status"] for r in rows(user_dirs.db_file)] == ["ok", "ok"]


def test_the_options_win_over_the_config():
    routes = routing.Routes()
    assert routes.config({"upstream": "http://127.0.0.1:9/gw", "hosts": ["GW.internal"]}) is None
    assert routes.upstream is not None and routes.upstream.url == "http://127.0.0.1:9/gw"
    assert "gw.internal" in routes.hosts
    routes.options("https://127.0.0.1:8443", ["other.internal"])
    assert routes.upstream.url == "https://127.0.0.1:8443"
    assert "other.internal" in routes.hosts and "gw.internal" not in routes.hosts
    routes.options(None, [])
    assert routes.upstream.url == "http://127.0.0.1:9/gw"
    assert routes.config({"upstream": "ftp://x"}) is not None  # refused; the previous stays
    assert routes.upstream.url == "http://127.0.0.1:9/gw"


@pytest.mark.parametrize(("host", "cause", "retry"), [
    ("127.0.0.1", "connection refused", False),   # a local server that is not running
    ("localhost", "connection refused", False),
    ("::1", "connection refused", False),
    ("127.0.0.1", "timed out", True),             # a blip: the client's retries may help
    ("gateway.example.com", "connection refused", True),
    ("gateway.example.com", "host not found", True),
])
def test_which_failures_the_client_should_retry(host, cause, retry):
    assert routing.should_retry(host, cause) is retry


def test_run_answers_json_naming_the_upstream_it_could_not_reach(user_dirs):
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = cli("run", "--upstream", dead, "--", sys.executable, "-c", ONE_CALL)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    status, kind, message = result.stdout.splitlines()
    assert status == "502 false application/json"
    assert kind == "error api_error"
    assert message == f"ccmeter: cannot reach the upstream {dead} (connection refused)"
    assert "1 call failed: upstream unreachable (connection refused)" in result.stderr
    assert took < 30
    log = user_dirs.log_file.read_text()
    assert f"a call to {dead} failed: upstream unreachable (connection refused)" in log
    assert "a call to api.anthropic.com failed" not in log
    [row] = rows(user_dirs.db_file)
    assert (row["status"], row["error_type"], row["model"]) == (
        "upstream_error", "connection", "claude-opus-4-8")
    assert row["cost_picousd"] is None or row["cost_picousd"] == 0


@pytest.mark.realclient
def test_real_claude_code_gives_up_at_once_on_a_dead_local_upstream(user_dirs, tmp_path):
    claude = claude_bin()
    home = tmp_path / "claude-home"
    home.mkdir()
    (home / ".claude.json").write_text('{"hasCompletedOnboarding": true}')
    env = dict(os.environ, HOME=str(home), ANTHROPIC_API_KEY="sk-ant-api03-dummy-test-key",
               DISABLE_AUTOUPDATER="1")
    ccmeter_env = dict(env, HOME=os.environ["HOME"])  # ccmeter's folders: the test's user
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ccmeter.cli", "run", "--upstream", dead, "--",
         "env", f"HOME={home}", claude, "-p", "say hi"],
        env=ccmeter_env, capture_output=True, text=True, timeout=170, cwd=tmp_path)
    took = time.monotonic() - started
    shown = result.stdout + result.stderr
    assert f"ccmeter: cannot reach the upstream {dead} (connection refused)" in shown, shown
    assert took < 30, f"Claude Code took {took:.0f} s to give up"
    assert "upstream unreachable (connection refused)" in result.stderr
    assert config.paths().db_file == user_dirs.db_file



def test_an_upstream_that_goes_away_later_is_answered_as_json_from_the_next_call(user_dirs):
    """Once the upstream has answered, calls go without a try first; the first call that
    then cannot connect gets mitmproxy's answer, and from the next one on ccmeter's JSON."""
    port = free_port()
    standin = StandIn().__enter__()
    proc = None
    try:
        priced_replies(standin, 1)
        dead = standin.url
        proc = subprocess.Popen([sys.executable, "-m", "ccmeter.cli", "serve", "--port",
                                 str(port), "--upstream", dead],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_port(port, proc=proc)
        env = _proxy_env(port, user_dirs.ca_cert)
        first = subprocess.run([sys.executable, "-c", CLIENT, "s1"], env=env,
                               capture_output=True, text=True, timeout=60)
        standin.close()
        later = [subprocess.run([sys.executable, "-c", ONE_CALL], env=env, capture_output=True,
                                text=True, timeout=60) for _ in range(2)]
    finally:
        standin.close()
        if proc is not None:
            proc.terminate()
            proc.communicate(timeout=30)
    assert first.stdout.split() == ["200"]
    assert later[0].stdout.startswith("502 None text/html")  # mitmproxy's page, once
    assert later[1].stdout.splitlines() == [
        "502 false application/json", "error api_error",
        f"ccmeter: cannot reach the upstream {dead} (connection refused)"]
