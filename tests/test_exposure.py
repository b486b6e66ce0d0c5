"""A proxy that listens beyond this machine says so: the addon warns under a real mitmdump
started without --listen-host (no traffic is sent anywhere), and every mitmdump line in the
README and docs binds to loopback."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccmeter import exposure
from ccmeter.cli import app
from tests.mitm import ADDON, MITMDUMP, free_port

ROOT = Path(__file__).resolve().parent.parent
WARNING = "not only on this machine"


@pytest.mark.parametrize(("addrs", "shown"), [
    ([("0.0.0.0", 8080), ("::", 8080, 0, 0)], ["*:8080"]),
    ([("127.0.0.1", 8080)], []),
    ([("127.0.0.5", 8080), ("::1", 8080, 0, 0)], []),
    ([("::ffff:127.0.0.1", 8080, 0, 0)], []),
    ([("192.168.1.20", 8337)], ["192.168.1.20:8337"]),
    ([("fe80::1%eth0", 8337, 0, 2)], ["[fe80::1%eth0]:8337"]),
    ([("localhost", 8337)], []),
    ([("proxy.example.org", 8337)], ["proxy.example.org:8337"]),
])
def test_what_counts_as_exposed(addrs, shown):
    assert exposure.exposed(addrs) == shown


def test_the_status_files_listen_text():
    assert exposure.exposed_text("0.0.0.0:8080, :::8080") == ["*:8080"]
    assert exposure.exposed_text("127.0.0.1:8337") == []
    assert exposure.exposed_text(None) == [] and exposure.exposed_text("garbage") == []


def start(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    port = free_port()
    log = tmp_path / f"mitmdump-{port}.log"
    args = [str(MITMDUMP), "-s", str(ADDON), "-p", str(port),
            "--set", f"confdir={tmp_path / 'ca'}", "--set", "termlog_verbosity=info", *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if proc.poll() is not None:
            raise AssertionError(f"mitmdump exited ({proc.returncode}):\n{content}")
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_a_plain_mitmdump_warns_that_it_listens_everywhere(user_dirs, tmp_path):
    proc, log = start(tmp_path)  # no --listen-host: mitmdump binds every interface
    try:
        text = wait_for(log, WARNING, proc)
        doctor = CliRunner().invoke(app, ["doctor"])  # reads the proxy's status file
    finally:
        stop(proc)
    line = next(line for line in text.splitlines() if WARNING in line)
    assert "--listen-host 127.0.0.1" in line and "*:" in line
    assert doctor.exit_code == 1
    assert "listens beyond this machine" in doctor.output, doctor.output
    assert "--listen-host 127.0.0.1" in doctor.output


def test_a_loopback_mitmdump_does_not_warn(user_dirs, tmp_path):
    proc, log = start(tmp_path, "--listen-host", "127.0.0.1")
    try:
        wait_for(log, "ccmeter: metering into", proc)
        wait_for(log, "listening at 127.0.0.1", proc)
        time.sleep(1.0)  # the running hook comes just after the script loads
        text = log.read_text(errors="replace")
        doctor = CliRunner().invoke(app, ["doctor"])
    finally:
        stop(proc)
    assert WARNING not in text
    assert "127.0.0.1" in doctor.output and "listens beyond" not in doctor.output


def test_every_documented_mitmdump_line_binds_loopback():
    lines = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                 ROOT / "ccmeter" / "commands" / "launch.py"]:
        for code in re.findall(r"`(mitmdump [^`]+)`|^\s*(mitmdump .+)$",
                               path.read_text(), re.M):
            command = code[0] or code[1]
            # a line to run (options past the script), not a mention such as `mitmdump -s`
            if re.search(r"--(allow-hosts|mode|set)\b|\\$", command):
                lines.append((path.name, command))
    assert len(lines) >= 3, lines
    for name, command in lines:
        assert "--listen-host 127.0.0.1" in command, (name, command)
