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
from ccmeter.caps.policy import (
    MODES,
    parse_loop,
    parse_per_call,
    parse_percent,
    parse_policy,
    parse_warn_at,
)
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


#: Caps ``unset``/``clear`` handle that exist only for all spending (no project, no session).
GLOBAL_ONLY = ("loop", "plan_5h", "plan_7d")


def _amount(window: str) -> Any:
    return typer.Option(f"--{window}", help=f"{window.capitalize()} cap in US dollars, "
                        "e.g. 20 or 7.50.", show_default=False)


def _budget(tier: str, window: str) -> Any:
    whose = "the whole team" if tier == "team" else "your group (ccmeter team set --group)"
    return typer.Option(f"--{tier}-{window}", metavar="USD", help=f"{window.capitalize()} "
                        f"budget of {whose}, or off; kept in the team share.",
                        show_default=False, rich_help_panel="Team budgets")


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
    loop: Annotated[str | None, typer.Option(
        "--loop", help="Refuse a session's next request once it has made the same tool call "
        "this many times (the loop guard; 2 or more). Without it, loops are only warned "
        "about.")] = None,
    per_call: Annotated[str | None, typer.Option(
        "--per-call", help="Refuse a single call whose forecast input cost (before any "
        "output) is above this many US dollars; with --project, for that project only.",
        show_default=False, metavar="USD")] = None,
    plan_5h: Annotated[str | None, typer.Option(
        "--plan-5h", help="Refuse calls once the subscription's 5-hour window is this many "
        "percent used (as its answers report it), until it resets.", show_default=False,
        metavar="PERCENT")] = None,
    plan_7d: Annotated[str | None, typer.Option(
        "--plan-7d", help="The same for the weekly window.", show_default=False,
        metavar="PERCENT")] = None,
    plan_warn_at: Annotated[str | None, typer.Option(
        "--plan-warn-at", help="Warn once a plan window is this many percent used "
        "(default 80).", show_default=False, metavar="PERCENT")] = None,
    team_daily: Annotated[str | None, _budget("team", "daily")] = None,
    team_weekly: Annotated[str | None, _budget("team", "weekly")] = None,
    team_monthly: Annotated[str | None, _budget("team", "monthly")] = None,
    group_daily: Annotated[str | None, _budget("group", "daily")] = None,
    group_weekly: Annotated[str | None, _budget("group", "weekly")] = None,
    group_monthly: Annotated[str | None, _budget("group", "monthly")] = None,
) -> None:
    """Set caps (in US dollars) and cap settings; running proxies pick them up at once.

    Examples:
      ccmeter caps set --hourly 5 --daily 20 --monthly 300
      ccmeter caps set --project big-refactor --daily 10
      ccmeter caps set --per-session --total 3
      ccmeter caps set --per-call 2
      ccmeter caps set --plan-5h 90 --plan-warn-at 75
      ccmeter caps set --mode hard --window rolling
      ccmeter caps set --loop 8
      ccmeter caps set --team-monthly 5000 --group-monthly 1500
    """
    budgets = {k: v for k, v in {
        "team-daily": team_daily, "team-weekly": team_weekly, "team-monthly": team_monthly,
        "group-daily": group_daily, "group-weekly": group_weekly,
        "group-monthly": group_monthly}.items() if v is not None}
    if budgets:  # team budgets live in the share, not in config.toml (ccmeter.tiers)
        _user_errors(lambda: _set_budgets(budgets, project, per_session, hourly, daily,
                                          weekly, monthly, total, per_call, plan_5h, plan_7d,
                                          plan_warn_at))
        return
    amounts = {"hourly": hourly, "daily": daily, "weekly": weekly, "monthly": monthly,
               "total": total}
    settings = {"mode": mode, "window": window, "on_error": on_error, "timezone": timezone,
                "warn_at": warn_at, "estimate": estimate, "loop": loop, "plan_5h": plan_5h,
                "plan_7d": plan_7d, "plan_warn_at": plan_warn_at}

    def change(table: dict[str, Any]) -> str:
        given = {k: v for k, v in amounts.items() if v is not None}
        chosen = {k: v for k, v in settings.items() if v is not None}
        if not given and not chosen and per_call is None:
            raise config.CCMeterError("nothing to set; e.g. ccmeter caps set --daily 20")
        if "total" in given and not per_session:
            raise config.CCMeterError("--total is a per-session cap: add --per-session")
        if per_call is not None and per_session:
            raise config.CCMeterError("--per-call applies to every call (or a --project's); "
                                      "give it without --per-session")
        if chosen and (project is not None or per_session):
            raise config.CCMeterError(
                "--mode, --window, --warn-at, --on-error, --timezone, --estimate, --loop and "
                "--plan-* apply to every session; give them without --project/--per-session")
        target, label = _scope_table(table, project, per_session)
        done = []
        for name, value in given.items():
            pico = parse_usd(value, f"--{name}")
            target[name] = usd_text(pico)
            done.append(f"{name} {cap_usd(pico)}")
        if per_call is not None:
            pico = parse_per_call(per_call, "--per-call")
            target["per_call"] = usd_text(pico)
            done.append(f"per call {cap_usd(pico)}")
        for key, value in chosen.items():
            shown: Any
            if key == "warn_at":
                table[key] = shown = list(parse_warn_at(value.split(",")))
            elif key == "estimate":
                table[key] = shown = usd_text(parse_usd(value, "--estimate"))
            elif key == "loop":
                table[key] = shown = parse_loop(value)
            elif key.startswith("plan_"):
                fraction = parse_percent(value, f"--{key.replace('_', '-')}")
                assert fraction is not None
                percent = round(fraction * 100, 6)
                table[key] = int(percent) if percent == int(percent) else percent
                shown = f"{table[key]:g}%"
            else:
                table[key] = shown = value
            done.append(f"{key.replace('_', '-')} {shown}")
        if given or per_call is not None:
            return f"caps for {label}: " + ", ".join(done)
        return "caps: " + ", ".join(done)

    _user_errors(lambda: _edit(change))


