"""`ccmeter run`, `serve`, `env`, `cert`, `doctor`, driven as a user would, with real clients."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest
from mitm import MitmDump, db_rows, free_port, wait_for_port
from realclients import claude_bin, sdk_python
from standin import Recorded, StandIn, message_events, sse_reply
from typer.testing import CliRunner

from ccmeter import store
from ccmeter.cli import app

CCMETER = [sys.executable, "-m", "ccmeter.entry"]  # the console script's own module
PICO = 10**12


def ccmeter(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 180,
            **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CCMETER, *args], env=env or dict(os.environ), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


# --- the real Claude Code CLI ------------------------------------------------------------

# Usage the stand-in serves for each kind of call, priced by hand below.
TOOL_TURN = dict(input_tokens=3000, cache_write_1h=2000, cache_read=10000, output_tokens=120)
FINAL_TURN = dict(input_tokens=400, cache_write_5m=900, cache_read=12000, output_tokens=35)
AUX_TURN = dict(input_tokens=80, output_tokens=6)
ANSWER = "The file says: pumpkin."


def cost_opus_4_8(input_tokens=0, cache_write_5m=0, cache_write_1h=0, cache_read=0,
                  output_tokens=0) -> int:
    """Opus 4.8 list prices per MTok: in $5, 5m write $6.25, 1h write $10, read $0.50, out $25."""
    dollars = (input_tokens * Decimal(5) + cache_write_5m * Decimal("6.25")
               + cache_write_1h * Decimal(10) + cache_read * Decimal("0.5")
               + output_tokens * Decimal(25)) / 10**6
    return int(dollars * PICO)


def cost_haiku_4_5(input_tokens=0, output_tokens=0) -> int:
    """Haiku 4.5 list prices per MTok: in $1, out $5."""
    return int((input_tokens * Decimal(1) + output_tokens * Decimal(5)) / 10**6 * PICO)


def claude_code_handler(file_to_read: str):
    """First turn asks for the Read tool; once a tool_result comes back, answer with text."""

    def handle(rec: Recorded):
        body = rec.json or {}
        if not body.get("tools"):  # auxiliary calls (title, haiku probes) carry no tools
            return sse_reply(message_events(body.get("model", "claude-haiku-4-5-20251001"),
                                            text="Reading a file", **AUX_TURN))
        last = body["messages"][-1]["content"]
        has_result = isinstance(last, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in last)
        if has_result:
            return sse_reply(message_events(body["model"], text=ANSWER, **FINAL_TURN))
        return sse_reply(message_events(body["model"], text="Let me read it.",
                                        tool_use={"name": "Read",
                                                  "input": {"file_path": file_to_read}},
                                        **TOOL_TURN))

    return handle


@pytest.fixture
def project_dir(tmp_path):
    repo = tmp_path / "demo-repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    (repo / "notes.txt").write_text("the secret word is pumpkin\n")
    return repo


def claude_env(tmp_path: Path, **extra) -> dict:
    home = tmp_path / "user-home"
    home.mkdir(exist_ok=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = dict(os.environ, HOME=str(home), ANTHROPIC_API_KEY="sk-ant-api03-dummy-test-key",
               DISABLE_AUTOUPDATER="1")
    env.update(extra)
    return env


@pytest.mark.realclient
def test_real_claude_code_tool_round_trip_is_metered_exactly(tmp_path, project_dir,
                                                             isolated_home):
    claude = claude_bin()
    with StandIn() as standin:
        standin.default = claude_code_handler(str(project_dir / "notes.txt"))
        result = ccmeter("run", "--upstream", standin.url, "--", claude, "-p",
                         "What does notes.txt say?", "--allowedTools", "Read",
                         env=claude_env(tmp_path), cwd=project_dir / "src")
        calls = standin.messages_requests()

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ANSWER
    # The only thing ccmeter prints is its one summary line, on stderr.
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ccmeter: this run $")

    rows = db_rows(isolated_home, expect=len(calls))
    assert len(rows) == len(calls) >= 2
    assert sorted(r["request_id"] for r in rows) == sorted(set(r["request_id"] for r in rows))
    session_ids = {c.headers["x-claude-code-session-id"] for c in calls}
    assert {r["session_id"] for r in rows} == session_ids and len(session_ids) == 1
    assert {r["project"] for r in rows} == {"demo-repo"}
    assert all(r["status"] == "ok" and r["client_name"] == "claude-cli" for r in rows)

    expected = 0
    for call, row in zip(calls, rows, strict=True):
        body = call.json
        if not body.get("tools"):
            assert row["call_kind"] == "auxiliary"
            want = (cost_haiku_4_5(**AUX_TURN) if "haiku-4-5" in row["model"]
                    else cost_opus_4_8(**AUX_TURN))
        else:
            last = body["messages"][-1]["content"]
            final = isinstance(last, list) and any(
                isinstance(b, dict) and b.get("type") == "tool_result" for b in last)
            want = cost_opus_4_8(**(FINAL_TURN if final else TOOL_TURN))
            assert row["model"] == "claude-opus-4-8"
        assert row["cost_picousd"] == want, row
        expected += want
    # Tool turn: 3000x5 + 2000x10 + 10000x0.5 + 120x25 = 43,000 micro-dollars = $0.043
    assert cost_opus_4_8(**TOOL_TURN) == 43_000 * 10**6
    # Final turn: 400x5 + 900x6.25 + 12000x0.5 + 35x25 = 14,500 micro-dollars = $0.0145
    assert cost_opus_4_8(**FINAL_TURN) == 14_500 * 10**6
    assert sum(r["cost_picousd"] for r in rows) == expected
    assert f"${expected / PICO:.4f}" in result.stderr


@pytest.mark.realclient
def test_real_claude_code_with_its_own_gateway_base_url_is_metered(tmp_path, isolated_home):
    claude = claude_bin()
    with StandIn() as standin:
        env = claude_env(tmp_path, ANTHROPIC_BASE_URL=standin.url)
        result = ccmeter("run", "--project", "gw", "--", claude, "-p", "say hi", env=env,
                         cwd=tmp_path)
        sent = len(standin.messages_requests())
    assert result.returncode == 0, result.stderr
    rows = db_rows(isolated_home, expect=sent)
    assert sent >= 1 and len(rows) == sent
    assert {r["project"] for r in rows} == {"gw"} and rows[0]["host"] == "127.0.0.1"


@pytest.mark.realclient
def test_real_claude_code_meets_a_reached_cap_at_once(tmp_path, project_dir, isolated_home):
    claude = claude_bin()
    home = Path(isolated_home)
    (home / "config.toml").write_text('[caps]\ndaily = "20"\nnotify = false\n')
    db = store.connect(home / "ccmeter.db")
    now = time.time()
    store.upsert_calls(db, [{"call_uid": "earlier", "started_at": "earlier",
                             "started_ts": now - 60, "status": "ok", "model": "claude-opus-4-8",
                             "cost_picousd": 20_070_000 * 10**6, "updated_ts": now}])
    db.conn.close()
    with StandIn() as standin:
        started = time.monotonic()
        result = ccmeter("run", "--upstream", standin.url, "--", claude, "-p", "hello",
                         env=claude_env(tmp_path), cwd=project_dir)
        elapsed = time.monotonic() - started
        reached = standin.messages_requests()
    shown = result.stdout + result.stderr
    assert reached == []  # nothing was sent upstream, not even once
    assert re.search(r"API Error: Request rejected \(429\) · ccmeter: daily cap \$20\.00 reached "
                     r"\(\$20\.07 spent\); resets 00:00 \(in \d+h\d+m\)\. "
                     r"Raise it with: ccmeter caps set --daily N", shown), shown
    assert result.returncode != 0
    assert elapsed < 60  # shown at once: no minutes of retrying
    blocked = db_rows(home, "SELECT * FROM api_calls WHERE status = 'blocked'", expect=1)
    assert len(blocked) >= 1 and all(r["cost_picousd"] == 0 for r in blocked)
    assert f"· {len(blocked)} refused by caps" in result.stderr


# --- the official anthropic SDK through `ccmeter serve` ------------------------------------

SDK_CLIENT = textwrap.dedent("""
    import sys, anthropic
    extra = {"base_url": sys.argv[1]} if len(sys.argv) > 1 else {}
    client = anthropic.Anthropic(api_key="sk-ant-api03-dummy", max_retries=0, **extra)
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=100,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    print(text)
    print(final.usage.input_tokens, final.usage.output_tokens)
