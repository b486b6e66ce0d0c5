"""``ccmeter run`` when a proxy is already up: join it without loading the CLI.

People run ``claude -p`` in loops through ``ccmeter run``; joining the resident proxy should
cost about what ``ccmeter --version`` costs. Building the Typer app, parsing the TOML config
and importing the meter's modules cost ten times more than the whole join, so
:mod:`ccmeter.entry` hands a plainly well-formed ``run`` here first (``run [--project P]
[--upstream URL] [--] command …``), and this module, with the standard library and the small
modules :mod:`ccmeter.desk`, :mod:`ccmeter.child`, :mod:`ccmeter.folders` and
:mod:`ccmeter.gitroot`, does what the full path does:

1. finds a running proxy in the data folder's status files that suits the run and has
   recorded what it read from the config file **as the file is now** (its ``run_config``:
   the file's stamp, ``upstream``, ``hosts``, ``project``, any warning about unknown keys;
   :func:`ccmeter.configcheck.for_runs`), so the config need not be parsed again;
2. says hello to it (the proxy answers as itself, and logs the join);
3. runs the command with the proxy and CA in its environment, as the full path does;
4. says bye; the proxy answers with the run's summary line (:mod:`ccmeter.runsummary`).

Anything else — no proxy up, a config changed since the proxy read it or that it found
wrong, a proxy that does not answer, an unusual command line, Windows — returns before
anything happened, and the full CLI runs the command: it starts a proxy, prints the config's
error, or explains the command line, with its own messages.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence

from ccmeter import child, desk, folders, gitroot

TYPE_CHECKING = False  # typing itself costs 2 ms to import
if TYPE_CHECKING:
    from typing import Any

#: What the proxy is told when it cannot answer at the end of a run.
PROXY_GONE = ("the metering proxy stopped during this run (calls it had in flight are "
              "recorded when the next one starts)")


def parse(args: Sequence[str]) -> tuple[str | None, str | None, list[str]] | None:
    """``(project, upstream, command)`` for a plainly well-formed ``run`` command line."""
    if not args or args[0] != "run":
        return None
    rest = list(args[1:])
    options: dict[str, str] = {}
    while rest and rest[0].startswith("-"):
        token = rest.pop(0)
        if token == "--":
            break
        option, equals, value = token.partition("=")
        if option not in ("--project", "--upstream") or option in options:
            return None
        if not equals:
            if not rest:
                return None
            value = rest.pop(0)
        if not value.strip() or value.startswith("-"):
            return None
        options[option] = value
    if not rest or rest[0].startswith("-"):
        return None  # nothing to run, or an option the full CLI explains
    upstream = options.get("--upstream")
    if upstream is not None and not desk.is_http_url(upstream):
        return None
    return options.get("--project"), upstream.rstrip("/") if upstream else None, rest


def run(args: Sequence[str]) -> None:
    """Run ``ccmeter run …`` here and exit, or return having done nothing (the full CLI
    runs it then)."""
    parsed = parse(args)
    if parsed is None or sys.platform == "win32":
        return
    cli_project, cli_upstream, command = parsed
    env = os.environ
    config_dir, data_dir = folders.folders(env, sys.platform)
    executable = child.which(command[0], env)
    ca_cert = os.path.join(data_dir, "ca", "mitmproxy-ca-cert.pem")
    if executable is None or not os.path.isfile(ca_cert):
        return  # the full path says the command is not found, or makes the CA
    found = find(data_dir, os.path.join(config_dir, folders.CONFIG_NAME), cli_upstream, env)
    if found is None:
        return
    doc, settings, hosts = found
    port, where = desk.listen_port(doc), desk.address(doc)
    if port is None or where is None:
        return
    project = cli_project or settings.get("project") or gitroot.detect_project()
    run_id = desk.new_run_id()
    try:
        answer = desk.hello(where, run_id, project)
    except desk.DeskError:
        return  # stale: the full path removes its file and starts a proxy
    if answer.get("pid") != doc.get("pid"):
        return
    # From here on the run is ccmeter's, as it is on the full path.
    if isinstance(settings.get("warning"), str):
        _say(f"ccmeter: warning: {settings['warning']}")
    failing = desk.metering_failure(doc)
    if failing:
        from ccmeter.failures import metering_off_line

        _say(metering_off_line(failing))
    from ccmeter.runimport import at_run_start  # transcripts: a hint, or a background import

    at_run_start(data_dir, settings.get("import_on_run"), _say)
    exit_code, error = 1, None
    try:
        warn = _log_warning(data_dir)
        exit_code = child.run_child([executable, *command[1:]], child.child_env(
            desk.proxy_url(port, run_id, project),
            child.ca_bundle_for_child(ca_cert, env, warn=warn), env, hosts, warn=warn))
    except Exception as exc:  # said as the full CLI says it, after the summary
        error = exc
    finally:
        _say(finish(where, doc.get("pid"), run_id, project))
    if error is not None:
        from ccmeter.cli import fail_for

        fail_for(error)
    sys.exit(exit_code)


def find(data_dir: str, config_file: str, cli_upstream: str | None,
         env: Mapping[str, str]) -> tuple[dict, dict, list[str]] | None:
    """A running proxy that suits this run and read the config file as it is now: its
    status, what it read from the config, and the run's metered hosts."""
    stamp = folders.stamp(config_file)
    cloud = child.cloud_providers(env)
    status_dir = os.path.join(data_dir, desk.STATUS_FOLDER)
    try:
        names = sorted(n for n in os.listdir(status_dir) if n.endswith(".json"))
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(status_dir, name), encoding="utf-8") as file:
                doc = json.load(file)
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or not desk.alive(doc.get("pid")):
            continue
        settings = doc.get("run_config")
        if (not isinstance(settings, dict) or settings.get("error")
                or settings.get("stamp") != stamp
                or doc.get("config_file") != config_file
                or doc.get("db_file") != os.path.join(data_dir, "ccmeter.db")):
            continue
        upstream = cli_upstream or settings.get("upstream")
        extra = settings.get("hosts")
        if not isinstance(extra, list) or not (upstream is None or isinstance(upstream, str)):
            continue
        hosts = desk.metered_hosts(upstream, [*child.hosts_from_base_url(env), *extra])
        if desk.serves(doc, upstream, hosts, cloud, desk.otlp_endpoint(env)):
            return doc, settings, hosts
    return None


def finish(where: tuple[int, str], pid: Any, run_id: str, project: str | None,
           paths: Any = None) -> str:
    """Say bye to the proxy and return the run's summary line: the proxy's, or, when the
    proxy is gone, one made here from the rows (``paths``: a :class:`ccmeter.config.Paths`,
    else the user's)."""
    try:
        ended = desk.bye(where, run_id)
    except desk.DeskError as exc:
        import logging

        logging.getLogger(__name__).warning(
            "ccmeter: the proxy %s did not answer at the end of run %s: %s", pid, run_id, exc)
        ended = {"metering_failure": PROXY_GONE}
    line = ended.get("line")
    if isinstance(line, str):
        return line
    from ccmeter import config, runsummary

    return runsummary.for_run(paths or config.paths(), run_id, project, ended).line()


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _log_warning(data_dir: str) -> Callable[[str], None]:
    """A warning about the command's environment goes to the log file, as on the full path."""

    def warn(line: str) -> None:
        from pathlib import Path

        from ccmeter.logfile import setup

        setup(Path(data_dir, "logs", "ccmeter.log"))
        import logging

        logging.getLogger("ccmeter.run").warning("%s", line)

    return warn
