"""The console script's fast path: ``report``, ``sessions``, ``caps`` and ``watch --once``
without building the Typer app.

Importing Typer (with the click and pydantic it brings) and every command module costs more
than the whole answer of a reading command, and people run these between turns and in scripts.
So :mod:`ccmeter.entry` hands a command line here first. It is parsed against the same options
the Typer commands declare (``tests/test_fastpath.py`` checks the two agree) and only when it
is plainly well formed: ``--option value``, ``--option=value`` or ``-o value``, values that do
not start with ``-``, numbers in range. Anything else (``--help``, a mistake, an unusual form)
returns ``False`` and the full CLI parses it, so help and error messages are the CLI's own.
The work itself is :mod:`ccmeter.views`, which the Typer commands call too.
"""

from __future__ import annotations

import errno
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

#: option -> (parameter, kind): ``str``, ``list`` (may repeat), ``count`` (int >= 0),
#: ``seconds`` (float >= 0.2) or ``flag``.
Spec = dict[str, tuple[str, str]]

_FILTERS: Spec = {
    "--since": ("since", "str"), "-s": ("since", "str"),
    "--until": ("until", "str"), "-u": ("until", "str"),
    "--project": ("project", "str"), "-p": ("project", "str"),
    "--model": ("model", "str"), "-m": ("model", "str"),
    "--format": ("fmt", "str"), "-f": ("fmt", "str"),
}
OPTIONS: dict[str, Spec] = {
    "report": {**_FILTERS, "--by": ("by", "list"), "-b": ("by", "list"),
               "--source": ("source", "str"), "--as-model": ("as_model", "str"),
               "--cache-ttl": ("cache_ttl", "str"), "--vs-plan": ("vs_plan", "str")},
    "sessions": {**_FILTERS, "--limit": ("limit", "count"), "-n": ("limit", "count"),
                 "--source": ("source", "str")},
    "caps": {"--format": ("fmt", "str"), "-f": ("fmt", "str"), "--session": ("session", "str")},
    "watch": {"--once": ("once", "flag"), "--active": ("active", "str"),
              "--interval": ("interval", "seconds")},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "report": {"by": None, "since": None, "until": None, "project": None, "model": None,
               "fmt": "table", "source": "all", "as_model": None, "cache_ttl": None,
               "vs_plan": None},
    "sessions": {"since": "7d", "until": None, "project": None, "model": None, "limit": 20,
                 "fmt": "table", "source": "all"},
    "caps": {"fmt": "table", "session": None},
    "watch": {"once": False, "active": "15m", "interval": 1.0},
}
_COUNT = re.compile(r"[0-9]{1,9}")
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


def parse(args: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    """``(command, parameters)`` for a plainly well-formed command line, else None."""
    if not args or args[0] not in OPTIONS:
        return None
    name, spec = args[0], OPTIONS[args[0]]
    values = dict(DEFAULTS[name])
    if not all(arg.isascii() or _utf8(arg) for arg in args):
        return None  # bytes that are not UTF-8 (lone surrogates): the CLI says so
    rest = list(args[1:])
    while rest:
        token = rest.pop(0)
        option, equals, value = token.partition("=") if token.startswith("--") else (
            token, "", "")
        if option not in spec:
            return None
        param, kind = spec[option]
        if kind == "flag":
            if equals:
                return None
            values[param] = True
            continue
        if not equals:
            if not rest:
                return None
            value = rest.pop(0)
        if value.startswith("-"):
            return None  # click would take it as the value; the CLI decides
        if kind == "count":
            if not _COUNT.fullmatch(value):
                return None
            values[param] = int(value)
        elif kind == "seconds":
            if not _SECONDS.fullmatch(value) or float(value) < 0.2:
                return None
            values[param] = float(value)
        elif kind == "list":
            values[param] = [*(values[param] or []), value]
        else:
            values[param] = value
    if name == "watch" and not values["once"] and sys.stdout.isatty():
        return None  # the live view: the full CLI (it draws with rich anyway)
    return name, values


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _report(p: dict[str, Any]) -> None:
    from ccmeter.views.report import run

    run(p["by"], p["since"], p["until"], p["project"], p["model"], p["fmt"], p["source"],
        p["as_model"], p["cache_ttl"], p["vs_plan"])


def _sessions(p: dict[str, Any]) -> None:
    from ccmeter.views.sessions import run

    run(p["since"], p["until"], p["project"], p["model"], p["limit"], p["fmt"], p["source"])


def _caps(p: dict[str, Any]) -> None:
    from ccmeter.views.caps import show

    show(p["fmt"], p["session"])


def _watch(p: dict[str, Any]) -> None:
    from ccmeter.views.watch import print_once

    print_once(p["active"])


RUN: dict[str, Callable[[dict[str, Any]], None]] = {
    "report": _report, "sessions": _sessions, "caps": _caps, "watch": _watch,
}


def run(args: Sequence[str]) -> bool:
    """Run ``args`` if it is a fast command line (exits the process), else return False."""
    parsed = parse(args)
    if parsed is None:
        return False
    name, params = parsed
    from ccmeter import config

    # unknown config keys: the one warning line the CLI's root callback arranges
    config.tell_unknown_keys(_warn, caps=name != "caps")
    try:
        RUN[name](params)
    except KeyboardInterrupt:
        sys.exit(130)  # as the Typer app ends on Ctrl-C
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            _failed(name, exc)
        # the reader went away (`ccmeter report | head -1`): quiet, exit 1, as the Typer app
        sys.stdout, sys.stderr = _Pacified(sys.stdout), _Pacified(sys.stderr)  # type: ignore
        sys.exit(1)
    except Exception as exc:
        _failed(name, exc)
    sys.exit(0)


def _warn(line: str) -> None:
    """A warning on stderr, as the CLI writes it (``typer.echo(..., err=True)``)."""
    sys.stderr.write(f"ccmeter: warning: {line}\n")
    sys.stderr.flush()


def _failed(name: str, exc: Exception) -> NoReturn:
    """The CLI's own handling of an error (its modules are imported only now)."""
    from ccmeter.config import CCMeterError

    if name == "caps" and isinstance(exc, CCMeterError):
        import typer  # `ccmeter caps` reports its errors as the Typer command does

        typer.secho(f"ccmeter: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    from ccmeter.cli import fail_for

    fail_for(exc)


class _Pacified:
    """A stream whose ``flush`` ignores a closed pipe (the interpreter flushes at exit)."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.wrapped, attr)
