"""Rows out to people (a rich table) or to machines (JSON, CSV): one renderer for every report.

Callers describe their output as plain rows (mappings) plus :class:`Column` descriptors and
call :func:`emit`; no command formats money or dates itself. Kinds of column value:

========  ===================================  ======================  =====================
kind      value                                table                   JSON / CSV
========  ===================================  ======================  =====================
text      str or None                          as is ("" for None)     string / null
int       int or None                          ``1,234,567``           integer / null
usd       int picodollars, None = unpriced     ``$12.34``/"unpriced"   ``KEY_usd`` decimal
                                                                       string + ``KEY_picousd``
                                                                       integer; both null
                                                                       when unpriced
percent   float fraction (0.25 = 25 %)         ``25%``                 number (the fraction)
datetime  Unix seconds, datetime or ISO str    local ``YYYY-MM-DD      ISO 8601 with the local
                                               HH:MM``                 UTC offset
spark     float fraction of the largest row,   ``█████▌`` (or          left out (presentation
          or a sequence of numbers             ``▁▃▇`` for a list)     only)
number    a decimal as str or Decimal (a rate)  as given, right-aligned string / null
========  ===================================  ======================  =====================

The JSON document is ``{"title", "meta", "columns", "rows", "totals"}``; CSV is a header of
field names and one line per row (totals are left out so a spreadsheet's own sums stay
right). Both are documented as a stable schema in ``docs/report-formats.md``.

Tables respect ``NO_COLOR``, fit the terminal's width and carry no escape codes when the
output is not a terminal. Fitting keeps one line per row: below 110 columns counts become
``12.3k`` / ``4.56M``; spark columns go below 70; then columns are hidden, those marked
``drop`` first (highest first), then extra counts, dates and amounts, never a ``keep`` one;
text that still does not fit is shortened with an ellipsis, except a ``whole`` column's.

Money in a table follows one rule for the whole table (:func:`ccmeter.money.usd_places`):
cents when every amount in it is $1 or more (or zero), otherwise four decimals for every
amount, so decimal points line up and a column never mixes ``$9.33`` with ``$0.5266``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from ccmeter import money
from ccmeter.untrusted import escape_controls, json_text, printable

FORMATS = ("table", "json", "csv")
KINDS = ("text", "int", "usd", "percent", "datetime", "spark", "number")
NARROW = 70  # below this many columns a table drops its spark column
COMPACT = 110  # below this, token counts are shown as 12.3k / 4.56M
WHOLE_MAX = 40  # a "whole" text column is shortened only past this many characters

_BARS = " ▏▎▍▌▋▊▉█"
_SPARKS = "▁▂▃▄▅▆▇█"
_BAR_WIDTH = 12


class Column:
    """One output column: the row key it reads, its table header and its kind of value.

    For narrow tables: ``keep`` is never hidden; ``whole`` is never hidden nor shortened (an
    id that must be read in full); ``drop`` > 0 is hidden before the others, highest first.
    """

    __slots__ = ("drop", "header", "keep", "key", "kind", "whole")

    def __init__(self, key: str, header: str, kind: str = "text", keep: bool = False,
                 whole: bool = False, drop: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"column {key!r}: unknown kind {kind!r}; one of {KINDS}")
        self.key, self.header, self.kind = key, header, kind
        self.keep, self.whole, self.drop = keep, whole, drop

    def _fields(self) -> dict[str, Any]:
        return {"key": self.key, "header": self.header, "kind": self.kind, "keep": self.keep,
                "whole": self.whole, "drop": self.drop}

    def replace(self, **changes: Any) -> Column:
        """A copy with some fields changed (``column.replace(drop=1)``)."""
        return Column(**{**self._fields(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Column) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(tuple(self._fields().values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._fields().items())
        return f"Column({fields})"


# --- values ------------------------------------------------------------------------------


#: Characters besides printable ASCII that are one cell wide in every terminal (and to rich)
ONE_CELL = frozenset("→·—–…×─└⚠ ▏▎▍▌▋▊▉█▁▂▃▄▅▆▇")
#: ... and those two cells wide (watch marks a reached cap with one)
TWO_CELLS = frozenset("⛔")


def cell_len(text: str) -> int:
    """How many terminal cells ``text`` takes, as rich measures it; rich's tables (~9 ms to
    import) are asked only for characters other than the ones ccmeter itself prints."""
    if text.isascii() and text.isprintable():  # the usual case, at C speed
        return len(text)
    if all(" " <= ch <= "~" or ch in ONE_CELL for ch in text):
        return len(text)
    if all(" " <= ch <= "~" or ch in ONE_CELL or ch in TWO_CELLS for ch in text):
        return len(text) + sum(ch in TWO_CELLS for ch in text)
    from rich.cells import cell_len as rich_cell_len

    return rich_cell_len(text)


def plural(count: int, noun: str) -> str:
    """``1 call``, ``2 calls``, ``0 calls``, ``1,234 calls``: every count printed for people."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def format_int(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def format_int_compact(value: Any) -> str:
    """``950``, ``12.3k``, ``4.56M``, ``1.2B``: for narrow terminals."""
    if value is None:
        return ""
    number = int(value)
    for limit, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "k")):
        if abs(number) >= limit:
            scaled = number / limit
            return f"{scaled:.3g}{suffix}" if abs(scaled) < 1000 else f"{scaled:,.0f}{suffix}"
    return str(number)


