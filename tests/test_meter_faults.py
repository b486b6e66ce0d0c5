"""Nothing silently off (issue 13 F1 F2 F5 F6 F10; issue 12 Must 1): a value the database
cannot store, a database ccmeter cannot use, a database another process holds locked — the
meter goes on, caps follow ``on_error``, and the user is told. Real HTTP through
``mitmdump -s addons/ccmeter.py`` to the stand-in, in the user's default folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tomlkit
from mitm import TUNNEL
from standin import Reply, StandIn, message_events, sse_reply
from userproxy import UserProxy, calls

from ccmeter import proxies, store
from ccmeter.statusline import statusline_text

# Opus 4.8, 27 input + 14 output tokens: 27 x $5 + 14 x $25 per MTok = $0.000485.
NORMAL_COST = 485 * 10**6


def body(session: str, model: str = "claude-opus-4-8") -> bytes:
    return json.dumps({
        "model": model, "max_tokens": 100, "stream": True,
        "metadata": {"user_id": json.dumps({"session_id": session})},
        "messages": [{"role": "user", "content": "hi"}],
    }).encode()  # ensure_ascii: a lone surrogate travels as \ud800


def ascii_sse(events: list) -> Reply:
    """An event stream whose JSON escapes everything (so a lone surrogate can be sent)."""
    raw = b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events)
    return sse_reply(raw)


def write_config(where, **cfg) -> None:
    where.config_dir.mkdir(parents=True, exist_ok=True)
    tmp = where.config_file.with_suffix(".tmp")
    tmp.write_text(tomlkit.dumps(cfg), encoding="utf-8")
    tmp.replace(where.config_file)


def wait_status(where, proxy: UserProxy) -> dict:
    """The proxy's status file once it has its listen address (written just after the
    ``metering into`` line that UserProxy waits for)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [d for d in proxies.running(where) if d["pid"] == proxy.proc.pid]
        if found and found[0].get("listen"):
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no status file for {proxy.proc.pid}: {proxies.running(where)}")


@pytest.fixture
def standin():
    with StandIn() as server:
        yield server


# (name, request headers, request body session/model, the stand-in's answer)
def killers() -> list[tuple[str, dict, bytes, Reply | None]]:
    def events(**kw):
        return ascii_sse(message_events(**kw))

    error_doc = {"type": "error", "error": {"type": "overloaded_error\ud800", "message": "x"}}
    return [
        ("session header", {"x-claude-code-session-id": "sess-\xff"}, body("k1"), None),
        ("project header", {"x-ccmeter-project": "proj-\xff"}, body("k2"), None),
        ("request model", {}, body("k3", "claude-opus-4-8\ud800"), events()),
        ("answer model", {}, body("k4"), events(model="claude-opus-4-8\ud800")),
        ("stop reason", {}, body("k5"), events(stop_reason="end_turn\ud800")),
        ("message id", {}, body("k6"), events(message_id="msg_\ud800")),
        ("error type", {}, body("k7"), Reply(status=529, headers={
            "content-type": "application/json"}, body=json.dumps(error_doc).encode())),
        ("input tokens", {}, body("k8"), events(input_tokens=2**70)),
        ("output tokens", {}, body("k9"), events(output_tokens=2**65)),
        ("cache read tokens", {}, body("k10"), events(cache_read=10**30)),
        ("cost", {}, body("k11"), events(input_tokens=2**62)),  # $5/MTok: a cost > 2^64
    ]


def test_no_value_stops_the_meter_and_caps_still_apply(standin, user_dirs, tmp_path):
    write_config(user_dirs, caps={"daily": "100", "notify": False})
    cases = killers()
    with UserProxy(standin.url, tmp_path) as proxy:
        for name, headers, payload, reply in cases:
            if reply is not None:
                standin.enqueue(reply)
            proxy.post(payload, headers)
            started = time.monotonic()
            status, _, _ = proxy.post(body(f"normal after {name}"))
            assert status == 200, name
            assert time.monotonic() - started < 1.5, f"{name}: the next call waited"
        rows = calls(user_dirs.db_file, 2 * len(cases))
        recorded = {r["session_id"] for r in rows}
        missing = [name for name, *_ in cases if f"normal after {name}" not in recorded]
        assert not missing, f"not recorded after: {missing}\n{proxy.log_text()[-3000:]}"
        assert len(rows) == 2 * len(cases)  # every bad call has its row too
        normal = [r for r in rows if (r["session_id"] or "").startswith("normal after")]
        assert {r["cost_picousd"] for r in normal} == {NORMAL_COST}
        assert "Traceback" not in proxy.log_text()
        # and caps still see what is recorded: a cap under today's spend refuses the next call
        write_config(user_dirs, caps={"daily": "0.001", "notify": False})
        status, _, answer = proxy.post(body("over the cap"))
        assert status == 429 and b"daily cap $0.001 reached" in answer


