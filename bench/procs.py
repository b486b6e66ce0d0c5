"""Processes the benchmarks run: the stand-in server, bare mitmdump, mitmdump with ccmeter.

Also reads a process's CPU time and resident memory from ``/proc`` (Linux), so the
benchmarks need nothing beyond the project's own dependencies.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "ccmeter.py"
MITMDUMP = Path(sys.executable).with_name("mitmdump")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as fh:
        return int(fh.read().split()[1]) * PAGE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandInProcess:
    """``bench/standin_server.py`` in its own process (so it never shares the client's GIL)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("standin_server.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.port: int = info["port"]
        self.ca: str = info["ca"]
        self.address = ("127.0.0.1", self.port)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Proxy:
    """A forward-mode ``mitmdump`` on a free loopback port: TLS interception, upstream
    certificates not verified (``ssl_insecure``). With ``meter_home`` it loads ccmeter (the
    file users pass to ``mitmdump -s``), metering calls to ``meter_host``."""

    def __init__(self, name: str, confdir: Path, logdir: Path, *, meter_home: Path | None = None,
                 meter_host: str = "127.0.0.1", pythonpath: str | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.confdir = confdir
        args = [str(MITMDUMP), "-q", "--mode", "regular", "--listen-host", "127.0.0.1",
                "-p", str(self.port), "--set", f"confdir={confdir}", "--set", "ssl_insecure=true",
                "--set", "connection_strategy=lazy"]
        if meter_home is None:
            # No addon sets ``flow.response.stream``, so without this mitmproxy would hold
            # every SSE answer until it ends; 1 byte streams every body from its first chunk.
            args += ["--set", "stream_large_bodies=1"]
        env = dict(os.environ)
        if meter_home is not None:
            args[1:1] = ["-s", str(ADDON)]
            args += ["--set", f"ccmeter_home={meter_home}", "--set", f"ccmeter_hosts={meter_host}"]
            env["CCMETER_HOME"] = str(meter_home)
        if pythonpath:  # another copy of the ccmeter package (an A/B of a change)
            env["PYTHONPATH"] = pythonpath
        self.log_path = logdir / f"{name}-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.address = ("127.0.0.1", self.port)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name}: mitmdump exited: {self.log_text()[-2000:]}")
            try:
                socket.create_connection(self.address, timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: mitmdump did not start") from None
                time.sleep(0.05)
        ca = confdir / "mitmproxy-ca-cert.pem"
        while not ca.exists():
            time.sleep(0.05)
        self.ca = str(ca)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
