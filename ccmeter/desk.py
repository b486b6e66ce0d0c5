"""How a ``ccmeter run`` and the resident proxy speak, with nothing but the standard library.

A run is named in its child's proxy URL (:func:`proxy_url`, read back by the proxy with
:func:`parse_credentials`) and talks to the proxy's desk (:mod:`ccmeter.rundesk`): a
loopback port of the proxy process, beside the proxy's own, named with a random token in the
proxy's status file. A run says ``hello`` when it joins and ``bye`` when its command has
exited, one JSON line each way; an answer that does not prove it knows the token (a keyed
hash of the request's nonce, :func:`proof`) is not the proxy (a stale file, a reused port,
another user's process). What a run needs of a proxy (:func:`metered_hosts`, :func:`serves`) is
decided here too.

``ccmeter run``'s quick path (:mod:`ccmeter.quickrun`) imports this module and little else,
so it stays cheap: a desk exchange takes a fraction of a millisecond where an HTTP request
through mitmproxy took 2–4 ms, and ``binascii`` serves rather than ``base64``.
"""

from __future__ import annotations

import _socket
import binascii
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence

TYPE_CHECKING = False  # typing itself costs 2 ms to import
if TYPE_CHECKING:
    from typing import Any

#: The API host every proxy decrypts and meters.
ANTHROPIC_HOST = "api.anthropic.com"
RUN_USER_PREFIX = "run-"
#: The folder (in the data folder) of the running proxies' status files (:mod:`ccmeter.proxies`).
STATUS_FOLDER = "proxies"
#: The largest answer a desk gives (a summary line and a few figures).
MAX_ANSWER = 65536


# --- who a call belongs to (pure) ----------------------------------------------------------


def new_run_id() -> str:
    return os.urandom(8).hex()


def _b64url(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode().translate(_URLSAFE).rstrip("=")


_URLSAFE = str.maketrans("+/", "-_")


def proxy_url(port: int, run_id: str, project: str | None, host: str = "127.0.0.1") -> str:
    """The child's ``HTTPS_PROXY``: the run and its project in the credentials (the project
    base64url-encoded, so that any client carries it through unchanged)."""
    tag = _b64url(project.encode()) if project else "-"  # nothing in it needs quoting
    return f"http://{RUN_USER_PREFIX}{run_id}:{tag}@{host}:{port}"


def parse_credentials(value: str | None) -> tuple[str, str | None] | None:
    """``(run id, project)`` from a ``Proxy-Authorization: Basic …`` value that
    :func:`proxy_url` made; None for anything else (another tool's credentials)."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    import base64  # the proxy's side only: the quick run never reads credentials

    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        return None
    run_id = user[len(RUN_USER_PREFIX):]
    if not user.startswith(RUN_USER_PREFIX) or not _is_run_id(run_id):
        return None
    project = None
    if password and password != "-":
        try:
            project = base64.urlsafe_b64decode(password + "=" * (-len(password) % 4)).decode()
        except (binascii.Error, ValueError):
            project = None
    return run_id, project[:200] if project else None


def _is_run_id(text: str) -> bool:
    return 8 <= len(text) <= 32 and all(c in "0123456789abcdef" for c in text)


# --- what a run needs of a proxy (pure) ------------------------------------------------------


def metered_hosts(upstream: str | None, extra_hosts: Iterable[str] = ()) -> list[str]:
    """The hosts a proxy decrypts and meters: the API, the configured and environment's
    extra hosts, and the upstream's host; lower case, each once."""
    hosts = [ANTHROPIC_HOST, *extra_hosts]
    if upstream:
        from urllib.parse import urlsplit

        host = urlsplit(upstream).hostname
        if host:
            hosts.append(host)
    return list(dict.fromkeys(h.lower() for h in hosts))


def is_http_url(value: str) -> bool:
    """Is ``value`` an ``http(s)://host…`` URL (an upstream a proxy can send calls to)?"""
    from urllib.parse import urlsplit  # only for an upstream: the quick run rarely has one

    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def metering_failure(doc: Mapping[str, Any]) -> str | None:
    """Why the proxy whose status is ``doc`` cannot meter right now, or None."""
    if doc.get("metering") != "failing":
        return None
    return str(doc.get("reason") or "unknown")


def serves_doc(*, reverse: bool, upstream: str | None, hosts: Sequence[str],
               cloud: Sequence[str], idle_exit_s: float | None,
               otlp: str | None = None) -> dict[str, Any]:
    """What a proxy writes under ``serves`` in its status file (see :func:`serves`)."""
    return {"mode": "reverse" if reverse else "regular", "upstream": upstream,
            "hosts": sorted(hosts), "cloud": sorted(cloud), "idle_exit_s": idle_exit_s,
            "otlp": otlp}


def serves(doc: Mapping[str, Any], upstream: str | None, hosts: Iterable[str],
           cloud: Iterable[str], otlp: str | None = None) -> bool:
    """Does the proxy whose status is ``doc`` suit a run: not in reverse mode, sending to the
    same upstream, decrypting at least these hosts and clouds, and (when the run's
    environment names an OTLP endpoint) pushing metrics there?"""
    what = doc.get("serves")
    if not isinstance(what, dict) or what.get("mode") != "regular":
        return False
    return (what.get("upstream") == upstream
            and set(hosts) <= set(what.get("hosts") or ())
            and set(cloud) <= set(what.get("cloud") or ())
            and (otlp is None or what.get("otlp") == otlp))


def otlp_endpoint(env: Mapping[str, str]) -> str | None:
    """Where the standard OpenTelemetry variables send metrics (OTLP/HTTP), or None:
    ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` as it is, else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    + ``/v1/metrics``; none when ``OTEL_METRICS_EXPORTER`` says ``none``."""
    exporters = env.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    if exporters and "otlp" not in [e.strip() for e in exporters.split(",")]:
        return None
    endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "").strip()
    if endpoint:
        return endpoint
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return base.rstrip("/") + "/v1/metrics" if base else None


