"""Library side of ``ccmeter run`` / ``serve`` / ``env`` / ``cert`` / ``doctor``.

The CLI commands are thin wrappers over these functions, which tests call directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import logging.handlers
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ccmeter import config, periods, proxy, resident, sessions, store
from ccmeter.addon import ANTHROPIC_HOST
from ccmeter.failures import reason as failure_reason
from ccmeter.failures import summary as failure_summary
from ccmeter.gitdir import git_top

log = logging.getLogger(__name__)

DEFAULT_PORT = config.DEFAULT_PORT


class CommandNotFound(config.CCMeterError):
    exit_code = 127  # what shells answer for an unknown command


# --- where and what ------------------------------------------------------------------------


def detect_project(cwd: Path | None = None) -> str:
    """The git repository's top folder name, else the folder's own name."""
    cwd = (cwd or Path.cwd()).resolve()
    top = git_top(str(cwd))
    return Path(top).name if top else (cwd.name or str(cwd))


def resolve_upstream(cli_value: str | None, cfg: Mapping) -> str | None:
    value = cli_value or config.config_text(cfg, "upstream")
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise config.CCMeterError(
            f"upstream must be an http(s) URL such as https://gateway.example.com, got {value!r}"
        )
    return value.rstrip("/")


def setup_file_logging(paths: config.Paths, level: int = logging.INFO) -> Path:
    """Send ccmeter's and mitmproxy's logging to the log file, never to the terminal."""
    config.ensure_private_dir(paths.log_dir)
    handler = logging.handlers.RotatingFileHandler(
        paths.log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s "
                                           "%(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # mitmproxy logs every connection at INFO; keep its warnings, drop the chatter.
    logging.getLogger("mitmproxy").setLevel(max(level, logging.WARNING))
    return paths.log_file


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


# --- environment for a wrapped tool --------------------------------------------------------


def ca_bundle_for_child(paths: config.Paths, env: Mapping[str, str]) -> Path:
    """NODE_EXTRA_CA_CERTS takes one file: keep a user's own extra CAs beside ours."""
    existing = env.get("NODE_EXTRA_CA_CERTS")
    if not existing or Path(existing).resolve() == paths.ca_cert.resolve():
        return paths.ca_cert
    try:
        theirs = Path(existing).read_bytes()
    except OSError:
        log.warning("NODE_EXTRA_CA_CERTS=%s is unreadable; using ccmeter's CA alone", existing)
        return paths.ca_cert
    bundle = paths.ca_dir / "node-extra-ca-bundle.pem"
    data = paths.ca_cert.read_bytes() + b"\n" + theirs
    with contextlib.suppress(OSError):
        if bundle.read_bytes() == data:
            return bundle
    # Atomically: runs starting at once each write it while the others' children read it.
    tmp = bundle.with_name(f".{bundle.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, bundle)
    return bundle


def child_env(proxy_url: str, ca_file: Path, env: Mapping[str, str],
              metered_hosts: Sequence[str] = (ANTHROPIC_HOST,)) -> dict[str, str]:
    """The wrapped command's environment: our proxy and CA, and a NO_PROXY that no longer
    sends the metered hosts around the meter."""
    out = dict(env)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        out[name] = proxy_url
    out["NODE_EXTRA_CA_CERTS"] = str(ca_file)
    for name in ("NO_PROXY", "no_proxy"):
        if out.get(name):
            kept = [item for item in _no_proxy_items(out[name])
                    if not any(_no_proxy_matches(item, host) for host in metered_hosts)]
            if len(kept) != len(_no_proxy_items(out[name])):
                log.warning("%s covered a metered host; it was taken out for the wrapped "
                            "command (was %r)", name, out[name])
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


def configured_hosts(cfg: Mapping) -> tuple[str, ...]:
    """``hosts = [...]`` in the config: more Anthropic-compatible hosts to decrypt and meter."""
    hosts = cfg.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise config.CCMeterError('"hosts" in the config must be a list of host names')
    return tuple(h.lower() for h in hosts)


def env_lines(*, port: int, reverse: bool, paths: config.Paths) -> list[str]:
    url = f"http://127.0.0.1:{port}"
    if reverse:
        return [f"export ANTHROPIC_BASE_URL={url}"]
    return [
        f"export HTTPS_PROXY={url}",
        f"export NODE_EXTRA_CA_CERTS={paths.ca_cert}",
    ]


# --- run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    exit_code: int
    calls: int
    sessions: int
    cost_picousd: int
    unpriced_calls: int
    today_picousd: int
    #: The fullest spending cap, e.g. "daily cap 31 %" (None without caps).
    cap_note: str | None = None
    blocked_calls: int = 0
    #: Why metering failed during the run (None: it never did), and how many of the run's
    #: calls are not in the database because of it.
    metering_failure: str | None = None
    unrecorded_calls: int = 0
    #: Calls the upstream failed, and why: "3 calls failed: upstream unreachable (…)".
    failures: str | None = None

    def line(self) -> str:
        from ccmeter.money import spend_usd  # floored, as every spend beside a cap

        run = f"this run {spend_usd(self.cost_picousd)} "
        run += f"({self.calls} call{'s' * (self.calls != 1)}, "
        run += f"{self.sessions} session{'s' * (self.sessions != 1)})"
        if self.unpriced_calls:
            run += f" + {self.unpriced_calls} unpriced"
        line = f"ccmeter: {run} · today {spend_usd(self.today_picousd)}"
        if self.blocked_calls:
            line += f" · {self.blocked_calls} refused by caps"
        if self.failures:
            line += f" · {self.failures}"
        line += f" · {self.cap_note}" if self.cap_note else ""
        if self.metering_failure:
            lost = (f"{self.unrecorded_calls} call{'s' * (self.unrecorded_calls != 1)} not "
                    "recorded" if self.unrecorded_calls else "every call recorded in the end")
            line += f"\nccmeter: METERING FAILED during this run ({lost}): {self.metering_failure}"
        return line


def summarize(meter_rows: Mapping[str, Mapping], db_path: Path, exit_code: int, *,
              cfg: Mapping | None = None, project: str | None = None,
              metering_failure: str | None = None, unrecorded_calls: int = 0,
              failures: Sequence[str | None] | None = None) -> RunSummary:
    """The run's summary from its calls' rows (``failures``: why calls failed, else read
    from the rows themselves) and today's total and caps from the database."""
    rows = list(meter_rows.values())
    today = 0
    cap_note = None
    try:
        db = store.connect(db_path)
        today = sessions.spend_since(db, periods.local_midnight())[0] or 0
        if cfg and cfg.get("caps"):
            from ccmeter.caps.guard import cap_statuses
            from ccmeter.caps.messages import summary_note

            cap_note = summary_note(cap_statuses(db, cfg), project)
        db.conn.close()
    except Exception:
        log.exception("could not read today's total")
    return RunSummary(
        exit_code=exit_code,
        calls=len(rows),
        sessions=len({r.get("session_id") for r in rows if r.get("session_id")}),
        cost_picousd=sum(r.get("cost_picousd") or 0 for r in rows),
        unpriced_calls=sum(1 for r in rows if r.get("cost_picousd") is None),
        today_picousd=today,
        cap_note=cap_note,
        blocked_calls=sum(1 for r in rows if r.get("status") == "blocked"),
        metering_failure=metering_failure,
        unrecorded_calls=unrecorded_calls,
        failures=failure_summary(failures if failures is not None
                                 else (r.get("failure") for r in rows)),
    )


def idle_seconds(text: str, what: str = "idle_exit") -> float:
    """``10m`` -> 600.0: how long a proxy may be idle before it stops."""
    duration = periods.parse_duration(text, what=what)
    if duration.months:
        raise config.CCMeterError(f"{what} must be at most a few weeks, got {text!r}")
    return float(duration.seconds)


def idle_exit_text(cfg: Mapping) -> str:
    """``idle_exit`` in the config (checked), else the default of 10 minutes."""
    text = config.config_text(cfg, "idle_exit") or resident.DEFAULT_IDLE_EXIT
    idle_seconds(text, "idle_exit in the config")
    return text


def run_wrapped(
    command: Sequence[str],
    *,
    paths: config.Paths,
    project: str | None,
    upstream: str | None,
    extra_hosts: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    notify: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run ``command`` through the user's resident proxy (joined, or started for it and
    left running; see :mod:`ccmeter.resident`) and summarise the run from its rows.
    ``notify`` gets a line for the user when metering does not work as the command starts."""
    env = dict(os.environ if env is None else env)
    executable = shutil.which(command[0], path=env.get("PATH"))
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
    settings = proxy.ProxySettings(
        paths=paths, upstream=upstream, project=project,
        extra_hosts=(*hosts_from_base_url(env), *extra_hosts), cloud=cloud_providers(env),
    )
    needs = resident.Needs(upstream=upstream, hosts=tuple(settings.metered_hosts()),
                           cloud=settings.cloud)
    run_id = resident.new_run_id()
    joined = resident.join_or_start(paths, needs, run_id, idle_exit=idle_exit_text(cfg),
                                    env=env)
    log.info("ccmeter: run %s %s proxy %d on port %d", run_id,
             "started" if joined.started else "joined", joined.pid, joined.port)
    failing = _proxy_failing(paths, joined.pid)
    if failing and notify is not None:
        notify(metering_off_line(failing))
    exit_code = 1
    try:
        exit_code = run_child([executable, *command[1:]], child_env(
            resident.proxy_url(joined.port, run_id, project), ca_bundle_for_child(paths, env),
            env, settings.metered_hosts()))
    finally:
        try:
            ended = resident.bye(joined.port, run_id)
        except resident.DeskError as exc:
            log.warning("ccmeter: the proxy %d did not answer at the end of run %s: %s",
                        joined.pid, run_id, exc)
            ended = {"metering_failure": "the metering proxy stopped during this run (calls "
                     "it had in flight are recorded when the next one starts)"}
    rows = _run_rows(paths.db_file, run_id)
    try:
        cfg = config.load_config(paths)
    except config.CCMeterError:
        cfg = {}
    seen = ended.get("seen")
    failures = ended.get("failures")
    return summarize(rows, paths.db_file, exit_code, cfg=cfg, project=project,
                     metering_failure=ended.get("metering_failure"),
                     unrecorded_calls=max(0, seen - len(rows)) if isinstance(seen, int) else 0,
                     failures=failures if isinstance(failures, list) else None)


def _run_rows(db_path: Path, run_id: str) -> dict[str, dict[str, Any]]:
    try:
        db = store.connect(db_path)
        try:
            calls = store.run_calls(db, run_id)
        finally:
            db.conn.close()
    except Exception:
        log.exception("could not read the run's calls")
        return {}
    for row in calls:
        row["failure"] = failure_reason(row["status"], row.get("error_type"),
                                        row.get("http_status"), None)
    return {row["call_uid"]: row for row in calls}


def _proxy_failing(paths: config.Paths, pid: int) -> str | None:
    """Why the joined proxy cannot meter right now (its status file), or None."""
    from ccmeter import proxies

    for doc in proxies.running(paths, clean=False):
        if doc.get("pid") == pid and doc.get("metering") == "failing":
            return str(doc.get("reason") or "unknown")
    return None


def metering_off_line(reason: str) -> str:
    """What ``run`` and ``serve`` print when metering does not work (see docs/caps.md)."""
    return (f"ccmeter: WARNING: metering is not working: {reason}. Calls go through "
            "unmetered, or are refused if caps.on_error is \"block\"; ccmeter keeps the rows and "
            "tries again on every call (`ccmeter doctor` shows the state)")


def run_child(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the child in the foreground; it owns the terminal and its Ctrl-C.

    ccmeter ignores SIGINT/SIGQUIT while the child lives (the terminal sends them to both)
    and forwards SIGTERM/SIGHUP, so it stops only after the child has exited.
    """
    child = subprocess.Popen(list(argv), env=dict(env))

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    def ignore(_signum: int, _frame: object) -> None:
        return None

    previous: dict[signal.Signals, Any] = {}
    wanted = {signal.SIGINT: ignore, signal.SIGTERM: forward}
    if hasattr(signal, "SIGHUP"):
        wanted[signal.SIGHUP] = forward
    if hasattr(signal, "SIGQUIT"):
        wanted[signal.SIGQUIT] = ignore
    for signum, handler in wanted.items():
        previous[signum] = signal.signal(signum, handler)
    try:
        while True:
            try:
                code = child.wait()
                break
            except InterruptedError:
                continue
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    return 128 - code if code < 0 else code


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
