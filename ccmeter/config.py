"""Where ccmeter keeps its files, and the user's TOML configuration.

One module resolves every path so that the addon (under ``mitmdump -s``) and the CLI agree:
``CCMETER_HOME`` puts everything under one folder; otherwise the platform's user
directories are used (XDG on Linux, ``~/Library/Application Support`` on macOS,
``%LOCALAPPDATA%`` on Windows).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ccmeter.folders import CONFIG_NAME, folders
from ccmeter.record import Record

#: The platform whose folders :func:`paths` uses (a name as in ``sys.platform``).
PLATFORM = sys.platform

#: Where `ccmeter serve` listens and what `ccmeter env` points at, unless configured.
DEFAULT_PORT = 8337


class CCMeterError(Exception):
    """A problem the user can fix. The CLI prints it as one line, without a traceback."""

    exit_code = 2


class Paths(Record):
    config_dir: Path
    data_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / CONFIG_NAME

    @property
    def db_file(self) -> Path:
        return self.data_dir / "ccmeter.db"

    @property
    def ca_dir(self) -> Path:
        """mitmproxy's confdir: holds the CA (key file mode 0600, folder 0700)."""
        return self.data_dir / "ca"

    @property
    def ca_cert(self) -> Path:
        return self.ca_dir / "mitmproxy-ca-cert.pem"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "ccmeter.log"

    @property
    def journal_dir(self) -> Path:
        """Each proxy's call journal (see :mod:`ccmeter.journal`)."""
        return self.data_dir / "journal"


def paths(env: Mapping[str, str] | None = None, *, home: str | None = None) -> Paths:
    """Where ccmeter's files are: the one answer every part of ccmeter uses (the platform's
    rules are :func:`ccmeter.folders.folders`)."""
    config_dir, data_dir = folders(os.environ if env is None else env, PLATFORM, home)
    return Paths(config_dir=Path(config_dir), data_dir=Path(data_dir))


