"""One resident proxy for every ``ccmeter run`` (issue 14): joined, shared, idle, killed.

Every ``ccmeter run`` here is the CLI as a process, in the user's default folders (HOME only),
with scripted clients that call through ``HTTPS_PROXY`` as Claude Code does, against the
stand-in API. Runs are started and ended in overlapping order against one shared proxy.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mitm import TUNNEL
from standin import StandIn, message_events, serialize_events, sse_reply

from ccmeter import config, desk, proxies

PICO = 10**12
# Opus 4.8 input is $5 per MTok: a call of N thousand input tokens costs N x $0.005.
PER_THOUSAND = 5 * 10**9

# A client like Claude Code, through HTTPS_PROXY (with its credentials, as Node, curl and
# requests send them) trusting NODE_EXTRA_CA_CERTS. Arguments: "SESSION:N" makes a call
# of N thousand input tokens in that session and prints its HTTP status; "wait:PATH" waits
# for a file; "touch:PATH" makes one.
CLIENT = TUNNEL + textwrap.dedent("""
    for arg in sys.argv[1:]:
        verb, _, what = arg.partition(":")
        if verb == "wait":
            while not os.path.exists(what):
                time.sleep(0.02)
            continue
        if verb == "touch":
            open(what, "w").close()
            continue
        try:
            conn = tunnel(60)
            body = json.dumps({"model": "claude-opus-4-8", "max_tokens": int(what),
                               "stream": True, "messages": [{"role": "user", "content": "hi"}]})
            conn.request("POST", "/v1/messages", body=body, headers={
                "content-type": "application/json", "x-api-key": "sk-ant-api03-dummy",
                "anthropic-version": "2023-06-01", "x-claude-code-session-id": verb})
            reply = conn.getresponse()
            reply.read()
            print(reply.status, flush=True)
            conn.close()
        except Exception as exc:  # the proxy went away
            print("ERR", type(exc).__name__, flush=True)
