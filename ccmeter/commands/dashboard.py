"""``ccmeter dashboard``: the local web dashboard. The server is :mod:`ccmeter.dashboard.server`."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(dashboard)


def dashboard(
    host: Annotated[
        str,
        typer.Option("--host", help="Address to listen on. Loopback (127.0.0.1) by default: "
                     "the dashboard has no login, so anything else lets others read your "
                     "spend; give another address only on purpose."),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535,
                     help="Port to listen on; 0 (the default) picks a free one."),
    ] = 0,
    no_open: Annotated[
        bool,
        typer.Option("--no-open", help="Do not open a browser; just print the address."),
    ] = False,
) -> None:
    """A local dashboard in your browser: spend over time by project and model, sessions
    call by call, caps and plan windows. Read-only, on 127.0.0.1, no network.

    It reads the database directly, so it updates within a second or two of each call
    while any ccmeter proxy runs. Ctrl-C stops it.

    Examples:
      ccmeter dashboard
      ccmeter dashboard --port 8765 --no-open
    """
    from ccmeter.dashboard.server import run

    run(host, port, open_browser=not no_open, echo=typer.echo)