def format_percent(value: Any) -> str:
    if value is None:
        return ""
    pct = float(value) * 100
    return f"{pct:.0f}%" if pct >= 10 or pct == 0 else f"{pct:.1f}%"


def to_datetime(value: Any) -> datetime | None:
    """A local, timezone-aware datetime from Unix seconds, a datetime or an ISO string."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(float(value), UTC)
    else:
        text = str(value).strip()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone()


def format_datetime(value: Any) -> str:
    moment = to_datetime(value)
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def iso_datetime(value: Any) -> str | None:
    moment = to_datetime(value)
    return None if moment is None else moment.isoformat(timespec="seconds")


def bar(fraction: float | None, width: int = _BAR_WIDTH) -> str:
    """A horizontal bar ``width`` cells wide at most, in eighths of a cell."""
    if fraction is None or not math.isfinite(fraction) or fraction <= 0:
        return ""
    eighths = round(min(fraction, 1.0) * width * 8)
    full, part = divmod(max(eighths, 1), 8)
    return "█" * full + (_BARS[part] if part else "")


def sparkline(values: Sequence[float | int | None]) -> str:
    """One character per value, scaled to the largest; None or 0 is the lowest bar."""
    numbers = [float(v or 0) for v in values]
    top = max(numbers, default=0.0)
    if top <= 0:
        return _SPARKS[0] * len(numbers)
    return "".join(_SPARKS[min(7, int(v / top * 7.999))] for v in numbers)


def format_cell(value: Any, kind: str, places: int | None = None) -> str:
    """A value as a table shows it (``places``: the table's money precision)."""
    if kind == "usd":
        return money.format_usd(value, places)
    if kind == "int":
        return format_int(value)
    if kind == "percent":
        return format_percent(value)
    if kind == "datetime":
        return format_datetime(value)
    if kind == "spark":
        if isinstance(value, Sequence) and not isinstance(value, str):
            return sparkline(value)
        return bar(value)
    return "" if value is None else printable(value)  # a name from a header or a share file


# --- machine fields ----------------------------------------------------------------------


def field_names(columns: Sequence[Column]) -> list[str]:
    """The JSON / CSV field names of ``columns``, in order (usd columns give two)."""
    names: list[str] = []
    for column in columns:
        if column.kind == "spark":
            continue
        if column.kind == "usd":
            names += [f"{column.key}_usd", f"{column.key}_picousd"]
        else:
            names.append(column.key)
    return names


def machine_row(row: Mapping[str, Any], columns: Sequence[Column]) -> dict[str, Any]:
    """One row as JSON / CSV carry it: exact money twice over, datetimes in ISO 8601."""
    out: dict[str, Any] = {}
    for column in columns:
        value = row.get(column.key)
        if column.kind == "spark":
            continue
        if column.kind == "usd":
            out[f"{column.key}_usd"] = money.usd_string(value)
            out[f"{column.key}_picousd"] = None if value is None else int(value)
        elif column.kind == "int":
            out[column.key] = None if value is None else int(value)
        elif column.kind == "percent":
            out[column.key] = None if value is None else float(value)
        elif column.kind == "datetime":
            out[column.key] = iso_datetime(value)
        else:
            out[column.key] = None if value is None else str(value)
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# --- output ------------------------------------------------------------------------------


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    fmt: str,
    *,
    title: str | None = None,
    totals: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    file: TextIO | None = None,
) -> None:
    """Write ``rows`` as a table, a JSON document or CSV to ``file`` (default: stdout)."""
    out = file if file is not None else sys.stdout
    if fmt == "json":
        import json  # here: tables do without it
        document = {
            "title": title,
            "meta": _json_safe(dict(meta or {})),
            "columns": [
                {"key": c.key, "header": c.header, "kind": c.kind}
                for c in columns
                if c.kind != "spark"
            ],
            "rows": [machine_row(row, columns) for row in rows],
            "totals": None if totals is None else machine_row(totals, columns),
        }
        out.write(json_text(json.dumps(document, indent=2, ensure_ascii=False)) + "\n")
    elif fmt == "csv":
        import csv

        writer = csv.writer(out, lineterminator="\n")
        names = field_names(columns)
        writer.writerow(names)
        for row in rows:
            fields = machine_row(row, columns)
            writer.writerow(["" if fields[n] is None else
                             escape_controls(fields[n]) if isinstance(fields[n], str) else
                             fields[n] for n in names])
    elif fmt == "table":
        if not _is_terminal(out):  # no colour: plain text, as rich would lay it out
            from ccmeter.plaintable import table_text

            text = table_text(rows, columns, title=title, totals=totals, meta=meta,
                              width=_file_width())
            if text is not None:
                out.write(text)
                out.flush()
                return
        console = make_console(out)
        console.print(render_table(rows, columns, title=title, totals=totals, meta=meta,
                                   width=console.width))
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _plain(text: str | None) -> str | None:
    """A title or caption as rich shows it literally: no control characters, no markup
    (a project named ``[bold]`` or ``[/x]`` is text, not a style or an error)."""
    from rich.markup import escape

    return None if text is None else escape(printable(text))


