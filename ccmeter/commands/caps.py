"""``ccmeter caps``: show and edit the spending caps in the ``[caps]`` table of config.toml.

Running proxies re-read the file on their next request, so a change applies at once.
See docs/caps.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer

from ccmeter import config, render
from ccmeter.caps.policy import MODES, parse_policy, parse_warn_at
from ccmeter.caps.windows import SESSION_WINDOWS, WINDOWS
from ccmeter.money import cap_usd, parse_usd, usd_text
from ccmeter.views.caps import show

caps_app = typer.Typer(name="caps", invoke_without_command=True)  # help: the callback's

FormatOption = Annotated[
    str,
    typer.Option("--format", "-f", help=f"Output format: {', '.join(render.FORMATS)}."),
]
ProjectOption = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Caps for this project only (as named in reports)."),
]
PerSessionOption = Annotated[
    bool,
    typer.Option("--per-session", help="Caps that apply to each Claude Code session apart."),
]


def _amount(window: str) -> Any:
    return typer.Option(f"--{window}", help=f"{window.capitalize()} cap in US dollars, "
                        "e.g. 20 or 7.50.", show_default=False)


def register(app: typer.Typer) -> None:
    app.add_typer(caps_app)


def _user_errors(fn: Callable[[], None]) -> None:
    """A CCMeterError is one red line on stderr and exit code 2 (as in ``cli.main``)."""
    try:
        fn()
    except config.CCMeterError as exc:
        typer.secho(f"ccmeter: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(exc.exit_code if hasattr(exc, "exit_code") else 2) from None


def _log(paths: config.Paths, message: str) -> None:
    """One line in ccmeter's log file (pauses and resumes are worth an audit trail)."""
    try:
        config.ensure_private_dir(paths.log_dir)
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,000")
        with open(paths.log_file, "a", encoding="utf-8") as log_file:
            log_file.write(f"{stamp} {os.getpid()} ccmeter.caps WARNING {message}\n")
    except OSError:
        pass


def _edit(change: Callable[[dict[str, Any]], str]) -> None:
    """Load the config, let ``change`` edit its ``[caps]`` table, validate, save, report."""
    paths = config.paths()
    cfg = config.load_config(paths)
    table = cfg.setdefault("caps", {})
    if not isinstance(table, dict):
        raise config.CCMeterError(f"[caps] in {paths.config_file} is not a table")
    summary = change(table)
    _prune(table)
    if not cfg["caps"]:
        del cfg["caps"]
    parse_policy(cfg)  # never save a config the proxies would reject
    config.save_config(cfg, paths)
    typer.echo(summary)


def _prune(table: dict[str, Any]) -> None:
    projects = table.get("projects")
    if isinstance(projects, dict):
        for name in [n for n, t in projects.items() if not t]:
            del projects[name]
        if not projects:
            del table["projects"]
    if table.get("per_session") == {}:
        del table["per_session"]


def _scope_table(table: dict[str, Any], project: str | None, per_session: bool,
                 create: bool = True) -> tuple[dict[str, Any], str]:
    if project is not None and per_session:
        raise config.CCMeterError("choose one of --project and --per-session")
    if project is not None:
        if not project.strip():
            raise config.CCMeterError("--project needs a name")
        projects = table.setdefault("projects", {}) if create else table.get("projects", {})
        return (projects.setdefault(project, {}) if create else projects.get(project, {}),
                f"project {project}")
    if per_session:
        return (table.setdefault("per_session", {}) if create else table.get("per_session", {}),
                "each session")
    return table, "all spending"


@caps_app.callback()
def caps_root(
    ctx: typer.Context,
    fmt: FormatOption = "table",
    session: Annotated[str | None, typer.Option(
        "--session", help="Also show per-session caps for this session: its id, or enough "
        "of its start to be unique (as `ccmeter sessions` shows it).")] = None,
) -> None:
    """Spending caps that stop a runaway session before the money is spent.

    Without a subcommand: each cap's spend, what remains and when it resets.

    Examples:
      ccmeter caps
      ccmeter caps set --hourly 5 --daily 20 --monthly 300
      ccmeter caps set --project big-refactor --daily 10
    """
    if ctx.invoked_subcommand is None:
        _user_errors(lambda: show(fmt, session))