def ensure_private_dir(path: Path) -> Path:
    """Create a folder only its owner can read: it may hold the CA key and spend data."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        path.chmod(0o700)
    return path


# --- every key the config knows -------------------------------------------------------------

#: A table whose keys are names the user chooses (model ids, project names), values unchecked.
ANY_NAME: dict[str, Any] = {"*": None}
_CAP_WINDOWS = {"hourly": None, "daily": None, "weekly": None, "monthly": None}
_RATES = dict.fromkeys(("input", "cache_write_5m", "cache_write_1h", "cache_read", "output"))

#: The one list of valid keys and tables (docs/configuration.md, caps.md, team-share.md):
#: a key maps to None (a value), to the table of keys it holds, or to ``{"*": …}`` when its
#: keys are the user's own names. Anything else is an unknown key (see :func:`unknown_keys`).
SCHEMA: dict[str, Any] = {
    "upstream": None, "project": None, "port": None, "hosts": None, "idle_exit": None,
    "import_on_run": None,
    "prices": {"discount_percent": None, "models": {"*": _RATES},
               "plans": {"*": {"monthly_usd": None, "from": None}}},
    "caps": {
        **_CAP_WINDOWS,
        **dict.fromkeys(("mode", "window", "warn_at", "on_error", "timezone", "notify",
                         "estimate", "reservation_ttl", "paused_until", "loop", "per_call",
                         "plan_5h", "plan_7d", "plan_warn_at")),
        "estimates": ANY_NAME,
        "paused_sessions": ANY_NAME,
        "projects": {"*": {**_CAP_WINDOWS, "per_call": None}},
        "per_session": {**_CAP_WINDOWS, "total": None},
    },
    "share": {**dict.fromkeys(("path", "user", "salt", "anonymize", "hash_projects", "team",
                               "group", "push_interval", "refresh_interval")),
              "project_names": ANY_NAME},
    "metrics": dict.fromkeys(("port", "host", "user")),
}


class UnknownKey(Record):
    """A key the config has and ccmeter does not know: ``caps.dialy``, maybe ``daily``."""

    path: tuple[str, ...]
    suggestion: str | None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def __str__(self) -> str:
        hint = f" (did you mean {self.suggestion}?)" if self.suggestion else ""
        return f"{self.dotted}{hint}"


def unknown_keys(cfg: Mapping[str, Any], schema: Mapping[str, Any] | None = None,
                 where: tuple[str, ...] = ()) -> list[UnknownKey]:
    """Every key of ``cfg`` that :data:`SCHEMA` does not know, with the closest valid one."""
    schema = SCHEMA if schema is None else schema
    out: list[UnknownKey] = []
    for key, value in cfg.items():
        if "*" in schema:
            sub = schema["*"]
        elif key in schema:
            sub = schema[key]
        else:
            import difflib  # only for a key that is not known (~1 ms)

            known = [k for k in schema if k != "*"]
            lowered = {k.lower().replace("-", "_"): k for k in known}
            close = lowered.get(str(key).lower().replace("-", "_")) or next(
                iter(difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)), None)
            out.append(UnknownKey((*where, str(key)), close))
            continue
        if isinstance(sub, Mapping) and isinstance(value, Mapping):
            out += unknown_keys(value, sub, (*where, str(key)))
    return out


def unknown_keys_text(unknown: list[UnknownKey], config_file: Path, *,
                      caps: bool = True) -> str | None:
    """The one warning line about unknown keys, or None when there are none. A key inside
    ``[caps]`` is not ignored: the whole table is then not applied (it is said so); with
    ``caps=False`` those are left out, for a command that refuses to go on over them (and
    says why in its own error)."""
    ignored = [u for u in unknown if u.path[0] != "caps"]
    in_caps = [u for u in unknown if u.path[0] == "caps"] if caps else []
    parts = []
    if ignored:
        parts.append(f"unknown key{'s' * (len(ignored) != 1)} ignored: "
                     + "; ".join(str(u) for u in ignored))
    if in_caps:
        parts.append(f"[caps] not applied, unknown key{'s' * (len(in_caps) != 1)}: "
                     + "; ".join(str(u) for u in in_caps))
    return f"{config_file}: " + "; ".join(parts) if parts else None


def caps_unknown_error(cfg: Mapping[str, Any]) -> CCMeterError | None:
    """An unknown key inside ``[caps]`` is a cap that is not there (a typo costs money): the
    ``[caps]`` table is then not understood, as if invalid (run, serve, caps set refuse)."""
    table = cfg.get("caps")
    if not isinstance(table, Mapping):
        return None
    unknown = unknown_keys(table, SCHEMA["caps"], ("caps",))
    if not unknown:
        return None
    return CCMeterError(f"unknown key{'s' * (len(unknown) != 1)} in [caps]: "
                        + "; ".join(str(u) for u in unknown)
                        + "; fix the name in the config file (a cap ccmeter does not "
                        "understand would not be enforced, so caps set, run and serve refuse)")


#: Told once per command about a config's unknown keys (the CLI prints it on stderr).
unknown_keys_hook: Callable[[str], None] | None = None
_tell_caps = True
_told: set[str] = set()


def tell_unknown_keys(hook: Callable[[str], None] | None, *, caps: bool = True) -> None:
    """From now on, each config read with unknown keys tells ``hook`` one line, once
    (``caps=False``: not about keys in ``[caps]``, which the command itself refuses)."""
    global unknown_keys_hook, _tell_caps
    unknown_keys_hook = hook
    _tell_caps = caps
    _told.clear()


def load_config(p: Paths | None = None, *, quiet: bool = False) -> dict[str, Any]:
    """Read config.toml; a missing file is an empty config, a broken one a CCMeterError.

    Unknown keys are told to :data:`unknown_keys_hook` once per process (not when ``quiet``:
    a running proxy logs them instead)."""
    p = p or paths()
    try:
        text = p.config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CCMeterError(f"cannot read {p.config_file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CCMeterError(
            f"{p.config_file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); fix it or move it aside"
        ) from exc
    import tomllib  # only when there is a file to parse (~2 ms)

    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CCMeterError(
            f"{p.config_file} is not valid TOML ({exc}); fix it or move it aside"
        ) from exc
    if not quiet and unknown_keys_hook is not None:
        line = unknown_keys_text(unknown_keys(cfg), p.config_file, caps=_tell_caps)
        if line and line not in _told:
            _told.add(line)
            unknown_keys_hook(line)
    return cfg


def save_config(config: dict[str, Any], p: Paths | None = None) -> Path:
    """Write config.toml atomically (write a temporary file, then rename over), keeping the
    user's comments and layout where the data agrees (:mod:`ccmeter.configwrite`)."""
    p = p or paths()
    ensure_private_dir(p.config_dir)
    tmp = p.config_file.with_suffix(".toml.tmp")
    from ccmeter import configwrite  # only writing needs it; every command reads

    try:
        current = p.config_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    tmp.write_text(configwrite.dumps(config, current), encoding="utf-8")
    os.replace(tmp, p.config_file)
    return p.config_file


def config_port(cfg: Mapping[str, Any]) -> int:
    """``port`` from the config (default :data:`DEFAULT_PORT`), checked."""
    port = cfg.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise CCMeterError(f"port in the config must be a number from 1 to 65535, got {port!r}")
    return port


def config_text(cfg: Mapping[str, Any], key: str) -> str | None:
    """An optional text setting (``project``, ``upstream``), checked."""
    value = cfg.get(key)
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise CCMeterError(f"{key} in the config must be a non-empty string, got {value!r}")
    return value