def make_console(file: TextIO | None = None, width: int | None = None) -> Any:
    """A rich Console for ``file``: colour only on a terminal and without ``NO_COLOR``.

    Off a terminal there are never escape codes; the width is ``COLUMNS`` if set, else wide
    enough that a table written to a file is not folded at 80 columns.
    """
    from rich.console import Console

    out = file if file is not None else sys.stdout
    is_tty = _is_terminal(out)
    if width is None and not is_tty:
        width = _file_width()
    return Console(
        file=out,
        width=width,
        no_color=bool(os.environ.get("NO_COLOR")) or None,
        force_terminal=is_tty,
        color_system="auto" if is_tty else None,
        highlight=False,
        emoji=False,
        soft_wrap=False,
    )


def _is_terminal(out: TextIO) -> bool:
    return bool(getattr(out, "isatty", lambda: False)())


def _file_width() -> int:
    """The width of a table written to a file or a pipe: ``COLUMNS`` if set, else 200."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 200


def render_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    totals: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    width: int = 120,
) -> Any:
    """The rich ``Table`` for ``rows`` (used by :func:`emit` and by live views)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    compact, places, sizes, shown, caption = layout(rows, columns, totals, meta, width)
    table = Table(title=_plain(title), caption=_plain(caption), box=box.SIMPLE_HEAD,
                  title_justify="left",
                  caption_justify="left", pad_edge=False, show_edge=False,
                  collapse_padding=compact)
    for column in shown:
        numeric = column.kind in ("int", "usd", "percent", "number")
        table.add_column(
            column.header,
            justify="right" if numeric else "left",
            # one line per row, each column exactly as wide as _fitting says: numbers, dates
            # and whole ids are never cut; other text is shortened with an ellipsis
            no_wrap=True,
            overflow="ellipsis",
            width=sizes[column.key],
            style="cyan" if column.kind == "spark" else None,
        )
    for row in rows:
        table.add_row(*(_cell(row.get(c.key), c, Text, compact, places) for c in shown))
    if totals is not None:
        table.add_section()
        cells = [_cell(totals.get(c.key), c, Text, compact, places) for c in shown]
        if shown and shown[0].key not in totals:
            cells[0] = Text("total")
        table.add_row(*cells, style="bold")
    return table


def layout(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column],
           totals: Mapping[str, Any] | None, meta: Mapping[str, Any] | None,
           width: int) -> tuple[bool, int | None, dict[str, int], list[Column], str | None]:
    """How a table of ``rows`` is laid out in ``width`` cells, whoever draws it (rich or
    :mod:`ccmeter.plaintable`): (compact, money places, column widths, the columns shown,
    the caption with its note on hidden columns)."""
    compact = width < COMPACT
    every = [*rows, *([totals] if totals is not None else [])]
    places = money.usd_places(r.get(c.key) for r in every for c in columns if c.kind == "usd")
    sizes = _fitting(columns, every, width, compact, places)
    shown = [c for c in columns if c.key in sizes]
    caption = _caption(meta)
    hidden = len([c for c in columns if c not in shown and c.kind != "spark"])
    if hidden:
        note = f"{hidden} column{'s' * (hidden > 1)} hidden to fit {width} columns"
        caption = f"{caption} · {note}" if caption else note
    return compact, places, sizes, shown, caption


