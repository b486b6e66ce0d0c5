"""``ccmeter run``, ``serve``, ``env``, ``cert`` and ``doctor``: getting traffic metered."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Annotated

import typer

from ccmeter import child, config, configcheck, desk, gitroot
from ccmeter.failures import metering_off_line

ProjectOption = Annotated[
    str | None,
    typer.Option("--project", help="Tag every call with this project name "
                 "(default: 'project' in the config file, else the git repository's folder name, "
                 "else the current folder's)."),
]
UpstreamOption = Annotated[
    str | None,
    typer.Option("--upstream", help="Send metered API traffic to this Anthropic-compatible "
                 "base URL (a company gateway or a local stand-in) instead of "
                 "api.anthropic.com. Default: 'upstream' in the config file."),
]
ReverseOption = Annotated[
    bool,
    typer.Option("--reverse", help="No-certificate setup: accept plain HTTP on loopback and "
                 "forward it to the API; point ANTHROPIC_BASE_URL at the proxy."),
]
PortOption = Annotated[
    int | None,
    typer.Option("--port", help=f"Port to listen on (default {config.DEFAULT_PORT}, or "
                 "'port' in the config file).", min=1, max=65535),
]



def register(app: typer.Typer) -> None:
    app.command(
        # Everything from the first word of the command on belongs to the command, so
        # `ccmeter run claude -p "…"` works with or without the `--`.
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "allow_interspersed_args": False},
        options_metavar="[OPTIONS] [--] COMMAND [ARGS]...",
        no_args_is_help=True,
    )(run)
    app.command()(serve)
    app.command()(env)
    app.command()(cert)
    app.command()(doctor)
    app.command()(addon)


def run(
    ctx: typer.Context,
    project: ProjectOption = None,
    upstream: UpstreamOption = None,
) -> None:
    """Run a command (usually `claude`) with every Claude API call it makes metered.

    The command goes through your ccmeter proxy on 127.0.0.1, with ccmeter's CA given to
    it alone; nothing system-wide changes. One proxy serves every run: a run joins the one
    that is up (from an earlier run, `ccmeter serve` or a login service) or starts it, and a
    proxy a run started stops once idle for 'idle_exit' (config, default 10m). ccmeter exits
    with the command's exit code and prints one line with what this run cost.

    Examples:
      ccmeter run -- claude
      ccmeter run --project api-server -- claude -p "fix the failing test"
    """
    from ccmeter import launch  # lazily: mitmproxy is slow to import

    command = list(ctx.args)
    if command and command[0] == "--":
        command = command[1:]
    elif command and command[0].startswith("-"):  # before any `--`: an option, mistyped
        import difflib

        close = difflib.get_close_matches(command[0].split("=")[0], ["--project", "--upstream",
                                                                      "--help"], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise config.CCMeterError(f"no such option: {command[0]}{hint}; the command to run "
                                  "goes after `--`: ccmeter run [--project P] -- claude")
    if not command:
        raise config.CCMeterError("nothing to run; usage: ccmeter run -- claude")
    paths = config.paths()
    cfg = configcheck.checked_config(paths)
    launch.setup_file_logging(paths)
    from ccmeter.runimport import at_run_start  # transcripts: a hint, or a background import

    at_run_start(paths.data_dir, cfg.get("import_on_run"), lambda line: typer.echo(line, err=True))
    exit_code, summary = launch.run_wrapped(
        command,
        paths=paths,
        project=project or config.config_text(cfg, "project") or gitroot.detect_project(),
        upstream=configcheck.resolve_upstream(upstream, cfg),
        extra_hosts=configcheck.configured_hosts(cfg),
        notify=lambda line: typer.echo(line, err=True),
    )
    typer.echo(summary, err=True)
    raise typer.Exit(exit_code)


def serve(
    port: PortOption = None,
    reverse: ReverseOption = False,
    upstream: UpstreamOption = None,
    project: Annotated[str | None, typer.Option("--project", "-p",
                       help="Tag every call through this proxy with a project name.")] = None,
    idle_exit: Annotated[str | None, typer.Option(
        "--idle-exit", help="Stop after this long without a `ccmeter run` using the proxy, "
        "an open connection or a call, e.g. 10m (default: run until stopped).")] = None,
    any_port: Annotated[bool, typer.Option(
        "--any-port", hidden=True,
        help="Listen on any free port (how `ccmeter run` starts the shared proxy).")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=1, max=65535, metavar="PORT", rich_help_panel="Metrics",
        help="Serve Prometheus metrics on this port, path /metrics (default: 'port' in the "
        "config's [metrics] table; none). The figures come from the database, so any proxy "
        "sharing it shows the same totals.")] = None,
    metrics_host: Annotated[str | None, typer.Option(
        "--metrics-host", metavar="HOST", rich_help_panel="Metrics",
        help="Address for the metrics endpoint (default 127.0.0.1, this machine only; "
        "0.0.0.0 lets other machines scrape it).")] = None,
) -> None:
    """Run the metering proxy in the foreground, for tools that cannot be wrapped.

    Point a tool at it with the lines `ccmeter env` prints (HTTPS_PROXY and the CA), or
    with --reverse set ANTHROPIC_BASE_URL to it. Stop with Ctrl-C.

    `ccmeter run` joins a running `ccmeter serve` (unless it is --reverse or sends to
    another --upstream), so a login service can keep one up for every session.

    Examples:
      ccmeter serve
      ccmeter serve --reverse --port 8400
      ccmeter serve --idle-exit 30m
      ccmeter serve --metrics-port 9464
    """
    from ccmeter import launch, proxy  # lazily: mitmproxy is slow to import

    paths = config.paths()
    cfg = configcheck.checked_config(paths)
    metrics = configcheck.metrics_settings(cfg)
    idle_exit_s = configcheck.idle_seconds(idle_exit, "--idle-exit") if idle_exit else None
    port = 0 if any_port else port or config.config_port(cfg)
    launch.setup_file_logging(paths)
    if not reverse:
        launch.ensure_ca(paths)
    settings = proxy.ProxySettings(
        paths=paths, port=port, reverse=reverse, project=project,
        upstream=configcheck.resolve_upstream(upstream, cfg),
        extra_hosts=(*child.hosts_from_base_url(os.environ), *configcheck.configured_hosts(cfg)),
        cloud=child.cloud_providers(os.environ),
        idle_exit_s=idle_exit_s,
        metrics_port=metrics_port or metrics.port,
        metrics_host=metrics_host or metrics.host,
        metrics_required=metrics_port is not None,
    )
    running = proxy.start(settings)
    typer.echo(f"ccmeter: metering proxy on {running.url} (log: {paths.log_file})", err=True)
    if running.metrics is not None:
        from ccmeter import exposure

        wide = "" if exposure.is_loopback(running.metrics.host) else (
            " (reachable from other machines: they can read your spend)")
        typer.echo(f"ccmeter: Prometheus metrics on {running.metrics.url}{wide}", err=True)
    if running.otlp is not None:
        typer.echo(f"ccmeter: OpenTelemetry metrics to {running.otlp.endpoint}", err=True)
    elif desk.otlp_endpoint(os.environ):
        typer.echo("ccmeter: warning: the OTEL_EXPORTER_OTLP_* variables ask for metrics but "
                   f"none are pushed (see {paths.log_file}; pip install 'ccmeter[otel]')",
                   err=True)
    for line in launch.env_lines(port=running.port, reverse=reverse, paths=paths):
        typer.echo(f"  {line}", err=True)
    # The handler only notes the signal: setting a threading.Event there could deadlock, for
    # the handler runs in this thread, which may hold the Event's own lock inside wait().
    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _frame: stopping.append(signum))
    told: str | None = None
    while True:
        writer = running.meter.writer  # metering that stops or works again is said here too
        failing = writer.failing if writer is not None else None
        if failing != told:
            typer.echo(metering_off_line(failing) if failing
                       else "ccmeter: metering works again", err=True)
            told = failing
        time.sleep(0.1)
        if stopping:
            break
        if not running._thread.is_alive():
            if running.desk.idle_exited:
                proxy.stop_exporters(running)
                typer.echo("ccmeter: stopped after being idle", err=True)
                return
            raise config.CCMeterError(f"the proxy stopped unexpectedly; see {paths.log_file}")
    running.stop()
    typer.echo("ccmeter: stopped", err=True)


def env(
    port: Annotated[int | None, typer.Option(
        "--port", help=f"The port `ccmeter serve` listens on, for the export lines to point "
        f"at (default {config.DEFAULT_PORT}, or 'port' in the config file).", min=1,
        max=65535)] = None,
    reverse: ReverseOption = False,
) -> None:
    """Print `export` lines that point a shell at `ccmeter serve`.

    Example:
      eval "$(ccmeter env)"
    """
    from ccmeter import launch  # lazily: mitmproxy is slow to import

    paths = config.paths()
    cfg = config.load_config(paths)
    port = port or config.config_port(cfg)
    if not reverse:
        launch.ensure_ca(paths)
    for line in launch.env_lines(port=port, reverse=reverse, paths=paths):
        typer.echo(line)
    from ccmeter import proxies

    if not proxies.answers(port):  # stderr: stdout stays eval-able
        typer.echo(f"ccmeter: warning: no ccmeter proxy answers on 127.0.0.1:{port}; start "
                   f"`ccmeter serve{'' if port == config.DEFAULT_PORT else f' --port {port}'}"
                   f"{' --reverse' if reverse else ''}` or calls will fail", err=True)


def cert(
    install: Annotated[bool, typer.Option("--install", help="Add the CA to the operating "
                       "system's trust store (asks first; needs admin rights).")] = False,
    uninstall: Annotated[bool, typer.Option("--uninstall",
                         help="Remove the CA from the system trust store.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y",
                   help="Do not ask before changing the trust store.")] = False,
) -> None:
    """Show ccmeter's CA certificate (created on first use); optionally trust it system-wide.

    `ccmeter run` never needs the system-wide install: it hands the CA to the child only.

    Examples:
      ccmeter cert
      ccmeter cert --install
    """
    from ccmeter import launch  # lazily: mitmproxy is slow to import

    if install and uninstall:
        raise config.CCMeterError("choose one of --install and --uninstall")
    paths = config.paths()
    info = launch.ensure_ca(paths)
    typer.echo(f"certificate: {info.cert_path}")
    typer.echo(f"sha256:      {info.sha256}")
    typer.echo(f"private key: {info.key_path} (mode 0600; never share it)")
    if not (install or uninstall):
        return
    commands = launch.trust_store_commands(info.cert_path, uninstall=uninstall)
    typer.echo("\nThis will run:")
    for command in commands:
        typer.echo("  " + " ".join(command))
    if not yes and not typer.confirm("Go ahead?", default=False):
        raise typer.Exit(1)
    for command in commands:
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            raise config.CCMeterError(f"'{' '.join(command)}' failed (exit {result.returncode})")
    typer.echo("done")


def doctor() -> None:
    """Check the CA, config, database, port and `claude`; say what is wrong and how to fix it.

    It also checks the report totals table against the calls, hour by hour, and rebuilds it
    from the calls if anything ever wrote around its triggers.

    Example:
      ccmeter doctor
    """
    from ccmeter import exposure, launch, proxies, render, store  # lazily: mitmproxy is slow

    paths = config.paths()
    problems = 0
    width = max(shutil.get_terminal_size().columns, 40)

    def fold(text: str, first: str, rest: str = "     ") -> str:
        """``text`` wrapped to the terminal after ``first`` (paths are never split)."""
        import textwrap

        return textwrap.fill(text, width, initial_indent=" " * len(first),
                             subsequent_indent=rest, break_long_words=False,
                             break_on_hyphens=False)[len(first):]

    def shown(path: object) -> str:
        """A path under the home folder as ``~/…``: the lines stay within the terminal."""
        from pathlib import Path

        try:
            return "~/" + Path(str(path)).relative_to(Path.home()).as_posix()
        except ValueError:
            return str(path)

    def report(ok: bool, what: str, fix: str = "") -> None:
        nonlocal problems
        mark = typer.style("ok  ", fg=typer.colors.GREEN) if ok else typer.style(
            "FAIL", fg=typer.colors.RED)
        typer.echo(f"{mark} {fold(what, 'FAIL ')}"
                   + ("" if ok or not fix else f"\n     fix: {fold(fix, '     fix: ')}"))
        problems += not ok

    def note(what: str) -> None:
        typer.echo(typer.style("note", fg=typer.colors.YELLOW) + f" {fold(what, 'note ')}")

    typer.echo(f"config folder: {shown(paths.config_dir)}\ndata folder:   {shown(paths.data_dir)}")
    cfg: dict = {}
    try:
        cfg = config.load_config(paths, quiet=True)  # its unknown keys are reported below
        report(True, f"config {shown(paths.config_file)}"
               + ("" if paths.config_file.exists() else " (none yet; defaults apply)"))
    except config.CCMeterError as exc:
        report(False, str(exc), f"edit or remove {shown(paths.config_file)}")
    for unknown in config.unknown_keys(cfg):
        if unknown.path[0] == "caps":
            continue  # the [caps] check below says it (the table is not applied)
        report(False, f"unknown key {unknown.dotted} in {shown(paths.config_file)}: ignored",
               f"did you mean {unknown.suggestion}?" if unknown.suggestion
               else "remove it, or see docs/configuration.md for the valid keys")
    if "prices" in cfg:
        from ccmeter.commands.common import load_catalog

        try:
            load_catalog(cfg)
            report(True, "[prices] settings")
        except config.CCMeterError as exc:
            report(False, str(exc), "`ccmeter prices` or edit the config file; until then "
                   "`run` and `serve` refuse to start")
    try:
        db = store.connect(paths.db_file)
        count = store.query(db, "SELECT COUNT(*) AS n FROM api_calls")[0]["n"]
        report(True, f"database {shown(paths.db_file)} ({render.plural(count, 'call')}, schema v"
               f"{len(store.MIGRATIONS)})")
        wrong = store.rollup_out_of_step(db)
        if wrong:
            # derived sums only: rebuilt from the calls, in one transaction
            from ccmeter.store.db import transaction

            with transaction(db):
                store.rebuild_rollup(db)
            report(False, f"report totals ({', '.join(wrong)} calls) were out of step with "
                   "the calls", "rebuilt from the calls just now; reports are right again")
        db.conn.close()
    except Exception as exc:
        report(False, f"database {shown(paths.db_file)}: {exc}",
               "check the folder's permissions and free disk space; if another program "
               "holds it locked, close it")
    for proxy in proxies.running(paths):
        label = f"proxy {proxy['pid']} ({proxy.get('listen') or 'address unknown'})"
        wrong = proxies.mismatches(proxy, paths)
        if wrong:
            report(False, f"{label} {'; '.join(wrong)}: caps and prices set here do not "
                   "reach it", "stop it and start it again with this ccmeter and the same "
                   "CCMETER_HOME (or none) as this command")
        elif proxy.get("metering") == "failing":
            report(False, f"{label}: metering FAILING since {proxy.get('since')}: "
                   f"{proxy.get('reason')}", "fix what the reason says; the proxy tries again "
                   "on every call and writes the rows it kept")
        elif proxy.get("config_error"):
            report(False, f"{label}: config not applied: {proxy.get('config_error')}",
                   f"fix {shown(proxy.get('config_file') or paths.config_file)}; the proxy "
                   "keeps the caps and prices it had and re-reads the file when it changes")
        else:
            report(True, f"{label}: metering ok, since {proxy.get('started_at')}")
        if proxy.get("share_error"):
            report(False, f"{label}: {proxy.get('share_error')}", "team budgets fall back to "
                   "personal caps (caps.on_error = allow) or refuse calls (block) until the "
                   "share answers again")
        if proxy.get("metrics"):
            note(f"{label} serves Prometheus metrics at {proxy['metrics']}")
        wide = exposure.exposed_text(proxy.get("listen"))
        if wide:
            report(False, f"{label} listens beyond this machine ({', '.join(wide)}): anyone "
                   "who can reach it can send calls that are metered and capped as yours",
                   "start it again with --listen-host 127.0.0.1 (as ccmeter run and serve do)")
    try:
        info = launch.ensure_ca(paths)
        mode = info.key_path.stat().st_mode & 0o777
        report(mode == 0o600, f"CA {shown(info.cert_path)} sha256 {info.sha256[:23]}…",
               f"chmod 600 {shown(info.key_path)}")
    except Exception as exc:
        report(False, f"CA in {shown(paths.ca_dir)}: {exc}",
               f"move {shown(paths.ca_dir)} aside; ccmeter creates a new CA on next use")
    try:
        port = config.config_port(cfg)
    except config.CCMeterError as exc:
        report(False, str(exc), f"edit {shown(paths.config_file)}")
        port = config.DEFAULT_PORT
    if launch.port_is_free(port):
        report(True, f"port {port} free for `ccmeter serve`")
    else:
        note(f"port {port} is in use: fine if that is your `ccmeter serve`; otherwise use "
             "`ccmeter serve --port N` and `ccmeter env --port N`")
    if "caps" in cfg:
        from ccmeter.caps.policy import parse_policy

        try:
            parse_policy(cfg)
            report(True, "[caps] settings")
        except config.CCMeterError as exc:
            report(False, f"[caps]: {exc}", f"edit {config.paths().config_file}")
    claude = shutil.which("claude")
    if claude:
        try:
            version = subprocess.run([claude, "--version"], capture_output=True, text=True,
                                     timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            version = "version unknown"
        report(True, f"claude on PATH: {shown(claude)} ({version})")
    else:
        report(False, "claude is not on PATH",
               "npm install -g @anthropic-ai/claude-code, or pass its path to `ccmeter run --`")
    if child.no_proxy_bypasses(os.environ):
        report(False, "NO_PROXY covers api.anthropic.com: calls would bypass the meter",
               "remove api.anthropic.com (or *) from NO_PROXY")
    if problems:
        typer.echo(f"{problems} problem{'s' * (problems != 1)} found", err=True)
        raise typer.Exit(1)
    typer.echo("all good")


def addon() -> None:
    """Print the path of the mitmproxy script, for running the meter under your own mitmproxy.

    Give mitmdump --listen-host 127.0.0.1: without it, it listens on every interface and
    anyone on your network could send calls through your meter (the addon warns).

    Example:
      mitmdump -s "$(ccmeter addon)" --listen-host 127.0.0.1 \\
        --allow-hosts '^api\\.anthropic\\.com:443$'
    """
    from importlib import resources

    typer.echo(resources.files("ccmeter.mitmdump_script") / "ccmeter_addon.py")