def listen_port(doc: Mapping[str, Any]) -> int | None:
    """The loopback port in a status file's ``listen`` (None for anything else)."""
    listen = doc.get("listen")
    if not isinstance(listen, str):
        return None
    first = listen.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return int(port) if port.isdigit() and host in ("127.0.0.1", "localhost", "::1") else None


def alive(pid: Any) -> bool:
    """Is process ``pid`` running (a proxy whose status file names it)?"""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) is not a probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


# --- talking to a proxy ----------------------------------------------------------------------


class DeskError(Exception):
    """The address did not answer as the ccmeter proxy its status file names."""


def address(doc: Mapping[str, Any]) -> tuple[int, str] | None:
    """``(port, token)`` of the desk a proxy's status file names, or None."""
    where = doc.get("desk")
    if not isinstance(where, dict):
        return None
    port, token = where.get("port"), where.get("token")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 and (
            isinstance(token, str) and token):
        return port, token
    return None


def proof(token: str, nonce: str) -> str:
    """What a desk answers to ``nonce``: a keyed hash with its token, so that the token
    itself never crosses the socket (``_blake2`` is hashlib's BLAKE2 without the 4 ms that
    importing hashlib and OpenSSL costs a quick run)."""
    from _blake2 import blake2b

    return blake2b(nonce.encode(), key=token.encode()[:64], digest_size=16).hexdigest()


def ask(where: tuple[int, str], request: Mapping[str, Any], *, timeout: float = 5.0) -> dict:
    """One request to a proxy's desk: a JSON line to ``127.0.0.1:port`` and its JSON line
    back, which must prove it knows the desk's ``token`` (which only the user can read, in
    the status file) by hashing a fresh nonce with it: anything else is :class:`DeskError`."""
    port, token = where
    nonce = os.urandom(16).hex()
    # The C socket itself: the ``socket`` module spends 2 ms of a quick run building its
    # enums, and ``create_connection`` a millisecond looking up the address the first time.
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.sendall(json.dumps({**request, "nonce": nonce}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n") and len(data) <= MAX_ANSWER:
            chunk = sock.recv(MAX_ANSWER)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise DeskError(str(exc) or type(exc).__name__) from exc
    finally:
        sock.close()
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise DeskError("answered something else") from exc
    if not isinstance(doc, dict) or doc.get("proof") != proof(token, nonce):
        raise DeskError("answered as something else")
    return doc


def hello(where: tuple[int, str], run_id: str, project: str | None = None) -> dict:
    """Register this run (its pid keeps the proxy from going idle; its project names the
    caps its summary shows) and learn who answers."""
    return ask(where, {"op": "hello", "run": run_id, "pid": os.getpid(), "project": project})


def bye(where: tuple[int, str], run_id: str, wait_s: float = 3.0) -> dict:
    """The run's child has exited: wait (up to ``wait_s``) for the run's calls to end and
    their rows to be on disk. The answer has the run's summary ``line``, how many calls the
    proxy saw for it, why any failed, and whether metering failed."""
    return ask(where, {"op": "bye", "run": run_id, "wait": wait_s}, timeout=wait_s + 15)
