"""A real ``mitmdump -s addons/ccmeter.py`` in reverse mode, in the user's own layout.

Only ``HOME`` is set (the conftest's autouse fixture): the proxy reads its config from
``~/.config/ccmeter`` and writes ``~/.local/share/ccmeter/ccmeter.db``, as a newcomer's does.
Not a conftest: imported by name (``from userproxy import UserProxy``) like ``standin``.
"""

from __future__ import annotations

import http.client
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mitm import ADDON, MITMDUMP, MitmDump, free_port


class UserProxy(MitmDump):
    """mitmdump in front of ``upstream`` on a free loopback port; ``stop()`` or ``with``.

    Unlike :class:`MitmDump` it sets no ``ccmeter_home`` and no ``CCMETER_HOME``."""

    def __init__(self, upstream: str, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        self.home = Path(workdir)
        self.port = free_port()
        self.confdir = self.home / "mitmproxy-ca"
        self.log_path = self.home / f"mitmdump-{self.port}.log"
        args = [str(MITMDUMP), "-s", str(ADDON), "--mode", f"reverse:{upstream}",
                "--listen-host", "127.0.0.1", "-p", str(self.port),
                "--set", f"confdir={self.confdir}",
                "--set", "termlog_verbosity=info", "--set", "flow_detail=0",
                "--set", "connection_strategy=lazy", *extra_args]
        self._launch(args, dict(os.environ))

    def rss_mb(self) -> float:
        """The proxy's resident memory now (0 once it has exited)."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def post(self, body: bytes, headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        """POST /v1/messages; (status, lower-case headers, the body bytes as sent, not
        decoded from their content-encoding)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", "/v1/messages?beta=true", body=body, headers={
                "content-type": "application/json", "x-api-key": "sk-ant-api03-test",
                "user-agent": "claude-cli/2.1.197 (external, sdk-cli)", **(headers or {})})
            response = conn.getresponse()
            try:
                data = response.read()
            except http.client.IncompleteRead as exc:
                data = exc.partial
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()


def calls(db: Path, expect: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The rows of the ``calls`` view once ``expect`` of them are final (or at the timeout)."""
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if db.exists():
            conn = sqlite3.connect(db, timeout=10)
            conn.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in conn.execute("SELECT * FROM api_calls ORDER BY rowid")]
            except sqlite3.OperationalError:
                rows = []
            finally:
                conn.close()
            final = [r for r in rows if r["http_status"] is not None or r["status"] == "blocked"]
            if len(final) >= expect and len(final) == len(rows):
                return rows
        time.sleep(0.05)
    return rows
