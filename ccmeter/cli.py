"""The ``ccmeter`` command: a thin Typer root that wires the command groups together.

Errors a user can cause are :class:`ccmeter.config.CCMeterError`; they are printed as one
line on stderr with what to do next, and the process exits non-zero without a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from typing import Annotated

import typer

from ccmeter import __version__
from ccmeter.commands.helptext import TidyGroup
from ccmeter.config import CCMeterError

app = typer.Typer(
    name="ccmeter",
    cls=TidyGroup,  # no <type> placeholders, paragraphs that wrap to the terminal
    help="Meter and cap what Claude Code costs, per project, session and model.\n\n"
    "Example: ccmeter run -- claude",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ccmeter {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True,
                     help="Print ccmeter's version and exit."),
    ] = False,
) -> None:
    """Meter and cap what Claude Code costs, per project, session and model."""


def _register() -> None:
    from ccmeter.commands import launch

    launch.register(app)
    for name in ("reports", "caps", "share", "prices", "schema"):
        try:
            module = __import__(f"ccmeter.commands.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"ccmeter.commands.{name}":
                raise
            continue
        module.register(app)


_register()


def main() -> None:
    try:
        app()
    except CCMeterError as exc:
        typer.secho(f"ccmeter: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except (OSError, sqlite3.Error) as exc:
        # The machine said no (a read-only folder, a full disk, a locked database): one line
        # that names it; the traceback goes to the log for the curious.
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        typer.secho(f"ccmeter: {type(exc).__name__}: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