""")


def answer(rec):
    """Every call: ``max_tokens`` thousand input tokens (so each run's cost is its own)."""
    thousands = int((rec.json or {}).get("max_tokens", 1))
    return sse_reply(message_events("claude-opus-4-8", input_tokens=thousands * 1000,
                                    output_tokens=0))


def start_run(*args: str, cwd: Path, project: str | None = None,
              upstream: str) -> subprocess.Popen:
    extra = ["--project", project] if project else []
    return subprocess.Popen(
        [sys.executable, "-m", "ccmeter.entry", "run", "--upstream", upstream, *extra, "--",
         sys.executable, "-c", CLIENT, *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[list[str], str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out.split(), err


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccmeter.entry", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM api_calls ORDER BY started_ts")]
    finally:
        conn.close()


def status_files(where: config.Paths) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(
        (where.data_dir / proxies.FOLDER).glob("*.json"))]


def summary_of(thousands: int, calls: int, sessions: int = 1) -> str:
    """The summary's first words for ``calls`` calls of ``thousands`` thousand input tokens."""
    from ccmeter.money import spend_usd  # the run summary's rule: spend, floored

    return (f"ccmeter: this run {spend_usd(thousands * PER_THOUSAND)} "
            f"({calls} call{'s' * (calls != 1)}, "
            f"{sessions} session{'s' * (sessions != 1)})")


def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- the credentials (pure) ----------------------------------------------------------------


@pytest.mark.parametrize("project", ["shop-api", "a:b c/é🙂", None, "x" * 150])
def test_the_proxy_url_carries_the_run_and_its_project(project):
    from urllib.parse import unquote, urlsplit

    url = urlsplit(desk.proxy_url(8400, "0123456789abcdef", project))
    assert (url.hostname, url.port) == ("127.0.0.1", 8400)
    # what a client sends: Basic base64(unquoted user ":" unquoted password)
    token = base64.b64encode(f"{unquote(url.username)}:{unquote(url.password)}".encode())
    assert desk.parse_credentials("Basic " + token.decode()) == (
        "0123456789abcdef", project)


@pytest.mark.parametrize("value", [None, "", "Bearer abc", "Basic !!!",
                                   "Basic " + base64.b64encode(b"alice:secret").decode(),
                                   "Basic " + base64.b64encode(b"run-XYZ:cA").decode()])
def test_other_credentials_are_no_run(value):
    assert desk.parse_credentials(value) is None


# --- sessions sharing one proxy --------------------------------------------------------------


def test_overlapping_runs_share_one_proxy_and_each_sums_its_own_calls(residents, work,
                                                                      tmp_path):
    """A starts the proxy; B joins while A runs; A ends; C joins while B runs; B, then C
    end. One proxy all along; each summary is its own calls; each call has its run's
    project; the credentials reach neither the API nor any row."""
    gate = {name: tmp_path / name for name in ("a1", "b1", "a_go", "b_go", "c_go", "c1")}
    (work / ".git").mkdir()
    with StandIn() as standin:
        standin.default = answer
        a = start_run("sa:2", f"touch:{gate['a1']}", f"wait:{gate['a_go']}", "sa:2",
                      cwd=work, upstream=standin.url)  # project: the folder, "work"
        wait_until(gate["a1"].exists)
        b = start_run("sb:3", f"touch:{gate['b1']}", f"wait:{gate['b_go']}", "sb2:3", "sb:3",
                      cwd=work, project="beta", upstream=standin.url)
        wait_until(gate["b1"].exists)
        gate["a_go"].touch()
        a_out, a_err = finish(a)  # A ends while B is still running
        c = start_run("sc:7", f"touch:{gate['c1']}", f"wait:{gate['c_go']}",
                      cwd=work, project="gamma", upstream=standin.url)
        wait_until(gate["c1"].exists)
        gate["b_go"].touch()
        b_out, b_err = finish(b)
        gate["c_go"].touch()
        c_out, c_err = finish(c)
        sent = standin.messages_requests()

    assert (a_out, b_out, c_out) == (["200"] * 2, ["200"] * 3, ["200"])
    assert a_err.startswith(summary_of(4, 2)), a_err
    assert b_err.startswith(summary_of(9, 3, sessions=2)), b_err
    assert c_err.startswith(summary_of(7, 1)), c_err
    assert all("METERING" not in err for err in (a_err, b_err, c_err))
    recorded = rows(residents.db_file)
    assert len(recorded) == len(sent) == 6
    by_session = {(r["session_id"], r["project"]) for r in recorded}
    assert by_session == {("sa", "work"), ("sb", "beta"), ("sb2", "beta"), ("sc", "gamma")}
    assert len({r["run_id"] for r in recorded}) == 3 and all(r["run_id"] for r in recorded)
    assert all("proxy-authorization" not in {k.lower() for k in rec.headers} for rec in sent)
    # exactly one proxy: one status file, one start in the log, every run joined it
    [doc] = status_files(residents)
    log = residents.log_file.read_text()
    assert log.count("started proxy") == 1 and log.count(f"joined proxy {doc['pid']}") == 3


def test_runs_starting_at_the_same_moment_start_one_proxy(residents, work):
    with StandIn() as standin:
        standin.default = answer
        runs = [start_run("s:1", cwd=work, upstream=standin.url) for _ in range(4)]
        results = [finish(run) for run in runs]
    assert all(out == ["200"] for out, _ in results), results
    assert all(err.startswith(summary_of(1, 1)) for _, err in results)
    assert len(status_files(residents)) == 1
    assert residents.log_file.read_text().count("started proxy") == 1


def test_a_cap_set_while_runs_are_going_applies_to_all_of_them(residents, work, tmp_path):
    go = tmp_path / "go"
    with StandIn() as standin:
        standin.default = answer
        a = start_run("sa:40", f"touch:{tmp_path / 'a'}", f"wait:{go}", "sa:1",
                      cwd=work, upstream=standin.url)
        b = start_run("sb:40", f"touch:{tmp_path / 'b'}", f"wait:{go}", "sb:1",
                      cwd=work, upstream=standin.url)
        wait_until(lambda: (tmp_path / "a").exists() and (tmp_path / "b").exists())
        # $0.40 spent today; a $0.30 daily cap refuses every call from now on, in both
        assert cli("caps", "set", "--daily", "0.30").returncode == 0
        go.touch()
        (a_out, a_err), (b_out, b_err) = finish(a), finish(b)
        sent = len(standin.messages_requests())
    assert (a_out, b_out) == (["200", "429"], ["200", "429"])
    assert sent == 2
    for err in (a_err, b_err):
        assert err.startswith(summary_of(40, 2)) and "1 refused by caps" in err, err
    assert len(status_files(residents)) == 1


# --- a proxy that dies, a stale status file, idle exit ---------------------------------------


def held_reply(hold_s: float = 30.0):
    """A stream whose message_start comes at once; the rest ``hold_s`` later."""
    events = message_events("claude-opus-4-8", input_tokens=8000, output_tokens=300)
    body = serialize_events(events)
    first = body.index(b"\n\n") + 2
    return sse_reply(events, chunk_sizes=[first, len(body)], delay_s=hold_s)


def test_a_killed_shared_proxy_leaves_its_rows_and_the_next_run_starts_another(residents,
                                                                              work, tmp_path):
    with StandIn() as standin:
        standin.default = answer
        standin.enqueue(answer, held_reply())
        a = start_run("sa:2", f"touch:{tmp_path / 'one'}", "sa:8", cwd=work,
                      upstream=standin.url)
        wait_until((tmp_path / "one").exists)
        [doc] = status_files(residents)
        wait_until(lambda: len(standin.messages_requests()) == 2)  # the held call is going
        wait_until(lambda: any(r["status"] == "incomplete" for r in rows(residents.db_file)))
        os.kill(doc["pid"], signal.SIGKILL)  # mid-stream, with run A still going
        a_out, a_err = finish(a)
        b = start_run("sb:3", cwd=work, upstream=standin.url)
        b_out, b_err = finish(b)

    assert a_out[0] == "200" and a_out[1] != "200"  # the held stream broke with the proxy
    assert "METERING FAILED during this run: the metering proxy stopped during this run" in a_err
    assert "every call recorded" not in a_err  # not known: the proxy that knew is gone
    assert b_out == ["200"] and b_err.startswith(summary_of(3, 1)), b_err
    [new] = status_files(residents)  # the dead proxy's file is gone, a new proxy runs
    assert new["pid"] != doc["pid"]
    recorded = {r["session_id"]: r for r in rows(residents.db_file) if r["session_id"] != "sa"}
    killed = [r for r in rows(residents.db_file) if r["session_id"] == "sa"]
    # the call cut by the kill: folded in from the journal by the next start, billed input
    # priced, marked as cut short by the proxy's death, still tagged with run A
    held = [r for r in killed if r["input_tokens"] == 8000]
    assert len(killed) == 2 and len(held) == 1
    assert (held[0]["status"], held[0]["error_type"]) == ("incomplete", "proxy_died")
    assert held[0]["cost_picousd"] == 8 * PER_THOUSAND + 25 * 10**6  # + message_start's
    # one output token ($25 per MTok)
    assert len({r["run_id"] for r in killed}) == 1
    assert recorded["sb"]["run_id"] != killed[0]["run_id"]


def test_stale_status_files_are_ignored_and_removed(residents, work):
    folder = residents.data_dir / proxies.FOLDER
    folder.mkdir(parents=True)
    serves = desk.serves_doc(reverse=False, upstream=None, hosts=["api.anthropic.com"],
                             cloud=[], idle_exit_s=None)
    # a live pid that is no proxy (this test's own), and nothing listening at the address
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused = probe.getsockname()[1]
    # a live pid and an address that answers, but not as ccmeter
    other = http_server()
    stale = [
        {"pid": os.getpid(), "listen": f"127.0.0.1:{refused}",
         "desk": {"port": refused, "token": "0" * 32}},
        {"pid": os.getppid(), "listen": f"127.0.0.1:{other.server_address[1]}",
         "desk": {"port": other.server_address[1], "token": "0" * 32}},
        {"pid": 2**22 + 12345, "listen": "127.0.0.1:1",  # a pid that is gone
         "desk": {"port": 1, "token": "0" * 32}},
    ]
    for doc in stale:
        doc.update(serves=serves, config_file=str(residents.config_file),
                   db_file=str(residents.db_file))
        (folder / f"{doc['pid']}.json").write_text(json.dumps(doc))
    try:
        result = cli("run", "--", sys.executable, "-c", "pass", cwd=work)
    finally:
        other.shutdown()
    assert result.returncode == 0, result.stderr
    [doc] = status_files(residents)
    assert doc["pid"] not in {d["pid"] for d in stale}
    assert "started proxy" in residents.log_file.read_text()


def http_server():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"pid": 1}')

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_proxy_started_by_run_stays_while_runs_use_it_and_exits_once_idle(residents, work,
                                                                            tmp_path):
    residents.config_file.parent.mkdir(parents=True, exist_ok=True)
    residents.config_file.write_text('idle_exit = "2s"\n')
    go = tmp_path / "go"
    with StandIn() as standin:
        standin.default = answer
        a = start_run("sa:1", f"touch:{tmp_path / 'a'}", f"wait:{go}", "sa:1", cwd=work,
                      upstream=standin.url)
        wait_until((tmp_path / "a").exists)
        [doc] = status_files(residents)
        assert doc["serves"]["idle_exit_s"] == 2.0
        time.sleep(4)  # no connection and no call for 4 s, but run A is alive: it stays
        assert proxies.alive(doc["pid"])
        go.touch()
        a_out, a_err = finish(a)
        assert a_out == ["200", "200"] and a_err.startswith(summary_of(2, 2)), a_err
        started = time.monotonic()
        wait_until(lambda: not proxies.alive(doc["pid"]), timeout=15)
    assert 1.5 < time.monotonic() - started < 10
    assert status_files(residents) == []  # a clean stop removes its status file
    assert "idle for 2 s" in residents.log_file.read_text()


