"""The ``ccmeter`` command: a thin Typer root that wires the command groups together.

Errors a user can cause are :class:`ccmeter.config.CCMeterError`; they are printed as one
line on stderr with what to do next, and the process exits non-zero without a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from typing import Annotated, NoReturn

import typer

from ccmeter import __version__, config
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


#: Commands that stop with an error over an unknown key in ``[caps]`` (no warning first).
CAPS_REFUSERS = ("run", "serve", "caps")


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True,
                     help="Print ccmeter's version and exit."),
    ] = False,
) -> None:
    """Meter and cap what Claude Code costs, per project, session and model."""
    # run, serve and caps refuse an unknown key in [caps] with their own one-line error
    config.tell_unknown_keys(lambda line: typer.echo(f"ccmeter: warning: {line}", err=True),
                             caps=ctx.invoked_subcommand not in CAPS_REFUSERS)


def _register() -> None:
    from ccmeter.commands import launch

    launch.register(app)
    for name in ("report", "sessions", "live", "caps", "waste", "plan", "share", "prices",
                 "schema", "history", "metrics", "dashboard"):
        try:
            module = __import__(f"ccmeter.commands.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"ccmeter.commands.{name}":
                raise
            continue
        module.register(app)


_register()


def _one_line(text: object) -> str:
    """An error as one terminal line: line breaks folded, control characters and escape
    sequences (they may come from a file or an option) removed."""
    from ccmeter.untrusted import printable

    return printable(" ".join(str(text).split("\n")))


def _fail(message: str, code: int) -> NoReturn:
    typer.secho(f"ccmeter: {_one_line(message)}", err=True, fg=typer.colors.RED)
    sys.exit(code)


def _log_traceback() -> str | None:
    """Our bug's traceback into ccmeter's log file (not the terminal); where it went."""
    import traceback

    try:
        where = config.paths().log_file
        config.ensure_private_dir(where.parent)
        with open(where, "a", encoding="utf-8") as log_file:
            log_file.write(f"ccmeter {' '.join(sys.argv[1:])!r} failed:\n"
                           f"{traceback.format_exc()}")
        return str(where)
    except Exception:  # the log is a courtesy: never a second traceback
        return None


def main() -> None:
    """Run the CLI: every error a user can meet is one line on stderr and a non-zero exit.

    Click's usage errors (an unknown option, a value of the wrong type) are folded into one
    line too, and anything unexpected is our bug: its traceback goes to the log file."""
    for arg in sys.argv[1:]:
        if not arg.isascii():
            try:
                arg.encode("utf-8")  # bytes that are not UTF-8 arrive as lone surrogates
            except UnicodeEncodeError:
                raw = arg.encode("utf-8", "surrogateescape")
                _fail(f"the argument {raw!r} is not UTF-8 text; ccmeter reads its arguments "
                      "as UTF-8", 2)
    try:
        code = app(standalone_mode=False)
    except Exception as exc:
        fail_for(exc)
    sys.exit(code if isinstance(code, int) else 0)


def fail_for(error: Exception) -> NoReturn:
    """``error``, raised by a command, as the user sees it: one line on stderr and an exit
    code (the fast path in :mod:`ccmeter.fastpath` ends the same way)."""
    try:
        raise error
    except CCMeterError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except typer.TyperException as exc:  # click's usage errors (typer carries its own click)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `ccmeter caps set`: the help
            exc.show()  # type: ignore[attr-defined]
            sys.exit(getattr(exc, "exit_code", 2))
        ctx = getattr(exc, "ctx", None)
        format_message = getattr(exc, "format_message", None)
        message = format_message() if callable(format_message) else str(exc)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        _fail(message + hint, getattr(exc, "exit_code", 2))
    except (OSError, sqlite3.Error) as exc:
        # The machine said no (a read-only folder, a full disk, a locked database): one line
        # that names it; the traceback goes to the log for the curious.
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        _fail(f"{type(exc).__name__}: {exc}", 1)
    except Exception as exc:
        where = _log_traceback()
        _fail(f"unexpected error: {type(exc).__name__}: {exc} (a bug; "
              + (f"details in {where})" if where else "please report it)"), 70)
    sys.exit(1)  # not reached: every branch above exits


if __name__ == "__main__":
    main()