""")


def start_serve(*args: str, env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([*CCMETER, "serve", "--port", str(port), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_port(port, proc=proc)
    return proc, port


@pytest.mark.realclient
@pytest.mark.parametrize("reverse", [False, True], ids=["https-proxy+ca", "reverse"])
def test_anthropic_sdk_through_serve(reverse, tmp_path, isolated_home):
    python = sdk_python()
    with StandIn() as standin:
        standin.enqueue(sse_reply(message_events("claude-sonnet-4-6", input_tokens=2000,
                                                 output_tokens=100)))
        proc, port = start_serve("--upstream", standin.url, *(["--reverse"] if reverse else []),
                                 env=dict(os.environ))
        try:
            env = dict(os.environ)
            args = [python, "-c", SDK_CLIENT]
            if reverse:
                args.append(f"http://127.0.0.1:{port}")
            else:
                lines = ccmeter("env", "--port", str(port)).stdout.splitlines()
                for line in lines:
                    name, _, value = line.removeprefix("export ").partition("=")
                    env[name] = value
                env["SSL_CERT_FILE"] = env["NODE_EXTRA_CA_CERTS"]  # httpx's way to trust a CA
            client = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
    assert client.returncode == 0, client.stderr
    assert client.stdout.splitlines()[-1] == "2000 100"
    assert proc.returncode == 0 and "stopped" in err
    row = db_rows(isolated_home, expect=1)[0]
    # Sonnet 4.6: 2000 x $3 + 100 x $15 per MTok = $0.0075
    assert row["cost_picousd"] == 7_500 * 10**6 and row["status"] == "ok"
    assert row["host"] == ("api.anthropic.com" if not reverse else "127.0.0.1")


# --- run: exit codes, signals, the child's terminal ----------------------------------------


def test_run_passes_the_exit_code_and_keeps_stdout_clean(tmp_path):
    result = ccmeter("run", "--", sys.executable, "-c", "print('only this'); raise SystemExit(7)")
    assert result.returncode == 7
    assert result.stdout == "only this\n"
    assert result.stderr.startswith("ccmeter: this run $0.00 (0 calls, 0 sessions)")


def test_run_gives_the_child_the_proxy_with_its_run_and_the_ca(isolated_home):
    script = ("import os, json; print(json.dumps({k: os.environ.get(k) for k in "
              "('HTTPS_PROXY', 'HTTP_PROXY', 'NODE_EXTRA_CA_CERTS')}))")
    result = ccmeter("run", "--", sys.executable, "-c", script)
    seen = json.loads(result.stdout)
    # the shared proxy, with this run (and its project) in the credentials
    assert re.fullmatch(r"http://run-[0-9a-f]{16}:[\w-]+@127\.0\.0\.1:\d+", seen["HTTPS_PROXY"])
    assert seen["HTTP_PROXY"] == seen["HTTPS_PROXY"]
    ca = Path(seen["NODE_EXTRA_CA_CERTS"])
    assert ca.exists() and b"PRIVATE KEY" not in ca.read_bytes()
    key = Path(isolated_home) / "ca" / "mitmproxy-ca.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (Path(isolated_home) / "ca").stat().st_mode & 0o777 == 0o700
    assert "HTTPS_PROXY" not in os.environ  # nothing leaked into ccmeter's own environment


def test_ctrl_c_goes_to_the_child_and_ccmeter_waits_for_it(tmp_path):
    child = textwrap.dedent("""
        import signal, sys, time
        def on_int(*_):
            print("child got SIGINT", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGINT, on_int)
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([*CCMETER, "run", "--", sys.executable, "-c", child],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline() == "ready\n"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert out == "child got SIGINT\n"
    assert err.startswith("ccmeter: this run") and "Traceback" not in err


def test_only_api_hosts_are_decrypted_everything_else_is_tunnelled(isolated_home):
    """Through `ccmeter serve`, another TLS host keeps its own certificate end to end."""
    import ssl

    proc, port = start_serve(env=dict(os.environ))
    try:
        with StandIn(tls=True) as other:
            def fetch(cafile: str) -> int:
                context = ssl.create_default_context(cafile=cafile)
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context,
                                                   timeout=10)
                conn.set_tunnel("localhost", other.port)
                conn.request("GET", "/anything")
                return conn.getresponse().status

            assert fetch(other.ca_path) == 200  # the stand-in's own cert reached us
            ours = str(Path(isolated_home) / "ca" / "mitmproxy-ca-cert.pem")
            with pytest.raises(ssl.SSLCertVerificationError):
                fetch(ours)  # ...and nothing was signed by ccmeter's CA
            assert other.requests[0].path == "/anything"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert db_rows(isolated_home) == []