def test_serve_answers_as_the_shared_proxy_and_never_forwards_the_credentials(residents):
    """``ccmeter serve`` (as a login service runs it) is joined like any proxy; a plain-HTTP
    request with a run's credentials has them removed before it goes on."""
    from mitm import free_port, wait_for_port

    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "ccmeter.cli", "serve", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        wait_until(lambda: any(d.get("desk") for d in status_files(residents)))
        [doc] = status_files(residents)
        answer_doc = desk.hello(desk.address(doc), "0123456789abcdef")
        assert answer_doc["pid"] == serve.pid
        with StandIn() as other:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            creds = base64.b64encode(b"run-0123456789abcdef:cA").decode()
            conn.request("GET", f"http://127.0.0.1:{other.port}/plain",
                         headers={"Proxy-Authorization": f"Basic {creds}"})
            assert conn.getresponse().status == 200
            assert "proxy-authorization" not in {k.lower() for k in other.requests[0].headers}
        result = cli("run", "--", sys.executable, "-c", "pass")
        assert result.returncode == 0, result.stderr
        assert f"joined proxy {serve.pid}" in residents.log_file.read_text()
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(20)


# --- the real Claude Code CLI ----------------------------------------------------------------


@pytest.mark.realclient
def test_real_claude_code_sessions_share_one_proxy(residents, user_home, work):
    from realclients import claude_bin

    from ccmeter.money import spend_usd

    claude = claude_bin()
    (user_home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-ant-api03-dummy-test-key",
               DISABLE_AUTOUPDATER="1")

    def reply(rec):
        return sse_reply(message_events((rec.json or {}).get("model", "claude-opus-4-8"),
                                        text="Hello.", input_tokens=20_000, output_tokens=5))

    def run(project: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "ccmeter.cli", "run", "--upstream", standin.url,
             "--project", project, "--", claude, "-p", f"hi from {project}"],
            env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    with StandIn() as standin:
        standin.default = reply
        first = run("alpha")
        time.sleep(1.0)
        second = run("beta")  # overlaps the first
        outs = [p.communicate(timeout=180) for p in (first, second)]
        sent = standin.messages_requests()
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    recorded = rows(residents.db_file)
    assert len(recorded) == len(sent) >= 2
    assert all("proxy-authorization" not in {k.lower() for k in r.headers} for r in sent)
    for (_, err), project in zip(outs, ("alpha", "beta"), strict=True):
        mine = [r for r in recorded if r["project"] == project]
        assert mine and len({r["run_id"] for r in mine}) == 1
        calls, cost = len(mine), sum(r["cost_picousd"] for r in mine)
        assert err.startswith(f"ccmeter: this run {spend_usd(cost)} ({calls} "
                              f"call{'s' * (calls != 1)}, 1 session)"), err
    assert {r["project"] for r in recorded} == {"alpha", "beta"}
    assert len(status_files(residents)) == 1
    assert residents.log_file.read_text().count("started proxy") == 1


def test_a_run_with_another_upstream_starts_a_shared_proxy_of_its_own(residents, work):
    """Not refused, not sent to the wrong upstream: a run whose --upstream differs from the
    running proxy's starts another shared proxy, which the next run with it joins."""
    with StandIn() as first, StandIn() as second:
        first.default = second.default = answer
        a = start_run("sa:1", cwd=work, upstream=first.url)
        a_out, a_err = finish(a)
        b = start_run("sb:2", cwd=work, upstream=second.url)
        b_out, b_err = finish(b)
        c = start_run("sc:3", cwd=work, upstream=first.url)
        c_out, c_err = finish(c)
        sent = (len(first.messages_requests()), len(second.messages_requests()))
    assert (a_out, b_out, c_out) == (["200"], ["200"], ["200"])
    assert sent == (2, 1)
    assert (a_err.startswith(summary_of(1, 1)) and b_err.startswith(summary_of(2, 1))
            and c_err.startswith(summary_of(3, 1))), (a_err, b_err, c_err)
    docs = status_files(residents)
    assert sorted(d["serves"]["upstream"] for d in docs) == sorted([first.url, second.url])
    log = residents.log_file.read_text()
    assert log.count("started proxy") == 2 and log.count("joined proxy") == 3