@caps_app.command("set")
def set_caps(
    hourly: Annotated[str | None, _amount("hourly")] = None,
    daily: Annotated[str | None, _amount("daily")] = None,
    weekly: Annotated[str | None, _amount("weekly")] = None,
    monthly: Annotated[str | None, _amount("monthly")] = None,
    total: Annotated[str | None, typer.Option(
        "--total", help="With --per-session: the most one session may cost in all.")] = None,
    project: ProjectOption = None,
    per_session: PerSessionOption = False,
    mode: Annotated[str | None, typer.Option(
        "--mode", help="hard: also cut a stream that crosses a cap; soft: refuse only new "
        "calls.")] = None,
    window: Annotated[str | None, typer.Option(
        "--window", help="calendar (this hour/day/ISO week/month, local time) or rolling "
        "(the last 1h/24h/7d/30d).")] = None,
    warn_at: Annotated[str | None, typer.Option(
        "--warn-at", help="Warn at these fractions of a cap, e.g. 0.8 or 0.5,0.9.")] = None,
    on_error: Annotated[str | None, typer.Option(
        "--on-error", help="When the database cannot be read: allow (default) or block.")
    ] = None,
    timezone: Annotated[str | None, typer.Option(
        "--timezone", help="IANA zone for calendar windows (default: the system's).")] = None,
    estimate: Annotated[str | None, typer.Option(
        "--estimate", help="Dollars reserved per in-flight call until its cost is known "
        "(default 0).")] = None,
) -> None:
    """Set caps (in US dollars) and cap settings; running proxies pick them up at once.

    Examples:
      ccmeter caps set --hourly 5 --daily 20 --monthly 300
      ccmeter caps set --project big-refactor --daily 10
      ccmeter caps set --per-session --total 3
      ccmeter caps set --mode hard --window rolling
    """
    amounts = {"hourly": hourly, "daily": daily, "weekly": weekly, "monthly": monthly,
               "total": total}
    settings = {"mode": mode, "window": window, "on_error": on_error, "timezone": timezone,
                "warn_at": warn_at, "estimate": estimate}

    def change(table: dict[str, Any]) -> str:
        given = {k: v for k, v in amounts.items() if v is not None}
        chosen = {k: v for k, v in settings.items() if v is not None}
        if not given and not chosen:
            raise config.CCMeterError("nothing to set; e.g. ccmeter caps set --daily 20")
        if "total" in given and not per_session:
            raise config.CCMeterError("--total is a per-session cap: add --per-session")
        if chosen and (project is not None or per_session):
            raise config.CCMeterError(
                "--mode, --window, --warn-at, --on-error, --timezone and --estimate apply to "
                "every cap; give them without --project/--per-session")
        target, label = _scope_table(table, project, per_session)
        done = []
        for name, value in given.items():
            pico = parse_usd(value, f"--{name}")
            target[name] = usd_text(pico)
            done.append(f"{name} {cap_usd(pico)}")
        for key, value in chosen.items():
            if key == "warn_at":
                table[key] = list(parse_warn_at(value.split(",")))
            elif key == "estimate":
                table[key] = usd_text(parse_usd(value, "--estimate"))
            else:
                table[key] = value
            done.append(f"{key.replace('_', '-')} {table[key]}")
        return f"caps for {label}: " + ", ".join(done) if given else "caps: " + ", ".join(done)

    _user_errors(lambda: _edit(change))