def test_the_command_keeps_its_own_options_even_without_the_double_dash():
    script = "import sys, json; print(json.dumps(sys.argv[1:]))"
    result = ccmeter("run", sys.executable, "-c", script, "-p", "fix it", "--help")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["-p", "fix it", "--help"]


def test_no_proxy_cannot_send_the_api_around_the_meter():
    script = "import os; print(os.environ['NO_PROXY'], os.environ['no_proxy'], sep='|')"
    env = dict(os.environ, NO_PROXY="localhost,.anthropic.com,example.org",
               no_proxy="*")
    result = ccmeter("run", "--", sys.executable, "-c", script, env=env)
    assert result.stdout.strip() == "localhost,example.org|"


def test_a_typo_in_caps_stops_run_and_serve_instead_of_switching_caps_off(isolated_home):
    (Path(isolated_home) / "config.toml").write_text('[caps]\ndaily = "5"\nmode = "hrad"\n')
    for args in (["run", "--", "true"], ["serve", "--port", "18999"]):
        result = ccmeter(*args, timeout=60)
        assert result.returncode == 2, args
        assert "mode" in result.stderr and "hrad" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    doctor = CliRunner().invoke(app, ["doctor"])
    assert doctor.exit_code == 1 and "FAIL [caps]" in doctor.output


