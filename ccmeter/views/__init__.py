"""What the reading commands do, without the CLI framework.

``ccmeter report``, ``sessions``, ``caps`` and ``watch --once`` are run between turns and in
scripts, so they must answer at once: their work lives here, importing neither Typer nor
(for plain output) rich, and :mod:`ccmeter.fastpath` calls it straight from the console
script. The Typer commands in :mod:`ccmeter.commands` declare the options and help, and call
the same functions.
"""