@caps_app.command("unset")
def unset_caps(
    windows: Annotated[list[str], typer.Argument(
        help="Which caps to remove: hourly, daily, weekly, monthly (total for --per-session).",
        show_default=False)],
    project: ProjectOption = None,
    per_session: PerSessionOption = False,
) -> None:
    """Remove some caps.

    Examples:
      ccmeter caps unset hourly
      ccmeter caps unset daily --project big-refactor
    """

    def change(table: dict[str, Any]) -> str:
        allowed = SESSION_WINDOWS if per_session else WINDOWS
        bad = [w for w in windows if w not in allowed]
        if bad:
            raise config.CCMeterError(f"unknown cap {bad[0]!r}; one of {', '.join(allowed)}")
        target, label = _scope_table(table, project, per_session, create=False)
        missing = [w for w in windows if w not in target]
        if missing:
            raise config.CCMeterError(f"no {missing[0]} cap is set for {label}; see: ccmeter caps")
        for name in windows:
            del target[name]
        return f"removed for {label}: {', '.join(windows)}"

    _user_errors(lambda: _edit(change))


@caps_app.command("clear")
def clear_caps(
    project: ProjectOption = None,
    per_session: PerSessionOption = False,
) -> None:
    """Remove every cap (or only a project's, or the per-session ones); settings stay.

    Examples:
      ccmeter caps clear
      ccmeter caps clear --project big-refactor
    """

    def change(table: dict[str, Any]) -> str:
        if project is not None or per_session:
            target, label = _scope_table(table, project, per_session, create=False)
            names = [n for n in SESSION_WINDOWS if n in target]
            for name in names:
                del target[name]
            return f"removed {render.plural(len(names), 'cap')} for {label}"
        count = sum(1 for n in WINDOWS if table.pop(n, None) is not None)
        count += sum(len(t) for t in (table.pop("projects", None) or {}).values())
        count += len(table.pop("per_session", None) or {})
        return f"removed {render.plural(count, 'cap')}"

    _user_errors(lambda: _edit(change))


@caps_app.command("mode")
def mode_cmd(
    mode: Annotated[str, typer.Argument(
        help="hard: refuse new calls and cut a stream that crosses a cap; soft: refuse new "
        "calls only.", show_default=False)],
) -> None:
    """Choose what happens when a cap is reached.

    Example:
      ccmeter caps mode hard
    """

    def change(table: dict[str, Any]) -> str:
        if mode not in MODES:
            raise config.CCMeterError(f"mode must be hard or soft, not {mode!r}")
        table["mode"] = mode
        return f"caps mode: {mode}"

    _user_errors(lambda: _edit(change))


#: ``caps pause`` without ``--for``: long enough to finish a task, short enough that the caps
#: come back on their own the same afternoon.
PAUSE_DEFAULT = "1h"


@caps_app.command("pause")
def pause(
    for_: Annotated[str, typer.Option(
        "--for", help="How long to stop enforcing caps: 30m (minutes), 2h, 1h30m, 1d, 1w, or "
        "until when: 2026-12-01 (its midnight), 2026-12-01T09:00; one hour when not given.",
        show_default=False)] = PAUSE_DEFAULT,
) -> None:
    """Lift enforcement for a while (one hour unless --for says otherwise); spend is still
    metered. Logged, and shown in `ccmeter caps`.

    Examples:
      ccmeter caps pause
      ccmeter caps pause --for 30m
      ccmeter caps pause --for 2026-12-01
    """

    def change(table: dict[str, Any]) -> str:
        from ccmeter import periods

        ends = periods.parse_until(for_)
        until = datetime.fromtimestamp(ends).astimezone()
        table["paused_until"] = until.replace(microsecond=0)
        _log(config.paths(), f"caps paused until {until:%Y-%m-%d %H:%M:%S %z} "
                             f"(ccmeter caps pause --for {for_})")
        return f"caps paused until {until:%Y-%m-%d %H:%M} (resume early: ccmeter caps resume)"

    _user_errors(lambda: _edit(change))


@caps_app.command("resume")
def resume() -> None:
    """Enforce caps again after `ccmeter caps pause`.

    Example:
      ccmeter caps resume
    """

    def change(table: dict[str, Any]) -> str:
        was = table.pop("paused_until", None)
        _log(config.paths(), "caps resumed (ccmeter caps resume)")
        return "caps enforced again" if was is not None else "caps were not paused"

    _user_errors(lambda: _edit(change))