def test_bad_config_values_and_a_damaged_ca_are_one_line_errors(isolated_home):
    home = Path(isolated_home)
    (home / "config.toml").write_text('port = "x"\n')
    for args in (["env"], ["serve"]):
        result = ccmeter(*args, timeout=60)
        assert result.returncode == 2 and "port in the config" in result.stderr, args
    (home / "config.toml").write_text("upstream = 5\n")
    result = ccmeter("run", "--", "true")
    assert result.returncode == 2 and "upstream in the config" in result.stderr
    (home / "config.toml").unlink()
    assert ccmeter("cert").returncode == 0
    (home / "ca" / "mitmproxy-ca-cert.pem").write_text("garbage")
    for args in (["cert"], ["env"], ["run", "--", "true"]):
        result = ccmeter(*args)
        assert result.returncode == 2, args
        assert "incomplete or damaged" in result.stderr and "Traceback" not in result.stderr


def test_mitmdump_runs_the_installed_addon(tmp_path, isolated_home):
    path = ccmeter("addon").stdout.strip()
    assert path.endswith("ccmeter_addon.py") and Path(path).exists()
    with StandIn() as standin, MitmDump(isolated_home, f"reverse:{standin.url}",
                                        script=path) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        conn.request("POST", "/v1/messages", body=json.dumps(
            {"model": "claude-opus-4-8", "stream": True, "messages": []}),
            headers={"content-type": "application/json"})
        assert conn.getresponse().read()
    assert db_rows(isolated_home, expect=1)[0]["model"] == "claude-opus-4-8"


