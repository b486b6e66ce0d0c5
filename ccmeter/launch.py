"""Library side of ``ccmeter run`` / ``serve`` / ``env`` / ``cert`` / ``doctor``.

The CLI commands are thin wrappers over these functions, which tests call directly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ccmeter import child, config, configcheck, desk, logfile, quickrun, resident
from ccmeter.failures import metering_off_line

log = logging.getLogger(__name__)

DEFAULT_PORT = config.DEFAULT_PORT


class CommandNotFound(config.CCMeterError):
    exit_code = 127  # what shells answer for an unknown command


class CommandNotRunnable(config.CCMeterError):
    exit_code = 126  # what shells answer for a file that cannot be executed


# --- where and what ------------------------------------------------------------------------


def setup_file_logging(paths: config.Paths, level: int = logging.INFO) -> Path:
    """Send ccmeter's and mitmproxy's logging to the log file, never to the terminal."""
    config.ensure_private_dir(paths.log_dir)
    return logfile.setup(paths.log_file, level)


# --- the CA --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertInfo:
    cert_path: Path
    key_path: Path
    sha256: str
    created: bool


def ensure_ca(paths: config.Paths) -> CertInfo:
    """Create ccmeter's own CA on first use (key readable by its owner only)."""
    from mitmproxy import certs

    config.ensure_private_dir(paths.ca_dir)
    key_path = paths.ca_dir / "mitmproxy-ca.pem"
    created = not key_path.exists()
    broken = (f"ccmeter's CA in {paths.ca_dir} is incomplete or damaged; move that folder "
              "aside and ccmeter makes a new CA on next use (run `ccmeter cert --install` "
              "again if you had installed the old one)")
    try:
        certs.CertStore.from_store(str(paths.ca_dir), "mitmproxy", 2048)
        for secret in (key_path, paths.ca_dir / "mitmproxy-ca.p12"):
            if secret.exists():
                secret.chmod(0o600)
        fingerprint = cert_fingerprint(paths.ca_cert)
    except (OSError, ValueError) as exc:
        raise config.CCMeterError(f"{broken} ({type(exc).__name__})") from exc
    return CertInfo(paths.ca_cert, key_path, fingerprint, created)


def cert_fingerprint(cert_path: Path) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    digest = hashlib.sha256(cert.public_bytes(_der())).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _der():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def trust_store_commands(cert: Path, *, uninstall: bool = False) -> list[list[str]]:
    """The OS commands that add (or remove) the CA in the system trust store."""
    if sys.platform == "darwin":
        if uninstall:
            return [["sudo", "security", "remove-trusted-cert", "-d", str(cert)]]
        return [["sudo", "security", "add-trusted-cert", "-d", "-r", "trustRoot", "-k",
                 "/Library/Keychains/System.keychain", str(cert)]]
    if sys.platform.startswith("linux"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        target = "/usr/local/share/ca-certificates/ccmeter-ca.crt"
        if uninstall:
            return [[*sudo, "rm", "-f", target], [*sudo, "update-ca-certificates", "--fresh"]]
        return [[*sudo, "cp", str(cert), target], [*sudo, "update-ca-certificates"]]
    raise config.CCMeterError(
        "installing into this platform's trust store is not automated; import "
        f"{cert} as a trusted root by hand"
    )


def env_lines(*, port: int, reverse: bool, paths: config.Paths) -> list[str]:
    url = f"http://127.0.0.1:{port}"
    if reverse:
        return [f"export ANTHROPIC_BASE_URL={url}"]
    return [
        f"export HTTPS_PROXY={url}",
        f"export NODE_EXTRA_CA_CERTS={paths.ca_cert}",
    ]


# --- run -----------------------------------------------------------------------------------


def run_wrapped(
    command: Sequence[str],
    *,
    paths: config.Paths,
    project: str | None,
    upstream: str | None,
    extra_hosts: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[int, str]:
    """Run ``command`` through the user's resident proxy (joined, or started for it and
    left running; see :mod:`ccmeter.resident`): its exit code and the run's summary line.
    ``notify`` gets a line for the user when metering does not work as the command starts.
    (:mod:`ccmeter.quickrun` does the same without the CLI when a proxy is up.)"""
    env = dict(os.environ if env is None else env)
    executable = child.which(command[0], env)
    if executable is None and os.sep in command[0] and os.path.exists(command[0]):
        raise CommandNotRunnable(f"cannot run {command[0]}: "
                                 + ("it is a folder" if os.path.isdir(command[0])
                                    else "permission denied (not executable)"))
    if executable is None:
        raise CommandNotFound(
            f"command not found: {command[0]} (is it installed and on your PATH?)"
        )
    with resident.start_lock(paths):  # runs starting at once: one makes the CA on first use
        ensure_ca(paths)
    try:
        cfg = config.load_config(paths)
    except config.CCMeterError:
        cfg = {}
    extra = (*child.hosts_from_base_url(env), *extra_hosts)
    hosts = desk.metered_hosts(upstream, extra)
    needs = resident.Needs(upstream=upstream, hosts=tuple(hosts),
                           cloud=child.cloud_providers(env), otlp=desk.otlp_endpoint(env))
    run_id = desk.new_run_id()
    joined = resident.join_or_start(paths, needs, run_id, idle_exit=configcheck.idle_exit_text(cfg),
                                    project=project, env=env)
    if joined.started:
        log.info("ccmeter: run %s started proxy %d on port %d", run_id, joined.pid,
                 joined.port)
    if joined.failing and notify is not None:
        notify(metering_off_line(joined.failing))
    exit_code = 1
    try:
        exit_code = child.run_child([executable, *command[1:]], child.child_env(
            desk.proxy_url(joined.port, run_id, project),
            child.ca_bundle_for_child(paths.ca_cert, env), env, hosts))
    finally:
        line = quickrun.finish(joined.desk, joined.pid, run_id, project, paths)
    return exit_code, line


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