def test_a_corrupt_database_with_on_error_block_refuses_then_recovers(standin, user_dirs,
                                                                      tmp_path, monkeypatch):
    write_config(user_dirs, caps={"daily": "10", "on_error": "block", "notify": False})
    user_dirs.data_dir.mkdir(parents=True)
    user_dirs.db_file.write_bytes(b"this is not a database " * 200)
    with UserProxy(standin.url, tmp_path) as proxy:
        wait_status(user_dirs, proxy)
        for _ in range(3):
            status, _, answer = proxy.post(body("s1"))
            assert status == 429, proxy.log_text()[-2000:]
            assert b"spending caps cannot be checked" in answer
            assert b"not a database" in answer
        assert standin.messages_requests() == []  # nothing went through unmetered
        log = proxy.log_text()
        assert "metering stopped: cannot write to" in log and "Traceback" not in log
        # the user is told: the proxy's status file, doctor
        [doc] = proxies.running(user_dirs)
        assert doc["pid"] == proxy.proc.pid and doc["metering"] == "failing"
        assert "not a database" in doc["reason"]
        doctor = ccmeter_cli("doctor")
        text = " ".join(doctor.stdout.split())
        assert doctor.returncode == 1
        assert f"FAIL proxy {proxy.proc.pid} (127.0.0.1:{proxy.port}): metering FAILING" in text
        # the file moved aside: the next call tries again, is let through and recorded
        user_dirs.db_file.rename(user_dirs.data_dir / "broken.db")
        status, _, _ = proxy.post(body("s2"))
        assert status == 200, proxy.log_text()[-2000:]
        rows = calls(user_dirs.db_file, 4)
    assert [r["status"] for r in rows].count("blocked") == 3
    assert [r["session_id"] for r in rows if r["status"] == "ok"] == ["s2"]
    assert "metering works again" in proxy.log_text()
    assert proxies.running(user_dirs) == []  # a clean stop removes the status file