def _set_budgets(budgets: dict[str, str], *others: Any) -> None:
    if any(others):
        raise config.CCMeterError("give team budgets (--team-*, --group-*) in a command of "
                                  "their own")
    from ccmeter import tiers

    paths = config.paths()
    summary, where = tiers.change_budgets(config.load_config(paths), paths, budgets)
    _log(paths, f"{summary}: {where}")
    typer.echo(summary)


@caps_app.command("unset")
def unset_caps(
    windows: Annotated[list[str], typer.Argument(
        help="Which caps to remove: hourly, daily, weekly, monthly (total for --per-session), "
        "per_call, or loop, plan_5h, plan_7d.",
        show_default=False)],
    project: ProjectOption = None,
    per_session: PerSessionOption = False,
) -> None:
    """Remove some caps.

    Examples:
      ccmeter caps unset hourly
      ccmeter caps unset daily --project big-refactor
      ccmeter caps unset per_call
      ccmeter caps unset plan_5h
    """

    def change(table: dict[str, Any]) -> str:
        names = [w.strip().lower().replace("-", "_") for w in windows]
        scoped = SESSION_WINDOWS if per_session else (*WINDOWS, "per_call")
        valid = (*scoped, *(() if per_session or project is not None else GLOBAL_ONLY))
        bad = [w for w in names if w not in valid]
        if bad:
            if bad[0] in GLOBAL_ONLY:
                raise config.CCMeterError(f"{bad[0]} applies to every session; remove it "
                                          "without --project/--per-session")
            raise config.CCMeterError(f"unknown cap {bad[0]!r}; one of {', '.join(valid)}")
        target, label = _scope_table(table, project, per_session, create=False)
        missing = [w for w in names if w not in (table if w in GLOBAL_ONLY else target)]
        if missing:
            where = "" if missing[0] in GLOBAL_ONLY else f" for {label}"
            raise config.CCMeterError(f"no {missing[0]} cap is set{where}; see: ccmeter caps")
        for name in names:
            del (table if name in GLOBAL_ONLY else target)[name]
        if names == ["loop"]:
            return "removed the loop cap (loops are warned about only)"
        return f"removed for {label}: {', '.join(names)}"

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
            names = [n for n in (*SESSION_WINDOWS, "per_call") if n in target]
            for name in names:
                del target[name]
            return f"removed {render.plural(len(names), 'cap')} for {label}"
        count = sum(1 for n in (*WINDOWS, "per_call", "plan_5h", "plan_7d")
                    if table.pop(n, None) is not None)
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
    session: Annotated[str | None, typer.Option(
        "--session", help="Pause only this session's caps (the loop guard's included): its "
        "id, or enough of its start to be unique (as `ccmeter sessions` shows it). Other "
        "sessions stay capped.", show_default=False)] = None,
) -> None:
    """Lift enforcement for a while (one hour unless --for says otherwise); spend is still
    metered. Logged, and shown in `ccmeter caps`.

    Examples:
      ccmeter caps pause
      ccmeter caps pause --for 30m
      ccmeter caps pause --for 2026-12-01
      ccmeter caps pause --session 3f2a --for 10m
    """

    def change(table: dict[str, Any]) -> str:
        from ccmeter import periods

        ends = periods.parse_until(for_)
        until = datetime.fromtimestamp(ends).astimezone()
        if session is not None:
            return _pause_session(table, session, until, for_)
        table["paused_until"] = until.replace(microsecond=0)
        _log(config.paths(), f"caps paused until {until:%Y-%m-%d %H:%M:%S %z} "
                             f"(ccmeter caps pause --for {for_})")
        return f"caps paused until {until:%Y-%m-%d %H:%M} (resume early: ccmeter caps resume)"

    _user_errors(lambda: _edit(change))


