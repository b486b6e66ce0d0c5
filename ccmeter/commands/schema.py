"""``ccmeter schema``: the database schema, printed from a fresh migration.

An installed ccmeter has no ``docs/`` folder, so this is how a user reads what
``docs/schema.md`` says (that file is this command's output).
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command()(schema)


def schema() -> None:
    """Print the database schema (tables, the stable `calls` view, indexes) as Markdown.

    The database is plain SQLite; query the `calls` view with sqlite3, sqlite-utils or
    Datasette. `ccmeter doctor` prints where the file is.

    Example:
      ccmeter schema | less
    """
    from ccmeter.schema_doc import schema_markdown

    typer.echo(schema_markdown(), nl=False)
