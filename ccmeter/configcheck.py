"""The config as a proxy and ``ccmeter run`` rely on it, checked before either starts.

A typo in ``[caps]`` (an unknown key included) or a bad ``[prices]`` must stop a start with
one line, not switch the caps off or store list prices silently. Other unknown keys are only
warned about (by :func:`ccmeter.config.load_config`): a newer ccmeter's settings must not stop
this one.

A running proxy also records what a run needs from the config (:func:`for_runs`) in its
status file, with the file's stamp, so that ``ccmeter run`` (:mod:`ccmeter.quickrun`) need
not parse it again while it is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccmeter import config, desk, folders
from ccmeter.record import Record

#: How long a proxy that ``run`` started stays up with nothing to do, unless configured.
DEFAULT_IDLE_EXIT = "10m"


def checked_config(paths: config.Paths) -> dict:
    """The config, with everything a proxy relies on checked (a :class:`CCMeterError` for
    the first problem)."""
    from ccmeter.caps.policy import parse_policy

    cfg = config.load_config(paths)
    config.config_port(cfg)
    config.config_text(cfg, "project")
    config.config_text(cfg, "upstream")
    if "idle_exit" in cfg:
        idle_exit_text(cfg)
    import_on_run(cfg)
    metrics_settings(cfg)
    if "caps" in cfg:
        parse_policy(cfg)
    if "prices" in cfg:  # as `report` does: never store costs at prices the user did not mean
        from ccmeter.views.common import load_catalog

        load_catalog(cfg)
    return cfg


def import_on_run(cfg: Mapping) -> bool | None:
    """``import_on_run`` (true or false; None when not set): what ``run`` does about
    Claude Code's transcripts as it starts (:mod:`ccmeter.runimport`)."""
    value = cfg.get("import_on_run")
    if value is None or isinstance(value, bool):
        return value
    raise config.CCMeterError(f"import_on_run in the config must be true or false, got {value!r}")


class MetricsSettings(Record):
    """The ``[metrics]`` table: where a proxy serves Prometheus metrics (``port`` None: it
    does not), and a ``user`` label for every metric."""

    port: int | None = None
    host: str = "127.0.0.1"
    user: str | None = None


def metrics_settings(cfg: Mapping) -> MetricsSettings:
    """``[metrics]`` from the config, checked (docs/metrics.md)."""
    table = cfg.get("metrics", {})
    if not isinstance(table, Mapping):
        raise config.CCMeterError("[metrics] in the config must be a table")
    port = table.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        raise config.CCMeterError(
            f"[metrics] port must be a number from 1 to 65535, got {port!r}")
    for key in ("host", "user"):
        value = table.get(key)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise config.CCMeterError(
                f"[metrics] {key} must be a non-empty string, got {value!r}")
    return MetricsSettings(port, table.get("host") or "127.0.0.1", table.get("user"))


def resolve_upstream(cli_value: str | None, cfg: Mapping) -> str | None:
    """The upstream a proxy sends metered calls to: the command line's, else the config's."""
    value = cli_value or config.config_text(cfg, "upstream")
    if value is None:
        return None
    if not desk.is_http_url(value):
        raise config.CCMeterError(
            f"upstream must be an http(s) URL such as https://gateway.example.com, got {value!r}"
        )
    return value.rstrip("/")


def configured_hosts(cfg: Mapping) -> tuple[str, ...]:
    """``hosts = [...]`` in the config: more Anthropic-compatible hosts to decrypt and meter."""
    hosts = cfg.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise config.CCMeterError('"hosts" in the config must be a list of host names')
    return tuple(h.lower() for h in hosts)


def idle_seconds(text: str, what: str = "idle_exit") -> float:
    """``10m`` -> 600.0: how long a proxy may be idle before it stops."""
    from ccmeter import periods

    duration = periods.parse_duration(text, what=f"duration for {what}")
    if duration.months:
        raise config.CCMeterError(f"{what} must be at most a few weeks, got {text!r}")
    return float(duration.seconds)


def idle_exit_text(cfg: Mapping) -> str:
    """``idle_exit`` in the config (checked), else the default of 10 minutes."""
    text = config.config_text(cfg, "idle_exit") or DEFAULT_IDLE_EXIT
    idle_seconds(text, "idle_exit in the config")
    return text


def for_runs(paths: config.Paths) -> dict[str, Any]:
    """What ``ccmeter run`` needs from the config as the file is now, for a proxy's status
    file: the file's ``stamp`` (taken first: a file changed while it was read no longer
    matches), ``upstream``, ``hosts``, ``project``, ``import_on_run``, a ``warning`` about
    unknown keys, or the ``error`` that stops a run (the full path then says it)."""
    stamp = folders.stamp(paths.config_file)
    try:
        cfg = checked_config(paths)
        return {
            "stamp": stamp,
            "upstream": resolve_upstream(None, cfg),
            "hosts": list(configured_hosts(cfg)),
            "project": config.config_text(cfg, "project"),
            "import_on_run": import_on_run(cfg),
            "warning": config.unknown_keys_text(config.unknown_keys(cfg), paths.config_file,
                                                caps=False),
        }
    except config.CCMeterError as exc:
        return {"stamp": stamp, "error": str(exc)}
