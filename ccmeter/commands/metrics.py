"""``ccmeter metrics``: the Prometheus exposition from the database, printed or written as a
node_exporter textfile (no proxy needed: a cron job can run it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(metrics)


def metrics(
    textfile: Annotated[Path | None, typer.Option(
        "--textfile", help="Write the metrics to this file, atomically (a temporary file in "
        "the same folder, then renamed), for node_exporter's textfile collector; the name "
        "must end in .prom. Default: print them.")] = None,
) -> None:
    """Print ccmeter's Prometheus metrics, read from the database (no proxy needed).

    The same figures `ccmeter serve --metrics-port` serves: cost in USD, tokens by type,
    calls by status and refusals per project, model, provider and kind; each cap's spend,
    limit and what remains. A crontab line can keep node_exporter's textfile current.

    Examples:
      ccmeter metrics
      ccmeter metrics --textfile /var/lib/node_exporter/ccmeter.prom
    """
    from ccmeter import config
    from ccmeter.metrics import prom
    from ccmeter.metrics.snapshot import Reader

    paths = config.paths()
    config.load_config(paths)  # a broken config is said here, once (the reader goes on)
    reader = Reader(paths.db_file, paths)
    try:
        if reader.snapshot().ok is False:
            raise config.CCMeterError(f"cannot read the database {paths.db_file}; see "
                                      f"{paths.log_file} or run `ccmeter doctor`")
        if textfile is None:
            typer.echo(prom.exposition(reader).decode(), nl=False)
            return
        if textfile.suffix != ".prom":
            raise config.CCMeterError(f"{textfile}: node_exporter reads only files ending in "
                                      ".prom; name it so")
        if not textfile.parent.is_dir():
            raise config.CCMeterError(f"{textfile.parent} is not a folder")
        try:
            prom.write_textfile(reader, textfile)
        except OSError as exc:
            raise config.CCMeterError(f"cannot write {textfile}: {exc.strerror or exc}") from exc
    finally:
        reader.close()