def cell_text(value: Any, column: Column, compact: bool, places: int | None) -> str:
    """A cell's text, as every table shows it (compact counts in a narrow terminal)."""
    if compact and column.kind == "int":
        return format_int_compact(value)
    return format_cell(value, column.kind, places)


def _natural_width(column: Column, rows: Sequence[Mapping[str, Any]], compact: bool,
                   places: int | None = None) -> int:
    """The width of ``column``'s widest cell or header (no padding)."""
    # terminal cells: a wide sign or CJK name takes two
    cells = [cell_len(cell_text(r.get(column.key), column, compact, places)) for r in rows]
    return max([cell_len(column.header), *cells, _min_width(column) or 0])


def _least_width(column: Column, natural: int) -> int:
    """The narrowest a shown column may get: text shrinks to 14 (a whole id to 40)."""
    if column.kind == "text":
        return min(natural, max(len(column.header), WHOLE_MAX if column.whole else 14))
    return natural


def _gap(compact: bool) -> int:
    """Cells between two columns (padding and the blank divider; less when collapsed)."""
    return 2 if compact else 3


def _fitting(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]], width: int,
             compact: bool, places: int | None = None) -> dict[str, int]:
    """The columns that fit ``width`` and the width of each, in order.

    Bars go first, then columns marked ``drop``, then (right to left) extra counts, dates and
    money columns; the first column, the first count and the first amount stay, and so do
    ``keep`` and ``whole`` columns. Only text columns shrink (with an ellipsis), the widest
    first, so numbers, dates and whole ids are never cut."""
    shown = [c for c in columns if c.kind != "spark" or width >= NARROW]
    natural = {c.key: _natural_width(c, rows, compact, places) for c in shown}
    first_int = next((c for c in shown if c.kind == "int"), None)
    first_usd = next((c for c in shown if c.kind == "usd"), None)
    keep = {id(shown[0])} if shown else set()
    keep |= {id(c) for c in (first_int, first_usd) if c is not None}
    keep |= {id(c) for c in shown if c.keep or c.whole}
    order = [c for c in shown if c.kind == "spark"]
    order += sorted((c for c in shown if c.drop > 0 and id(c) not in keep),
                    key=lambda c: -c.drop)
    for kinds in (("int", "percent", "number"), ("datetime",), ("usd",)):
        order += [c for c in reversed(shown) if c.kind in kinds and id(c) not in keep
                  and c not in order]

    def least(cols: list[Column]) -> int:
        return (sum(_least_width(c, natural[c.key]) for c in cols)
                + _gap(compact) * max(len(cols) - 1, 0))

    for column in order:
        if least(shown) <= width:
            break
        shown.remove(column)
    sizes = {c.key: natural[c.key] for c in shown}
    excess = sum(sizes.values()) + _gap(compact) * max(len(shown) - 1, 0) - width
    # shorten other text first; a whole id only when nothing else is left to give
    for floor in ({c.key: _least_width(c, natural[c.key]) for c in shown},
                  {c.key: min(natural[c.key], max(len(c.header), 14)) if c.kind == "text"
                   else natural[c.key] for c in shown}):
        while excess > 0:
            shrinkable = [c for c in shown if sizes[c.key] > floor[c.key]]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda c: sizes[c.key] - floor[c.key])
            sizes[widest.key] -= 1
            excess -= 1
    return sizes


def _min_width(column: Column) -> int | None:
    if column.kind == "usd":
        return 8
    if column.kind == "datetime":
        return 16
    return None


def _cell(value: Any, column: Column, text_type: Any, compact: bool = False,
          places: int | None = None) -> Any:
    text = cell_text(value, column, compact, places)
    if column.kind == "usd" and value is None:
        return text_type(text, style="yellow")
    return text_type(text)


def _caption(meta: Mapping[str, Any] | None) -> str | None:
    if not meta:
        return None
    parts = [
        f"{key.replace('_', ' ')}: {value}"
        for key, value in meta.items()
        if isinstance(value, str | int | float) and not isinstance(value, bool) and value != ""
    ]
    return " · ".join(parts) or None
