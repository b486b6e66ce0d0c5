"""The ``ccmeter`` console script.

Some command lines skip building the whole CLI (Typer, rich, every command module), which
costs more than their whole answer:

- ``ccmeter statusline`` runs after every Claude Code turn and goes straight to its one job;
- ``ccmeter --version`` prints the version;
- ``run`` joins a proxy that is up through :mod:`ccmeter.quickrun`;
- ``report``, ``sessions``, ``caps`` and ``watch --once`` go through :mod:`ccmeter.fastpath`
  when their options are plainly well formed; anything else (``--help``, a typo) gets the
  full CLI, with its own help and error messages.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args == ["statusline"]:
        from ccmeter.statusline import main as statusline

        statusline()
        return
    if args == ["--version"]:
        from ccmeter import __version__

        sys.stdout.write(f"ccmeter {__version__}\n")
        sys.stdout.flush()
        sys.exit(0)
    if args and args[0] == "run":
        from ccmeter import quickrun

        quickrun.run(args)  # exits when it joined a running proxy
    if args and args[0] in ("report", "sessions", "caps", "watch"):
        from ccmeter import fastpath

        fastpath.run(args)  # exits when it ran the command
    from ccmeter.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