def _pause_session(table: dict[str, Any], prefix: str, until: datetime, for_: str) -> str:
    """``[caps.paused_sessions]``: one session's caps lifted until ``until`` (pauses that
    have ended are dropped on the way)."""
    import time

    full = _resolve_session(prefix)
    paused = table.setdefault("paused_sessions", {})
    if not isinstance(paused, dict):
        raise config.CCMeterError("[caps.paused_sessions] is not a table")
    now = time.time()
    for sid in [s for s, t in paused.items() if isinstance(t, datetime) and t.timestamp() <= now]:
        del paused[sid]
    paused[full] = until.replace(microsecond=0)
    _log(config.paths(), f"caps paused for session {full} until "
                         f"{until:%Y-%m-%d %H:%M:%S %z} (ccmeter caps pause --session "
                         f"{prefix} --for {for_})")
    return (f"caps paused for session {full} until {until:%Y-%m-%d %H:%M} "
            f"(resume early: ccmeter caps resume --session {full[:8]})")


def _resolve_session(prefix: str) -> str:
    """A full session id from enough of its start (as ``ccmeter caps --session`` takes it);
    a session the database does not know yet is taken as given when it is a full id."""
    from ccmeter import sessions
    from ccmeter.views.common import open_db

    if not prefix.strip():
        raise config.CCMeterError("--session needs a session id")
    db = open_db()
    try:
        return sessions.resolve_session(db, prefix)
    except ValueError as exc:
        if len(prefix.strip()) >= 32:  # a whole id: pausing it ahead of its calls is fine
            return prefix.strip()
        raise config.CCMeterError(str(exc)) from None
    finally:
        db.conn.close()


@caps_app.command("resume")
def resume(
    session: Annotated[str | None, typer.Option(
        "--session", help="End only this session's pause (its id or the start of it).",
        show_default=False)] = None,
) -> None:
    """Enforce caps again after `ccmeter caps pause`.

    Examples:
      ccmeter caps resume
      ccmeter caps resume --session 3f2a
    """

    def change(table: dict[str, Any]) -> str:
        if session is not None:
            paused = table.get("paused_sessions") or {}
            found = [s for s in paused if s.startswith(session.strip())]
            if len(found) != 1:
                raise config.CCMeterError(
                    f"no paused session starts with {session!r}" if not found else
                    f"{session!r} matches {len(found)} paused sessions: {', '.join(found)}")
            del paused[found[0]]
            if not paused:
                table.pop("paused_sessions", None)
            _log(config.paths(), f"caps resumed for session {found[0]}")
            return f"caps enforced again for session {found[0]}"
        was = table.pop("paused_until", None)
        _log(config.paths(), "caps resumed (ccmeter caps resume)")
        return "caps enforced again" if was is not None else "caps were not paused"

    _user_errors(lambda: _edit(change))
