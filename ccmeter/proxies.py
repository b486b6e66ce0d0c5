"""Which ccmeter proxies are running, what they read and write, and whether they meter.

Every running meter (``ccmeter run``, ``ccmeter serve``, ``mitmdump -s``) keeps a small JSON
file, ``<data folder>/proxies/<pid>.json``, written atomically when it starts and whenever
its metering state changes, and removed when it stops cleanly::

    {"pid": 4242, "started_at": "2026-11-30T05:00:00Z", "listen": "127.0.0.1:8337",
     "config_file": "/home/me/.config/ccmeter/config.toml",
     "db_file": "/home/me/.local/share/ccmeter/ccmeter.db",
     "metering": "failing", "reason": "cannot write to …: database is locked", "since": "…",
     "config_error": "[prices]: … (the previous caps and prices stay)"}

``ccmeter doctor`` lists them and fails when one reads another config file than the CLI
writes, or meters into another database, or is failing; the status line and ``run``'s
summary show a failing meter. A file whose process is gone (killed) is ignored and removed.

The file is also written to the platform's default data folder when the proxy's own is
another one (a ``CCMETER_HOME`` that the CLI does not have, or the reverse), so that a CLI
and a proxy that disagree about where things are still find each other. No SQLite here:
the status line reads these files on every prompt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ccmeter import config
from ccmeter.desk import STATUS_FOLDER, alive

log = logging.getLogger(__name__)

FOLDER = STATUS_FOLDER


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def status_dirs(where: config.Paths) -> list[Path]:
    """The folders a proxy with these paths writes its status to (and doctor reads)."""
    env = {k: v for k, v in os.environ.items() if k != "CCMETER_HOME"}
    dirs = [where.data_dir / FOLDER]
    with contextlib.suppress(Exception):
        default = config.paths(env).data_dir / FOLDER
        if default != dirs[0]:
            dirs.append(default)
    return dirs


class ProxyStatus:
    """This process's status file. Best effort: a status that cannot be written is logged
    once and never disturbs the proxy."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {}
        self._files: list[Path] = []
        self._lock = threading.Lock()
        self._warned = False
        #: How many times metering has failed since this proxy started, and the last reason
        #: (a shared proxy tells each run whether it failed during that run).
        self.failed_times = 0
        self.last_reason: str | None = None

    def start(self, where: config.Paths, *, failing: str | None = None,
              since: float | None = None) -> None:
        with self._lock:
            self._remove()
            self.doc = {
                "pid": os.getpid(), "started_at": _iso(time.time()),
                "listen": self.doc.get("listen"), "serves": self.doc.get("serves"),
                "config_file": str(where.config_file), "db_file": str(where.db_file),
                "config_error": self.doc.get("config_error"),
                "run_config": self.doc.get("run_config"), "desk": self.doc.get("desk"),
                "metrics": self.doc.get("metrics"),
            }  # not the command line: `ccmeter run -- claude -p "…"` holds a prompt
            self._set_state(failing, since)
            self._files = [d / f"{os.getpid()}.json" for d in status_dirs(where)]
            self._write()

    def listening(self, address: str | None) -> None:
        with self._lock:
            self.doc["listen"] = address
            self._write()

    def serves(self, doc: dict[str, Any]) -> None:
        """What this proxy serves (mode, upstream, hosts; see :mod:`ccmeter.resident`), so
        that a ``ccmeter run`` can tell whether to join it."""
        with self._lock:
            self.doc["serves"] = doc
            self._write()

    def metrics(self, url: str | None) -> None:
        """Where this proxy serves Prometheus metrics (``ccmeter doctor`` says it)."""
        with self._lock:
            self.doc["metrics"] = url
            self._write()

    def desk(self, doc: dict[str, Any]) -> None:
        """Where runs reach this proxy's desk, and the token its answers prove they know (see
        :mod:`ccmeter.desk`)."""
        with self._lock:
            self.doc["desk"] = doc
            self._write()

    def run_config(self, doc: dict[str, Any]) -> None:
        """What ``ccmeter run`` needs from the config file, as this proxy read it (see
        :func:`ccmeter.configcheck.for_runs`)."""
        with self._lock:
            self.doc["run_config"] = doc
            self._write()

    def metering(self, failing: str | None, since: float | None = None) -> None:
        """The writer's state changed: ``failing`` is why rows cannot be written, or None."""
        with self._lock:
            if failing:
                self.failed_times += 1
                self.last_reason = failing
            self._set_state(failing, since)
            self._write()

    def config_state(self, problem: str | None) -> None:
        """The config it re-read could not be applied (``problem``), or it could (None)."""
        with self._lock:
            if self.doc.get("config_error") == problem:
                return
            self.doc["config_error"] = problem
            self._write()

    def share_state(self, problem: str | None) -> None:
        """The team share cannot be read (``problem``), or it can again (None)."""
        with self._lock:
            if self.doc.get("share_error") == problem:
                return
            self.doc["share_error"] = problem
            self._write()

    def stop(self) -> None:
        with self._lock:
            self._remove()
            self._files = []

    def _set_state(self, failing: str | None, since: float | None) -> None:
        self.doc["metering"] = "failing" if failing else "ok"
        self.doc["reason"] = failing
        self.doc["since"] = _iso(since or time.time()) if failing else None

    def _write(self) -> None:
        if not self._files:
            return
        data = json.dumps(self.doc, ensure_ascii=True, indent=1)
        for path in self._files:
            try:
                config.ensure_private_dir(path.parent)
                tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
                # the owner's only: the file names the desk's token
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(data)
                os.replace(tmp, path)
            except OSError as exc:
                if not self._warned:
                    self._warned = True
                    log.warning("ccmeter: cannot write the proxy status file %s: %s", path, exc)

    def _remove(self) -> None:
        for path in self._files:
            with contextlib.suppress(OSError):
                path.unlink()


