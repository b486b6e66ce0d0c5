"""Run the real addon under a real ``mitmdump`` process, as a user would, for tests."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADDON = ROOT / "addons" / "ccmeter.py"
MITMDUMP = Path(sys.executable).with_name("mitmdump")


# The start of every scripted client that talks like Claude Code: HTTPS to api.anthropic.com
# through the proxy in HTTPS_PROXY (sending its credentials, as Node, curl and requests do:
# they tag a `ccmeter run`'s calls), trusting the CA in NODE_EXTRA_CA_CERTS. A client's own
# code follows it and opens connections with `tunnel(timeout)`.
TUNNEL = """
import base64, http.client, json, os, ssl, sys, time
from urllib.parse import urlsplit
proxy = urlsplit(os.environ["HTTPS_PROXY"])
auth = {"Proxy-Authorization": "Basic " + base64.b64encode(
    f"{proxy.username}:{proxy.password}".encode()).decode()} if proxy.username else {}
ctx = ssl.create_default_context(cafile=os.environ["NODE_EXTRA_CA_CERTS"])

def tunnel(timeout):
    conn = http.client.HTTPSConnection(proxy.hostname, proxy.port, context=ctx,
                                       timeout=timeout)
    conn.set_tunnel("api.anthropic.com", 443, headers=auth)
    return conn
"""

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mitmdump exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


class MitmDump:
    """``mitmdump -s addons/ccmeter.py`` on a free loopback port, with its own confdir.

    ``mode`` is ``"regular"`` (forward proxy, TLS interception) or ``"reverse:URL"``.
    """

    def __init__(self, home: Path, mode: str = "regular", *, sets: dict[str, Any] | None = None,
                 port: int | None = None, script: Path | str = ADDON) -> None:
        self.home = Path(home)
        self.port = port or free_port()
        self.confdir = self.home / "ca"
        self.log_path = self.home / f"mitmdump-{self.port}.log"
        args = [
            str(MITMDUMP), "-s", str(script), "--mode", mode,
            "--set", "termlog_verbosity=info", "--set", "flow_detail=0",
            "--listen-host", "127.0.0.1", "-p", str(self.port),
            "--set", f"confdir={self.confdir}",
            "--set", f"ccmeter_home={self.home}",
            "--set", "connection_strategy=lazy",
        ]
        for key, value in (sets or {}).items():
            values = value if isinstance(value, list) else [value]
            for item in values:
                args += ["--set", f"{key}={item}"]
        self._launch(args, dict(os.environ, CCMETER_HOME=str(self.home)))

    def _launch(self, args: list[str], env: dict[str, str]) -> None:
        """Start ``args`` logging to ``self.log_path``; return once the addon listens."""
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_for_addon()
        except BaseException:
            self.stop()
            raise

    def _wait_for_addon(self, timeout: float = 30.0) -> None:
        """mitmproxy loads ``-s`` scripts from a watcher task, so the port may accept
        connections before the addon exists: wait for the addon's own log line too."""
        deadline = time.monotonic() + timeout
        while b"ccmeter: metering into" not in self.log_path.read_bytes():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited early: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ccmeter addon did not load: {self.log_text()[-2000:]}")
            time.sleep(0.05)
        wait_for_port(self.port, proc=self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> MitmDump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def db_rows(home: Path, sql: str = "SELECT * FROM api_calls ORDER BY started_ts",
            params: tuple = (), expect: int | None = None, timeout: float = 10.0) -> list[dict]:
    """Read rows from the database the proxy writes (waiting until ``expect`` rows exist)."""
    path = Path(home) / "ccmeter.db"
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        if path.exists():
            conn = sqlite3.connect(path, timeout=10)
            conn.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in conn.execute(sql, params)]
            except sqlite3.OperationalError:
                rows = []
            finally:
                conn.close()
            if expect is None or (len(rows) >= expect and _settled(rows)):
                return rows
        time.sleep(0.05)
    return rows


def _settled(rows: list[dict]) -> bool:
    """Rows are first written 'incomplete' at message_start; wait for their final write."""
    return all(r.get("http_status") is not None or r.get("status") == "blocked" for r in rows
               if "http_status" in r or "status" in r)


def post_json(body: dict) -> bytes:
    return json.dumps(body).encode()
