"""``ccmeter watch`` and ``ccmeter statusline``: the live views of spend.

``watch`` redraws a terminal frame (caps, burn rate, active sessions, plan usage) as calls
land; ``statusline`` prints Claude Code's status bar line (its work is in
:mod:`ccmeter.statusline`, which has no Typer: it runs after every turn).
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from ccmeter import config
from ccmeter.commands.common import open_db
from ccmeter.views.watch import (
    _minutes,
    print_once,
    render_watch_frame,  # noqa: F401  (re-exported: tests)
    watch_renderables,
)


def register(app: typer.Typer) -> None:
    app.command()(watch)
    app.command()(statusline)


def watch(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    active: Annotated[str, typer.Option(
        "--active", help="A session is active if it made a call within this long: 15m, 2h, "
        "1d (a bare number is minutes).")] = "15m",
    interval: Annotated[float, typer.Option(
        "--interval", min=0.2, help="Seconds between checks for new calls.")] = 1.0,
) -> None:
    """A live view: today's spend against each cap, burn rate, active sessions, plan usage.

    Refreshes as calls land (a cheap change check each --interval) and at least every 10
    seconds. Ctrl-C to quit.

    Examples:
      ccmeter watch
      ccmeter watch --once --active 1h
    """
    from rich.console import Group
    from rich.live import Live

    from ccmeter import store
    from ccmeter.render import make_console

    if once or not sys.stdout.isatty():
        print_once(active)
        return
    active_minutes = _minutes(active, "--active")
    cfg = config.load_config()
    db = open_db()
    try:
        console = make_console(sys.stdout)
        frame = Group(*watch_renderables(db, cfg, None, active_minutes, console.width))
        version, drawn = store.data_version(db), time.monotonic()
        with Live(frame, console=console, auto_refresh=False, transient=False) as live:
            while True:
                time.sleep(interval)
                current = store.data_version(db)
                if current == version and time.monotonic() - drawn < 10:
                    continue
                version, drawn = current, time.monotonic()
                cfg = config.load_config()
                live.update(Group(*watch_renderables(db, cfg, None, active_minutes,
                                                     console.width)),
                            refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        db.conn.close()


# --- statusline ----------------------------------------------------------------------------
# The work is in ccmeter.statusline (no Typer there: it runs after every Claude Code turn).


def statusline() -> None:
    """Print one short line for Claude Code's status bar, from the JSON it sends on stdin.

    Shows this session's cost, today's spend against the daily cap (⚠ from 80 %), and for
    subscribers the 5-hour and 7-day plan usage last seen. It never fails: on any problem
    it prints a minimal line and exits 0.

    Set it up in ~/.claude/settings.json:
      {"statusLine": {"type": "command", "command": "ccmeter statusline"}}

    Example:
      ccmeter statusline < status.json   # JSON as Claude Code sends it
    """
    from ccmeter import statusline as line

    line.main()
