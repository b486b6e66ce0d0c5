"""``ccmeter run`` when a proxy is up: the quick path (issue 14) joins it without the CLI.

Every test runs the console script's own module (``python -m ccmeter.entry``) in a user's
layout (HOME only, platform folders), against a real resident proxy and the stand-in.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from standin import StandIn
from test_resident import (
    CLIENT,
    PER_THOUSAND,
    answer,
    cli,
    rows,
    status_files,
    summary_of,
    wait_until,
)

from ccmeter import desk, folders
from ccmeter.money import spend_usd

#: Runs ``ccmeter`` as the console script does and writes the modules it loaded to argv[1].
PROBE = ("import atexit, sys; out = sys.argv.pop(1); "
         "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules)))); "
         "sys.argv[0] = 'ccmeter'; from ccmeter.entry import main; main()")
HEAVY = ("typer", "click", "rich", "mitmproxy", "sqlite3", "sqlite_utils", "tomllib",
         "ccmeter.cli", "ccmeter.launch", "ccmeter.store", "ccmeter.pricing", "subprocess")


def probe(out: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, str(out), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def the_proxy(residents) -> dict:
    [doc] = status_files(residents)
    return doc


def test_a_run_joins_a_running_proxy_without_the_cli_or_mitmproxy(residents, work, tmp_path):
    with StandIn() as standin:
        standin.default = answer
        first = cli("run", "--upstream", standin.url, "--", sys.executable, "-c", CLIENT,
                    "s1:2", cwd=work)
        assert first.returncode == 0, first.stderr
        loaded = tmp_path / "modules"
        quick = probe(loaded, "run", "--upstream", standin.url, "--", sys.executable, "-c",
                      CLIENT, "s2:3", "s2:4", cwd=work)
        full = subprocess.run([sys.executable, "-m", "ccmeter.cli", "run", "--upstream",
                               standin.url, "--", sys.executable, "-c", CLIENT, "s3:5"],
                              cwd=work, capture_output=True, text=True, timeout=120)
    assert quick.returncode == 0, quick.stderr
    assert quick.stdout.split() == ["200", "200"]
    modules = set(loaded.read_text().split())
    assert "ccmeter.quickrun" in modules
    assert not [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY], modules
    # the same summary line as the full path gives, from the proxy's rows of this run
    assert quick.stderr.startswith(summary_of(7, 2)), quick.stderr
    assert full.returncode == 0 and full.stderr.startswith(summary_of(5, 1)), full.stderr
    assert f"· today {spend_usd((2 + 7 + 5) * PER_THOUSAND)}" in full.stderr
    recorded = rows(residents.db_file)
    assert [(r["session_id"], r["project"]) for r in recorded] == [
        ("s1", "work"), ("s2", "work"), ("s2", "work"), ("s3", "work")]
    assert len({r["run_id"] for r in recorded}) == 3
    log = residents.log_file.read_text()
    assert log.count("started proxy") == 1 and log.count("joined proxy") == 3


def test_the_quick_path_passes_exit_codes_signals_and_the_project(residents, work, tmp_path):
    (work / ".git").mkdir()
    nested = work / "src"
    nested.mkdir()
    assert cli("run", "--", sys.executable, "-c", "pass", cwd=work).returncode == 0
    loaded = tmp_path / "modules"
    code = probe(loaded, "run", "--", "sh", "-c", "exit 7", cwd=nested)
    assert code.returncode == 7 and "ccmeter: this run $0.00 (0 calls" in code.stderr
    assert "ccmeter.quickrun" in loaded.read_text().split()
    killed = probe(loaded, "run", "--", "sh", "-c", "kill -TERM $$", cwd=nested)
    assert killed.returncode == 128 + 15, killed.stderr
    missing = cli("run", "--", "no-such-command-ccmeter", cwd=work)
    assert missing.returncode == 127
    assert missing.stderr.strip().endswith(
        "command not found: no-such-command-ccmeter (is it installed and on your PATH?)")
    with StandIn() as standin:
        standin.default = answer
        tagged = cli("run", "--project", "billing", "--upstream", standin.url, "--",
                     sys.executable, "-c", CLIENT, "t1:1", cwd=nested)
        repo = cli("run", "--upstream", standin.url, "--", sys.executable, "-c", CLIENT,
                   "t2:1", cwd=nested)
    assert tagged.returncode == 0 and repo.returncode == 0, (tagged.stderr, repo.stderr)
    assert [(r["session_id"], r["project"]) for r in rows(residents.db_file)] == [
        ("t1", "billing"), ("t2", "work")]  # the git repository's folder, from a subfolder


def test_a_config_broken_while_the_proxy_runs_stops_the_next_run(residents, work):
    assert cli("run", "--", sys.executable, "-c", "pass", cwd=work).returncode == 0
    ran = work / "ran"
    command = ("run", "--", sys.executable, "-c", f"open({str(ran)!r}, 'w').close()")
    residents.config_dir.mkdir(parents=True, exist_ok=True)
    residents.config_file.write_text('[caps]\ndaily = "five dollars"\n', encoding="utf-8")
    refused = cli(*command, cwd=work)
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("ccmeter: [caps].daily: ") and "dollar" in refused.stderr
    assert not ran.exists()
    # mended: the next run goes, and the proxy records the file as it now is
    residents.config_file.write_text('[caps]\ndaily = "5"\n', encoding="utf-8")
    assert cli(*command, cwd=work).returncode == 0 and ran.exists()
    wait_until(lambda: the_proxy(residents)["run_config"]["stamp"]
               == folders.stamp(residents.config_file))
    assert "error" not in the_proxy(residents)["run_config"]


def test_config_read_again_when_it_changes_and_its_warnings_shown(residents, work, tmp_path):
    with StandIn() as standin:
        standin.default = answer
        residents.config_file.parent.mkdir(parents=True, exist_ok=True)
        residents.config_file.write_text(f'upstream = "{standin.url}"\n', encoding="utf-8")
        assert cli("run", "--", sys.executable, "-c", "pass", cwd=work).returncode == 0
        residents.config_file.write_text(
            f'upstream = "{standin.url}"\nproject = "from-config"\ncolour = "red"\n',
            encoding="utf-8")
        full = cli("run", "--", sys.executable, "-c", CLIENT, "c1:1", cwd=work)
        loaded = tmp_path / "modules"
        quick = probe(loaded, "run", "--", sys.executable, "-c", CLIENT, "c2:1", cwd=work)
    assert full.returncode == 0 and quick.returncode == 0, (full.stderr, quick.stderr)
    assert "ccmeter.quickrun" in loaded.read_text().split()
    assert "ccmeter.cli" not in loaded.read_text().split()  # the second run was quick
    warning = [line for line in full.stderr.splitlines() if "warning" in line]
    assert warning and "colour" in warning[0]
    assert [line for line in quick.stderr.splitlines() if "warning" in line] == warning
    assert [r["project"] for r in rows(residents.db_file)] == ["from-config", "from-config"]
    assert len(status_files(residents)) == 1  # one proxy served both (the config's upstream)


def test_metering_that_fails_is_said_at_the_start_of_a_quick_run(residents, work):
    assert cli("run", "--", sys.executable, "-c", "pass", cwd=work).returncode == 0
    doc = the_proxy(residents)
    status = residents.data_dir / "proxies" / f"{doc['pid']}.json"
    failing = {**doc, "metering": "failing", "reason": "database is locked"}
    status.write_text(json.dumps(failing), encoding="utf-8")
    result = cli("run", "--", sys.executable, "-c", "pass", cwd=work)
    assert result.returncode == 0
    assert result.stderr.startswith(
        "ccmeter: WARNING: metering is not working: database is locked."), result.stderr


# --- the desk: answers carry the token -------------------------------------------------------


def one_answer_server(reply: bytes) -> tuple[int, threading.Thread]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(reply)
        conn.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


@pytest.mark.parametrize("reply", [
    b'{"ccmeter": 1, "pid": 1, "proof": "0123456789abcdef0123456789abcdef"}\n',
    b'{"ccmeter": 1, "pid": 1, "token": "' + b"a" * 32 + b'"}\n',  # the token is no proof
    b'{"ccmeter": 1, "pid": 1}\n',
    b"HTTP/1.1 400 Bad Request\r\n\r\n",
    b"",
])
def test_an_answer_without_the_token_is_not_the_proxy(reply):
    port, thread = one_answer_server(reply)
    with pytest.raises(desk.DeskError):
        desk.hello((port, "a" * 32), "0123456789abcdef")
    thread.join(5)


def test_the_proof_is_a_keyed_hash_of_the_nonce_and_the_token_never_sent(residents, work):
    assert desk.proof("a" * 32, "n" * 32) == desk.proof("a" * 32, "n" * 32)
    assert desk.proof("a" * 32, "n" * 32) != desk.proof("b" * 32, "n" * 32)
    assert desk.proof("a" * 32, "n" * 32) != desk.proof("a" * 32, "m" * 32)
    assert cli("run", "--", sys.executable, "-c", "pass", cwd=work).returncode == 0
    doc = the_proxy(residents)
    port, token = desk.address(doc)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b'{"op": "hello", "run": "0123456789abcdef", "nonce": "' + b"n" * 32
                     + b'"}\n')
        answer = json.loads(sock.makefile().readline())
    assert answer["pid"] == doc["pid"] and answer["proof"] == desk.proof(token, "n" * 32)
    assert token not in json.dumps(answer)
    with pytest.raises(desk.DeskError):
        desk.hello((port, "f" * 32), "0123456789abcdef")


def test_the_desk_survives_what_is_not_a_run(residents, work):
    assert cli("run", "--", sys.executable, "-c", "pass", cwd=work).returncode == 0
    where = desk.address(the_proxy(residents))
    assert where is not None
    for junk in (b"not json\n", b"[1, 2]\n", b'{"op": "bye"}\n', b"x" * 200_000, b""):
        with socket.create_connection(("127.0.0.1", where[0]), timeout=10) as sock, \
                contextlib.suppress(OSError):  # the desk may close first
            sock.sendall(junk)  # an overlong line is cut off, the rest closed unanswered
            sock.shutdown(socket.SHUT_WR)
            assert b"proof" not in sock.recv(65536)  # not one of them is answered
    assert desk.hello(where, "0123456789abcdef")["pid"] == the_proxy(residents)["pid"]
    assert desk.address({"desk": {"port": True, "token": "x"}}) is None
    assert desk.address({"desk": {"port": 8000, "token": ""}}) is None
    assert os.environ.get("CCMETER_HOME") is None  # a user's layout


def test_caps_made_invalid_during_a_run_are_said_in_its_summary(residents, work):
    residents.config_dir.mkdir(parents=True, exist_ok=True)
    residents.config_file.write_text('[caps]\ndaily = "5"\n', encoding="utf-8")
    breaker = f"open({str(residents.config_file)!r}, 'a').write('dialy = \"1\"\\n')"
    result = cli("run", "--", sys.executable, "-c", breaker, cwd=work)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().endswith(
        "caps not applied: [caps] in the config is invalid (see ccmeter doctor)"), result.stderr
    assert "Traceback" not in residents.log_file.read_text()


def test_a_mistyped_option_or_a_file_that_cannot_run_is_said_so(residents, work):
    typo = cli("run", "--projet", "x", "--", "true", cwd=work)
    assert typo.returncode == 2
    assert typo.stderr.startswith("ccmeter: no such option: --projet (did you mean --project?)")
    text = work / "notes.txt"
    text.write_text("not a program\n")
    for target, why in ((text, "permission denied (not executable)"), (work, "it is a folder")):
        result = cli("run", "--", str(target), cwd=work)
        assert result.returncode == 126, result.stderr
        assert result.stderr.strip() == f"ccmeter: cannot run {target}: {why}"