def test_eight_clients_against_a_locked_database_stay_within_the_bound(standin, user_dirs,
                                                                        tmp_path):
    write_config(user_dirs, caps={"daily": "100", "notify": False})
    store.connect(user_dirs.db_file).conn.close()
    bound = store.CAP_CHECK_WAIT_MS / 1000
    with UserProxy(standin.url, tmp_path) as proxy:
        assert proxy.post(body("warm"))[0] == 200
        lock = sqlite3.connect(user_dirs.db_file, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        latencies: list[float] = []
        statuses: list[int] = []

        def client(n: int) -> None:
            for i in range(5):
                started = time.monotonic()
                status, _, _ = proxy.post(body(f"c{n}-{i}"), timeout=60)
                latencies.append(time.monotonic() - started)
                statuses.append(status)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        rows = calls(user_dirs.db_file, 41, timeout=30)
    latencies.sort()
    p50, p90 = statistics.median(latencies), latencies[int(len(latencies) * 0.9)]
    print(f"\n8 clients x 5 calls, database write-locked: p50 {p50:.3f} s, "
          f"p90 {p90:.3f} s, max {latencies[-1]:.3f} s (bound {bound:g} s)")
    assert statuses == [200] * 40  # on_error = "allow": let through, and ...
    assert latencies[-1] < bound + 0.5
    assert len(rows) == 41  # ... every row written once the lock is gone


def _chattr(path: Path, flag: str) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not available")
    if subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode:
        pytest.skip("this file system has no immutable flag")


def test_a_read_only_database_is_written_once_it_is_writable(standin, user_dirs, tmp_path):
    store.connect(user_dirs.db_file).conn.close()
    _chattr(user_dirs.db_file, "+i")  # read-only even for root
    try:
        with UserProxy(standin.url, tmp_path) as proxy:
            wait_status(user_dirs, proxy)
            assert proxy.post(body("while read-only"))[0] == 200
            assert "readonly" in proxy.log_text()
            [doc] = proxies.running(user_dirs)
            assert doc["metering"] == "failing"
            assert statusline_text("{}").startswith("⚠ metering off (ccmeter doctor) · today")
            _chattr(user_dirs.db_file, "-i")
            assert proxy.post(body("writable again"))[0] == 200
            rows = calls(user_dirs.db_file, 2)
            assert proxies.running(user_dirs)[0]["metering"] == "ok"
            assert "metering off" not in statusline_text("{}")
    finally:
        _chattr(user_dirs.db_file, "-i")
    assert {r["session_id"] for r in rows} == {"while read-only", "writable again"}


def test_the_data_folder_deleted_while_running_is_made_anew(standin, user_dirs, tmp_path):
    with UserProxy(standin.url, tmp_path) as proxy:
        assert proxy.post(body("before"))[0] == 200
        assert len(calls(user_dirs.db_file, 1)) == 1
        shutil.rmtree(user_dirs.data_dir)
        assert proxy.post(body("after"))[0] == 200
        rows = calls(user_dirs.db_file, 1)
        assert "deleted or replaced while running" in proxy.log_text()
        [doc] = proxies.running(user_dirs)  # its status file is back too
        assert doc["pid"] == proxy.proc.pid and doc["metering"] == "ok"
    assert [r["session_id"] for r in rows] == ["after"]


def ccmeter_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccmeter.cli", *args], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


def test_doctor_flags_a_proxy_that_reads_another_config_file(standin, user_dirs, tmp_path):
    # the bug of issue 12: a proxy handed the data folder as its home read
    # ~/.local/share/ccmeter/config.toml while the CLI wrote ~/.config/ccmeter/config.toml
    args = ["--set", f"ccmeter_home={user_dirs.data_dir}"]
    with UserProxy(standin.url, tmp_path, extra_args=args) as stray:
        wait_status(user_dirs, stray)
        doctor = ccmeter_cli("doctor")
        assert doctor.returncode == 1
        line = next(x for x in doctor.stdout.splitlines() if f"proxy {stray.proc.pid}" in x)
        assert line.startswith("FAIL")
        text = " ".join(doctor.stdout.split())
        assert (f"reads its config from {user_dirs.data_dir / 'config.toml'}, not "
                f"{user_dirs.config_file}") in text
    with UserProxy(standin.url, tmp_path) as good:
        wait_status(user_dirs, good)
        doctor = ccmeter_cli("doctor")
        line = next(x for x in doctor.stdout.splitlines() if f"proxy {good.proc.pid}" in x)
        assert line.startswith("ok") and "metering ok" in line, doctor.stdout
    assert f"proxy {stray.proc.pid}" not in ccmeter_cli("doctor").stdout  # stopped: gone


def test_a_killed_proxy_leaves_no_running_status(user_dirs):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = user_dirs.data_dir / "proxies"
    folder.mkdir(parents=True)
    (folder / f"{dead.pid}.json").write_text(json.dumps({"pid": dead.pid, "metering": "failing"}))
    assert proxies.running(user_dirs) == []
    assert not (folder / f"{dead.pid}.json").exists()


# A client like Claude Code: HTTPS through HTTPS_PROXY, trusting NODE_EXTRA_CA_CERTS.
CLIENT = TUNNEL + """
conn = tunnel(30)
conn.request("POST", "/v1/messages", body=json.dumps({"model": "claude-opus-4-8",
    "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
    headers={"content-type": "application/json", "x-api-key": "sk-ant-api03-dummy"})
reply = conn.getresponse()
reply.read()
print(reply.status, flush=True)
"""


def test_run_says_when_metering_failed(standin, user_dirs, tmp_path):
    user_dirs.data_dir.mkdir(parents=True)
    user_dirs.db_file.write_bytes(b"this is not a database " * 200)
    result = ccmeter_cli("run", "--upstream", standin.url, "--", sys.executable, "-c", CLIENT)
    assert result.stdout.split() == ["200"], result.stderr  # on_error = "allow"
    assert ("ccmeter: METERING FAILED during this run (1 call not recorded): cannot write to "
            f"{user_dirs.db_file}: DatabaseError: file is not a database") in result.stderr
    assert result.stderr.startswith("ccmeter: WARNING: metering is not working: cannot write")
    assert "Traceback" not in result.stderr


def test_serve_says_when_metering_stops_and_works_again(standin, user_dirs, tmp_path):
    from mitm import free_port, wait_for_port

    user_dirs.data_dir.mkdir(parents=True)
    user_dirs.db_file.write_bytes(b"this is not a database " * 200)
    port, err = free_port(), tmp_path / "serve.err"
    with open(err, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ccmeter.cli", "serve", "--reverse",
                                 "--port", str(port), "--upstream", standin.url],
                                stdout=subprocess.DEVNULL, stderr=out)
    try:
        wait_for_port(port, proc=proc)
        deadline = time.monotonic() + 10
        while "metering is not working" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "WARNING: metering is not working: cannot write to" in err.read_text()
        user_dirs.db_file.rename(user_dirs.data_dir / "broken.db")  # moved aside
        while "metering works again" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "ccmeter: metering works again" in err.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert "Traceback" not in err.read_text()


def test_a_data_folder_that_cannot_be_made_blocks_calls_with_on_error_block(standin, user_dirs,
                                                                           tmp_path):
    write_config(user_dirs, caps={"daily": "10", "on_error": "block", "notify": False})
    user_dirs.data_dir.parent.mkdir(parents=True)
    user_dirs.data_dir.write_text("a file where ccmeter's data folder should be")
    with UserProxy(standin.url, tmp_path) as proxy:
        status, _, answer = proxy.post(body("s1"))
        assert status == 429, proxy.log_text()[-2000:]
        assert b"spending caps cannot be checked" in answer
    assert standin.messages_requests() == []
