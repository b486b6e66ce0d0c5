"""One resident proxy for every ``ccmeter run``: find it, or start it, and talk to it.

``ccmeter run`` no longer starts a proxy of its own each time. It joins a ccmeter proxy
already running for this user (started by an earlier ``run``, by ``ccmeter serve``, or by a
login service) whose settings suit it, and starts one only when none is up:

- **Discovery** builds on the status files of :mod:`ccmeter.proxies`: each proxy says there
  where it listens and what it serves (mode, upstream, metered hosts, clouds). A file whose
  process is gone is dropped there; a file whose address refuses, or answers with another
  pid (a reused pid), is stale and removed here. The check is a request to the proxy itself
  (``http://ccmeter-proxy.invalid/hello``), answered by :mod:`ccmeter.rundesk` and never sent
  anywhere: an address that does not answer it as ccmeter is not joined.
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
  disk; the summary is then read from the rows tagged with the run's id.

A proxy started by ``run`` is ``ccmeter serve --idle-exit …`` in a session of its own: it
outlives the run while others use it and exits once idle (no run alive, no connection open,
no call) for ``idle_exit`` (config, default 10 minutes). No mitmproxy in this module.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ccmeter import config, proxies

log = logging.getLogger(__name__)

#: The host the proxy answers itself (``.invalid`` never resolves: nothing leaves).
DESK_HOST = "ccmeter-proxy.invalid"
RUN_USER_PREFIX = "run-"
_RUN_ID = re.compile(r"^[0-9a-f]{8,32}$")
DEFAULT_IDLE_EXIT = "10m"
START_TIMEOUT_S = 30.0
LOCK_NAME = "start.lock"


# --- who a call belongs to (pure) ----------------------------------------------------------


def new_run_id() -> str:
    return secrets.token_hex(8)


def proxy_url(port: int, run_id: str, project: str | None, host: str = "127.0.0.1") -> str:
    """The child's ``HTTPS_PROXY``: the run and its project in the credentials (the project
    base64url-encoded, so that any client carries it through unchanged)."""
    tag = base64.urlsafe_b64encode(project.encode()).decode().rstrip("=") if project else "-"
    return f"http://{RUN_USER_PREFIX}{run_id}:{quote(tag, safe='')}@{host}:{port}"


def parse_credentials(value: str | None) -> tuple[str, str | None] | None:
    """``(run id, project)`` from a ``Proxy-Authorization: Basic …`` value that
    :func:`proxy_url` made; None for anything else (another tool's credentials)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        return None
    if not user.startswith(RUN_USER_PREFIX) or not _RUN_ID.match(user[len(RUN_USER_PREFIX):]):
        return None
    project = None
    if password and password != "-":
        try:
            project = base64.urlsafe_b64decode(password + "=" * (-len(password) % 4)).decode()
        except (binascii.Error, ValueError):
            project = None
    return user[len(RUN_USER_PREFIX):], project[:200] if project else None


# --- what a run needs of a proxy -------------------------------------------------------------


@dataclass(frozen=True)
class Needs:
    """The settings a run's calls need: a proxy that is not in reverse mode, sends to the
    same upstream, and decrypts at least these hosts and clouds."""

    upstream: str | None
    hosts: tuple[str, ...]
    cloud: tuple[str, ...] = ()

    def served_by(self, doc: Mapping[str, Any], where: config.Paths) -> bool:
        serves = doc.get("serves")
        if not isinstance(serves, dict) or serves.get("mode") != "regular":
            return False
        if proxies.mismatches(dict(doc), where):
            return False
        return (serves.get("upstream") == self.upstream
                and set(self.hosts) <= set(serves.get("hosts") or ())
                and set(self.cloud) <= set(serves.get("cloud") or ()))


def serves_doc(*, reverse: bool, upstream: str | None, hosts: Sequence[str],
               cloud: Sequence[str], idle_exit_s: float | None) -> dict[str, Any]:
    """What a proxy writes under ``serves`` in its status file (see :class:`Needs`)."""
    return {"mode": "reverse" if reverse else "regular", "upstream": upstream,
            "hosts": sorted(hosts), "cloud": sorted(cloud), "idle_exit_s": idle_exit_s}


# --- talking to a proxy ----------------------------------------------------------------------


class DeskError(Exception):
    """The address did not answer as a ccmeter proxy."""


def ask(port: int, path: str, *, timeout: float = 5.0, host: str = "127.0.0.1") -> dict:
    """One request to the proxy's own desk (``http://ccmeter-proxy.invalid<path>``)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", f"http://{DESK_HOST}{path}", headers={"Host": DESK_HOST})
        reply = conn.getresponse()
        body = reply.read(65536)
        if reply.status != 200 or reply.getheader("x-ccmeter-desk") != "1":
            raise DeskError(f"answered {reply.status}, not as ccmeter")
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise DeskError("answered something else")
        return doc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DeskError(str(exc) or type(exc).__name__) from exc
    finally:
        conn.close()


def hello(port: int, run_id: str) -> dict:
    """Register this run (its pid keeps the proxy from going idle) and learn who answers."""
    return ask(port, f"/hello?run={run_id}&pid={os.getpid()}")


def bye(port: int, run_id: str, wait_s: float = 3.0) -> dict:
    """The run's child has exited: wait (up to ``wait_s``) for the run's calls to end and
    their rows to be on disk; the answer says how many calls the proxy saw for the run,
    why any failed, and whether metering failed."""
    return ask(port, f"/bye?run={run_id}&wait={wait_s:g}", timeout=wait_s + 15)


def listen_port(doc: Mapping[str, Any]) -> int | None:
    listen = doc.get("listen")
    if not isinstance(listen, str):
        return None
    first = listen.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return int(port) if port.isdigit() and host in ("127.0.0.1", "localhost", "::1") else None


# --- find or start ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    pid: int
    port: int
    started: bool  # this run started it


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


def find(where: config.Paths, needs: Needs, run_id: str) -> Joined | None:
    """A running proxy that suits ``needs`` and answers as itself; stale files are removed."""
    for doc in proxies.running(where):
        port = listen_port(doc)
        if port is None or not needs.served_by(doc, where):
            continue
        try:
            answer = hello(port, run_id)
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
        return Joined(pid=int(doc["pid"]), port=port, started=False)
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
                  env: Mapping[str, str] | None = None) -> Joined:
    """Join a suitable running proxy, or start one and join it (see the module doc)."""
    with start_lock(where):
        joined = find(where, needs, run_id)
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
            port = listen_port(doc) if doc else None
            if port is not None and doc is not None and doc.get("serves"):
                try:
                    hello(port, run_id)
                    return Joined(pid=proc.pid, port=port, started=True)
                except DeskError:
                    pass
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            proc.terminate()
        raise config.CCMeterError(f"the metering proxy did not start within "
                                  f"{START_TIMEOUT_S:.0f} s; see {where.log_file}")