def running(where: config.Paths, *, clean: bool = True) -> list[dict[str, Any]]:
    """The status of every running proxy that left a file where ``where`` looks, by pid.
    Files of processes that are gone are removed (``clean``) and left out."""
    found: dict[int, dict[str, Any]] = {}
    for folder in status_dirs(where):
        try:
            files = sorted(folder.glob("*.json"))
        except OSError:
            continue
        for path in files:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(doc, dict):
                continue
            if not alive(doc.get("pid")):
                if clean:
                    with contextlib.suppress(OSError):
                        path.unlink()
                continue
            found.setdefault(doc["pid"], {**doc, "status_file": str(path)})
    return [found[pid] for pid in sorted(found)]


def failing(where: config.Paths) -> list[dict[str, Any]]:
    """Running proxies whose metering is failing (the status line's one question)."""
    return [doc for doc in running(where, clean=False) if doc.get("metering") == "failing"]


def mismatches(doc: dict[str, Any], where: config.Paths) -> list[str]:
    """How a running proxy disagrees with the CLI about where things are."""
    problems = []
    for key, mine, label in (("config_file", where.config_file, "reads its config from"),
                             ("db_file", where.db_file, "meters into")):
        theirs = doc.get(key)
        if theirs and _same(theirs, mine) is False:
            problems.append(f"{label} {theirs}, not {mine}")
    return problems


def _same(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return str(a) == str(b)


def listen_text(addrs: Any) -> str | None:
    """``127.0.0.1:8337`` from mitmproxy's ``listen_addrs()`` ((host, port, …) tuples)."""
    text = ", ".join(f"{a[0]}:{a[1]}" for a in addrs if isinstance(a, tuple) and len(a) >= 2)
    return text or None


def answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Does anything accept connections on ``host:port`` (``ccmeter env``'s check that the
    shell it sets up will reach a proxy)?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
