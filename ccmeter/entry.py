"""The ``ccmeter`` console script.

``ccmeter statusline`` runs after every Claude Code turn, so it skips building the whole CLI
(Typer, rich, mitmproxy) and goes straight to its one job.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["statusline"]:
        from ccmeter.statusline import main as statusline

        statusline()
        return
    from ccmeter.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