def test_unknown_command_is_one_clear_line():
    result = ccmeter("run", "--", "definitely-not-a-command-xyz")
    assert result.returncode == 127
    assert result.stderr.strip() == ("ccmeter: command not found: definitely-not-a-command-xyz "
                                     "(is it installed and on your PATH?)")


def test_bad_upstream_and_broken_config_are_one_line_errors(isolated_home):
    bad = ccmeter("run", "--upstream", "ftp://x", "--", "true")
    assert bad.returncode == 2 and "upstream must be an http(s) URL" in bad.stderr
    assert "Traceback" not in bad.stderr
    (Path(isolated_home) / "config.toml").write_text("upstream = [unclosed")
    broken = ccmeter("run", "--", "true")
    assert broken.returncode == 2 and "is not valid TOML" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


def test_serve_on_a_busy_port_says_so():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = ccmeter("serve", "--port", str(port), timeout=60)
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr


# --- env, cert, doctor, help ---------------------------------------------------------------


def test_env_prints_shell_lines(isolated_home):
    runner = CliRunner()
    forward = runner.invoke(app, ["env", "--port", "9999"])
    assert forward.exit_code == 0
    assert forward.stdout.splitlines() == [  # stdout stays eval-able
        "export HTTPS_PROXY=http://127.0.0.1:9999",
        f"export NODE_EXTRA_CA_CERTS={Path(isolated_home) / 'ca' / 'mitmproxy-ca-cert.pem'}",
    ]
    reverse = runner.invoke(app, ["env", "--reverse"])
    assert reverse.stdout == "export ANTHROPIC_BASE_URL=http://127.0.0.1:8337\n"


def test_cert_shows_path_and_fingerprint_and_is_stable(isolated_home):
    runner = CliRunner()
    first = runner.invoke(app, ["cert"])
    second = runner.invoke(app, ["cert"])
    assert first.exit_code == 0 and first.output == second.output
    assert "mitmproxy-ca-cert.pem" in first.output
    fingerprint = first.output.splitlines()[1].split()[-1]
    assert len(fingerprint.split(":")) == 32


def test_cert_install_shows_the_plan_and_asks_first(isolated_home):
    result = CliRunner().invoke(app, ["cert", "--install"], input="n\n")
    assert result.exit_code == 1
    assert "This will run:" in result.output and "update-ca-certificates" in result.output


def test_doctor_reports_each_check_and_fails_on_a_broken_config(isolated_home, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(claude_bin_or_none() or "/nonexistent").parent)
                       + os.pathsep + os.environ["PATH"])
    ok = CliRunner().invoke(app, ["doctor"])
    assert "ok   database" in ok.output and "ok   CA" in ok.output
    (Path(isolated_home) / "config.toml").write_text("[caps\n")
    bad = CliRunner().invoke(app, ["doctor"])
    assert bad.exit_code == 1
    assert "FAIL" in bad.output and "not valid TOML" in bad.output
    monkeypatch.setenv("NO_PROXY", "localhost,.anthropic.com")
    assert "NO_PROXY covers api.anthropic.com" in CliRunner().invoke(app, ["doctor"]).output


def claude_bin_or_none() -> str | None:
    try:
        return claude_bin()
    except BaseException:
        return None


def test_every_command_and_option_has_help_with_an_example():
    import typer.main

    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        assert command.help and "Example" in command.help, name
        commands = getattr(command, "commands", None) or {name: command}
        for sub_name, sub in commands.items():
            assert sub.help and "Example" in sub.help, sub_name
            for param in sub.params:
                if param.param_type_name == "option" and param.name != "help":
                    assert param.help, f"{name} {sub_name} --{param.name}"


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("ccmeter 0.")
