"""One resident proxy for every ``ccmeter run``: find it, or start it, and talk to it.

``ccmeter run`` no longer starts a proxy of its own each time. It joins a ccmeter proxy
already running for this user (started by an earlier ``run``, by ``ccmeter serve``, or by a
login service) whose settings suit it, and starts one only when none is up:

- **Discovery** builds on the status files of :mod:`ccmeter.proxies`: each proxy says there
  where it listens and what it serves (mode, upstream, metered hosts, clouds). A file whose
  process is gone is dropped there; a file whose address refuses, or answers with another
  pid (a reused pid), is stale and removed here. The check is a hello to the proxy's desk
  (:mod:`ccmeter.desk`), whose answer must carry the token in the status file: an address
  that does not answer as that proxy is not joined.
- **Concurrency**: "find or start" runs under an exclusive ``flock`` on
  ``<data folder>/proxies/start.lock``, so two runs starting at once start one proxy.
- **A run's own calls**: the child's ``HTTPS_PROXY`` carries the run in its credentials,
  ``http://run-<id>:<project>@127.0.0.1:PORT``. Every HTTP client that honours
  ``HTTPS_PROXY`` (Node's undici in Claude Code, curl, Python) sends them as
  ``Proxy-Authorization`` on its ``CONNECT``; the proxy reads them there, tags every call in
  that tunnel, and no byte of them goes further (a CONNECT ends at the proxy; a plain-HTTP
  request has the header removed). A per-run header would need each client's cooperation
  (``ANTHROPIC_CUSTOM_HEADERS`` replaces the user's own) and would travel inside the TLS
  stream towards the API until stripped.
- **The end of a run**: ``bye`` waits until the run's calls have ended and their rows are on
  disk, and answers with the run's summary, made from the rows tagged with the run's id.
- **The quick path**: when a suitable proxy is up and has read the config as it is now,
  :mod:`ccmeter.quickrun` does all of this without the CLI; this module is the full path.

A proxy started by ``run`` is ``ccmeter serve --idle-exit …`` in a session of its own: it
outlives the run while others use it and exits once idle (no run alive, no connection open,
no call) for ``idle_exit`` (config, default 10 minutes). No mitmproxy in this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccmeter import config, desk, proxies
from ccmeter.desk import DeskError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
LOCK_NAME = "start.lock"


# --- what a run needs of a proxy -------------------------------------------------------------


@dataclass(frozen=True)
class Needs:
    """The settings a run's calls need: a proxy that is not in reverse mode, sends to the
    same upstream, and decrypts at least these hosts and clouds."""

    upstream: str | None
    hosts: tuple[str, ...]
    cloud: tuple[str, ...] = ()
    #: The OTLP endpoint the run's environment names (a proxy pushing there, else its own).
    otlp: str | None = None

    def served_by(self, doc: Mapping[str, Any], where: config.Paths) -> bool:
        return (desk.serves(doc, self.upstream, self.hosts, self.cloud, self.otlp)
                and not proxies.mismatches(dict(doc), where))


# --- find or start ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    pid: int
    port: int
    desk: tuple[int, str]  # its desk's port and token (see :mod:`ccmeter.desk`)
    started: bool  # this run started it
    failing: str | None = None  # why it cannot meter right now (its status file), or None


@contextlib.contextmanager
def start_lock(where: config.Paths) -> Iterator[None]:
    """Exclusive while one run finds or starts the proxy (released if the run dies)."""
    folder = where.data_dir / proxies.FOLDER
    config.ensure_private_dir(folder)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def find(where: config.Paths, needs: Needs, run_id: str,
         project: str | None = None) -> Joined | None:
    """A running proxy that suits ``needs`` and answers as itself; stale files are removed."""
    for doc in proxies.running(where):
        port, where_desk = desk.listen_port(doc), desk.address(doc)
        if port is None or where_desk is None or not needs.served_by(doc, where):
            continue
        try:
            answer = desk.hello(where_desk, run_id, project)
        except DeskError as exc:
            log.info("ccmeter: proxy %s at %s does not answer (%s); its status file is stale",
                     doc.get("pid"), doc.get("listen"), exc)
            _remove(doc)
            continue
        if answer.get("pid") != doc.get("pid"):
            log.info("ccmeter: %s answers as pid %s, not %s; that status file is stale",
                     doc.get("listen"), answer.get("pid"), doc.get("pid"))
            _remove(doc)
            continue
        return Joined(pid=int(doc["pid"]), port=port, desk=where_desk, started=False,
                      failing=desk.metering_failure(doc))
    return None


def _remove(doc: Mapping[str, Any]) -> None:
    with contextlib.suppress(OSError, TypeError):
        Path(str(doc["status_file"])).unlink()


def spawn(where: config.Paths, *, upstream: str | None, idle_exit: str,
          env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """``ccmeter serve --any-port --idle-exit …`` in a session of its own, logging to the log
    file: it outlives the run that started it."""
    # The platform whose folders to use goes along (it is the same one, except in tests).
    boot = ("import sys; from ccmeter import config, cli; config.PLATFORM = sys.argv[1]; "
            "sys.argv = ['ccmeter', *sys.argv[2:]]; cli.main()")
    argv = [sys.executable, "-c", boot, config.PLATFORM,
            "serve", "--any-port", "--idle-exit", idle_exit]
    if upstream:
        argv += ["--upstream", upstream]
    config.ensure_private_dir(where.log_dir)
    child_env = {k: v for k, v in (os.environ if env is None else env).items()
                 if k.lower() not in ("https_proxy", "http_proxy", "all_proxy")}
    with open(where.log_file, "ab") as log_file:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=log_file, start_new_session=True, close_fds=True,
                                cwd=str(where.data_dir), env=child_env)


def join_or_start(where: config.Paths, needs: Needs, run_id: str, *, idle_exit: str,
                  project: str | None = None, env: Mapping[str, str] | None = None) -> Joined:
    """Join a suitable running proxy, or start one and join it (see the module doc)."""
    with start_lock(where):
        joined = find(where, needs, run_id, project)
        if joined is not None:
            return joined
        proc = spawn(where, upstream=needs.upstream, idle_exit=idle_exit, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise config.CCMeterError(
                    f"the metering proxy could not start (exit {proc.returncode}); see "
                    f"{where.log_file}")
            doc = next((d for d in proxies.running(where, clean=False)
                        if d.get("pid") == proc.pid), None)
            port = desk.listen_port(doc) if doc else None
            where_desk = desk.address(doc) if doc else None
            if doc is not None and port is not None and where_desk is not None:
                try:
                    desk.hello(where_desk, run_id, project)
                    return Joined(pid=proc.pid, port=port, desk=where_desk, started=True,
                                  failing=desk.metering_failure(doc))
                except DeskError:
                    pass
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            proc.terminate()
        raise config.CCMeterError(f"the metering proxy did not start within "
                                  f"{START_TIMEOUT_S:.0f} s; see {where.log_file}")
