"""The command ``ccmeter run`` wraps: its environment, and running it in the foreground.

Nothing here but the standard library (no logging either, unless there is a warning): the
quick path of ``run`` (:mod:`ccmeter.quickrun`) uses it as the full one does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from ccmeter.desk import ANTHROPIC_HOST

TYPE_CHECKING = False  # typing itself costs 2 ms to import
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def _log_warning(line: str) -> None:
    import logging

    logging.getLogger(__name__).warning("%s", line)


def ca_bundle_for_child(ca_cert: str | Path, env: Mapping[str, str], *,
                        warn: Callable[[str], None] = _log_warning) -> str | Path:
    """NODE_EXTRA_CA_CERTS takes one file: keep a user's own extra CAs beside ours (in a
    bundle beside ``ca_cert``)."""
    existing = env.get("NODE_EXTRA_CA_CERTS")
    if not existing:
        return ca_cert
    from pathlib import Path

    ca_cert = Path(ca_cert)
    if Path(existing).resolve() == ca_cert.resolve():
        return ca_cert
    try:
        theirs = Path(existing).read_bytes()
    except OSError:
        warn(f"NODE_EXTRA_CA_CERTS={existing} is unreadable; using ccmeter's CA alone")
        return ca_cert
    bundle = ca_cert.parent / "node-extra-ca-bundle.pem"
    data = ca_cert.read_bytes() + b"\n" + theirs
    with contextlib.suppress(OSError):
        if bundle.read_bytes() == data:
            return bundle
    # Atomically: runs starting at once each write it while the others' children read it.
    tmp = bundle.with_name(f".{bundle.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, bundle)
    return bundle


def child_env(proxy_url: str, ca_file: str | Path, env: Mapping[str, str],
              metered_hosts: Sequence[str] = (ANTHROPIC_HOST,), *,
              warn: Callable[[str], None] = _log_warning) -> dict[str, str]:
    """The wrapped command's environment: our proxy and CA, and a NO_PROXY that no longer
    sends the metered hosts around the meter (``warn`` is told when it did)."""
    out = dict(env)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        out[name] = proxy_url
    out["NODE_EXTRA_CA_CERTS"] = str(ca_file)
    for name in ("NO_PROXY", "no_proxy"):
        if out.get(name):
            kept = [item for item in _no_proxy_items(out[name])
                    if not any(_no_proxy_matches(item, host) for host in metered_hosts)]
            if len(kept) != len(_no_proxy_items(out[name])):
                warn(f"{name} covered a metered host; it was taken out for the wrapped "
                     f"command (was {out[name]!r})")
            out[name] = ",".join(kept)
    return out


def _no_proxy_items(raw: str) -> list[str]:
    return [item for item in raw.replace(",", " ").split() if item]


def _no_proxy_matches(item: str, host: str) -> bool:
    """Does one NO_PROXY entry (``*``, ``host``, ``.domain``, ``*.domain``, ``host:port``)
    cover ``host``?"""
    item = item.strip().lower()
    if item == "*":
        return True
    item = item.split(":", 1)[0].lstrip("*").lstrip(".")
    return bool(item) and (host == item or host.endswith("." + item))


def no_proxy_bypasses(env: Mapping[str, str], host: str = ANTHROPIC_HOST) -> bool:
    """Would NO_PROXY send ``host`` around the proxy (unmetered)?"""
    raw = env.get("NO_PROXY") or env.get("no_proxy") or ""
    return any(_no_proxy_matches(item, host) for item in _no_proxy_items(raw))


def hosts_from_base_url(env: Mapping[str, str]) -> list[str]:
    """A gateway the user already points Claude Code at is metered too."""
    hosts = []
    for name in ("ANTHROPIC_BASE_URL", *CLOUD_BASE_URLS.values()):
        value = env.get(name)
        if value:
            from urllib.parse import urlsplit

            host = urlsplit(value).hostname
            if host and host.lower() != ANTHROPIC_HOST:
                hosts.append(host.lower())
    return hosts


CLOUD_SWITCHES = {"bedrock": "CLAUDE_CODE_USE_BEDROCK", "vertex": "CLAUDE_CODE_USE_VERTEX"}
CLOUD_BASE_URLS = {"bedrock": "ANTHROPIC_BEDROCK_BASE_URL", "vertex": "ANTHROPIC_VERTEX_BASE_URL"}


def cloud_providers(env: Mapping[str, str]) -> tuple[str, ...]:
    """The clouds the environment points Claude Code at (``CLAUDE_CODE_USE_BEDROCK=1`` …).

    Their runtime hosts in every region are then decrypted and metered: the region variables
    (``AWS_REGION``, ``ANTHROPIC_SMALL_FAST_MODEL_AWS_REGION``, ``CLOUD_ML_REGION``,
    ``VERTEX_REGION_*``) may send different models to different regions.
    """
    return tuple(name for name, switch in CLOUD_SWITCHES.items()
                 if env.get(switch, "").strip().lower() in ("1", "true", "yes", "on"))


def which(command: str, env: Mapping[str, str]) -> str | None:
    """The executable ``command`` names, on the environment's PATH (as a shell finds it)."""
    if os.sep in command or (os.altsep and os.altsep in command):
        return command if os.access(command, os.X_OK) and not os.path.isdir(command) else None
    if sys.platform == "win32":
        import shutil

        return shutil.which(command, path=env.get("PATH"))
    for folder in (env.get("PATH") or os.defpath).split(os.pathsep):
        candidate = os.path.join(folder or ".", command)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def run_child(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the child in the foreground; it owns the terminal and its Ctrl-C. Its exit code,
    or 128 + the signal that ended it, as a shell reports it.

    ccmeter ignores SIGINT/SIGQUIT while the child lives (the terminal sends them to both)
    and forwards SIGTERM/SIGHUP, so it stops only after the child has exited. The child
    starts with the signal dispositions a shell gives (Python ignores SIGPIPE; the child
    must not).
    """
    if not hasattr(os, "posix_spawn"):
        import subprocess

        with subprocess.Popen(list(argv), env=dict(env)) as popen:
            code = popen.wait()
        return 128 - code if code < 0 else code
    defaults = [getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name)]
    pid = os.posix_spawn(argv[0], list(argv), dict(env), setsigdef=defaults)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def ignore(_signum: int, _frame: object) -> None:
        return None

    previous: dict[int, Any] = {}
    wanted: dict[int, Callable[[int, Any], None]] = {signal.SIGINT: ignore,
                                                     signal.SIGTERM: forward}
    if hasattr(signal, "SIGHUP"):
        wanted[signal.SIGHUP] = forward
    if hasattr(signal, "SIGQUIT"):
        wanted[signal.SIGQUIT] = ignore
    for signum, handler in wanted.items():
        previous[signum] = signal.signal(signum, handler)
    try:
        _, status = os.waitpid(pid, 0)  # retried after a signal (PEP 475)
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
