"""``ccmeter import`` and ``ccmeter reconcile``: history from Claude Code's transcripts, and
where the transcripts and the wire disagree.

Each command resolves paths and options, calls :mod:`ccmeter.importer` or
:mod:`ccmeter.reconcile`, and hands the result to :mod:`ccmeter.render`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ccmeter import config, folders
from ccmeter.commands.common import (
    FormatOption,
    ProjectOption,
    SinceOption,
    UntilOption,
    check_format,
    fold_journals,
    iso,
    load_catalog,
    open_db,
    table_rows,
    time_range,
    timezone_name,
)


def register(app: typer.Typer) -> None:
    app.command("import")(import_transcripts)
    app.command()(reconcile)


_IMPORT_COLUMNS = (
    ("files", "Transcript files"), ("files_read", "Files read"),
    ("files_reread", "Files rewritten, read again"), ("bytes_read", "Bytes read"),
    ("lines", "Lines read"), ("call_lines", "Lines with a call's usage"),
    ("new_calls", "Calls added"), ("updated_calls", "Calls completed by later lines"),
    ("on_wire", "Of those added, metered on the wire too"),
    ("synthetic", "Skipped: Claude Code's own messages"),
    ("malformed", "Skipped: malformed lines"), ("unknown_types", "Skipped: unknown record types"),
    ("truncated", "Files ending in part of a line"), ("unreadable", "Files that could not be read"),
)


def import_transcripts(
    source: Annotated[
        list[Path] | None,
        typer.Option("--from", help="A folder of transcripts to read (give it again for more). "
                     "Default: $CLAUDE_CONFIG_DIR/projects, else ~/.claude/projects and "
                     "~/.config/claude/projects."),
    ] = None,
    fmt: FormatOption = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                     help="Print nothing (errors still go to stderr).")] = False,
) -> None:
    """Import the calls in Claude Code's transcripts: history from before ccmeter.

    Every assistant message with usage in every project folder (subagents' files too) becomes
    one call, priced with the catalog at its own time and marked source = transcript. Only
    numbers, ids, model names, times and the project name are kept. Safe to run again: only
    what is new is read. A call ccmeter also metered on the wire counts once, from the wire.

    Examples:
      ccmeter import
      ccmeter import --from ~/backup/claude/projects
    """
    from ccmeter import importer, render
    from ccmeter.runimport import STAMP_NAME

    fmt = check_format(fmt)
    paths = config.paths()
    catalog = load_catalog(config.load_config())
    roots = list(source) if source else [
        Path(root) for root in folders.claude_transcript_roots(os.environ)]
    for root in source or ():
        if not root.is_dir():
            raise config.CCMeterError(f"--from {root}: no such folder")
    db = open_db()
    try:
        with importer.one_at_a_time(paths.data_dir / "import.lock"):
            stats = importer.import_transcripts(db, catalog, roots)
    finally:
        db.conn.close()
    with contextlib.suppress(OSError):  # only the hint of `ccmeter run` reads it
        (paths.data_dir / STAMP_NAME).write_text(f"{time.time():.0f}\n", encoding="utf-8")
    if quiet:
        return
    summary = stats.as_dict()
    if fmt != "table":
        columns = [render.Column(key, header, "int") for key, header in _IMPORT_COLUMNS]
        columns.append(render.Column("seconds", "Seconds", "number"))
        summary["seconds"] = round(stats.seconds, 3)
        render.emit([summary], columns, fmt, title="Import",
                    meta={"folders": [str(r) for r in roots], "generated_at": iso(time.time())})
        return
    _print_import(stats, roots)


def _print_import(stats: Any, roots: list[Path]) -> None:
    from ccmeter.render import plural

    where = ", ".join(str(r) for r in roots)
    if not stats.files:
        typer.echo(f"No Claude Code transcripts in {where}.")
        return
    lines = [f"Read {plural(stats.files_read, 'file')} of {stats.files:,} "
             f"({stats.bytes_read / 1e6:.1f} MB, {plural(stats.lines, 'line')}) in "
             f"{stats.seconds:.2f} s from {where}.",
             f"Added {plural(stats.new_calls, 'call')}"
             + (f" ({stats.on_wire} also metered on the wire: those count once, from the wire)"
                if stats.on_wire else "")
             + (f"; completed {plural(stats.updated_calls, 'call')} from newer lines"
                if stats.updated_calls else "") + "."]
    skipped = [f"{stats.synthetic} of Claude Code's own messages" if stats.synthetic else "",
               f"{plural(stats.malformed, 'malformed line')}" if stats.malformed else "",
               f"{stats.unknown_types} of unknown record types" if stats.unknown_types else ""]
    if any(skipped):
        lines.append("Skipped " + ", ".join(s for s in skipped if s) + ".")
    if stats.truncated:
        lines.append(f"{plural(stats.truncated, 'file')} ended in part of a line (being "
                     "written, or cut): read on from there next time.")
    if stats.unreadable:
        lines.append(f"{plural(stats.unreadable, 'file')} could not be read (see the log).")
    if not stats.files_read:
        lines = [f"Nothing new in {plural(stats.files, 'transcript file')} ({where})."]
    lines.append("See them: ccmeter report --by month · compare with the wire: "
                 "ccmeter reconcile --since 30d")
    for line in lines:
        typer.echo(line)


def reconcile(
    since: SinceOption = "30d",
    until: UntilOption = None,
    project: ProjectOption = None,
    fmt: FormatOption = "table",
) -> None:
    """Per session, the wire against the transcripts: calls, tokens and cost, and the calls
    the transcripts lack.

    Sessions with calls both metered on the wire and imported from transcripts (run
    `ccmeter import` first). missing = calls on the wire no transcript records (auxiliary
    Haiku calls, subagents); token and cost differences are wire minus transcript.

    Examples:
      ccmeter reconcile --since 7d
      ccmeter reconcile --project api-server --format csv
    """
    from ccmeter import render
    from ccmeter.reconcile import TOKEN_KINDS
    from ccmeter.reconcile import reconcile as build

    fmt = check_format(fmt)
    now = time.time()
    start, end = time_range(since, until, now)
    catalog = load_catalog(config.load_config())
    db = open_db()
    try:
        fold_journals(db, catalog)
        result = build(db, start, end, project)
    finally:
        db.conn.close()
    machine = fmt != "table"
    # calls and money stay on a narrow terminal; the start, then the token deltas, go first
    columns = [render.Column("session", "Session", whole=True),
               render.Column("project", "Project"),
               render.Column("first_call", "Started", "datetime", drop=2),
               render.Column("wire_calls", "Wire calls", "int", keep=True),
               render.Column("transcript_calls", "Transcript calls", "int", keep=True),
               render.Column("missing_calls", "Missing", "int", keep=True)]
    headers = {"input_tokens": "input", "cache_write_tokens": "cache write",
               "cache_read_tokens": "cache read", "output_tokens": "output"}
    for kind in TOKEN_KINDS:
        if machine:
            columns += [render.Column(f"wire_{kind}", f"Wire {headers[kind]}", "int"),
                        render.Column(f"transcript_{kind}", f"Transcript {headers[kind]}",
                                      "int")]
        columns.append(render.Column(f"{kind}_diff", f"Δ {headers[kind]}", "int", drop=1))
    columns += [render.Column("wire_cost", "Wire cost", "usd", keep=True),
                render.Column("transcript_cost", "Transcript cost", "usd", keep=True),
                render.Column("difference", "Difference", "usd", keep=True)]
    if machine:
        columns.insert(3, render.Column("last_call", "Last call", "datetime"))
        meta = {"since": iso(start), "until": iso(end), "project": project,
                "sessions": result.totals["sessions"], "timezone": timezone_name(),
                "generated_at": iso(now)}
        render.emit(result.rows, columns, fmt, title="Reconcile: wire vs transcripts",
                    totals=result.totals, meta=meta)
        return
    if not result.rows:
        typer.echo("No session has calls both metered on the wire and in the imported "
                   "transcripts in this period. Run `ccmeter import` first; a wider --since "
                   "may find some.")
        return
    caption = {"period": f"{_local(start)} → {_local(end)} ({timezone_name()})",
               "missing": "wire calls no transcript records (auxiliary Haiku calls, "
                          "subagents)",
               "Δ, difference": "wire minus transcript"}
    render.emit(table_rows(result.rows), columns, fmt,
                title=f"Reconcile: wire vs transcripts "
                      f"({render.plural(result.totals['sessions'], 'session')})",
                totals=result.totals, meta=caption)


def _local(ts: float | None) -> str:
    from ccmeter.statusline import _local as local

    return local(ts) if ts is not None else "now"
