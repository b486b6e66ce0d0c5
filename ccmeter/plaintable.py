"""A report table as plain text, character for character what rich prints off a terminal.

``ccmeter report | less``, scripts and the fast path (:mod:`ccmeter.fastpath`) print tables
to something that is not a terminal, where rich draws no colour: there the layout
:func:`ccmeter.render.render_table` asks rich for (``SIMPLE_HEAD`` box, no edges, every column
exactly as wide as ``render.layout`` says, one line per row, an ellipsis where text is cut,
title and caption word-wrapped to the table's width) is simple enough to write directly,
without importing rich (~20 ms) or running its layout engine. :func:`table_text` returns
``None`` for anything outside that plain case (characters whose terminal width is not one
cell, line breaks, a table wider than the page, a word longer than a line), and the caller
then asks rich, so the output never differs; ``tests/test_plaintable.py`` compares the two.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ccmeter.render import ONE_CELL, TWO_CELLS, Column, cell_text, layout
from ccmeter.untrusted import printable

_WORD = re.compile(r"\s*\S+\s*")


def plain(text: str) -> bool:
    """Every character one cell wide, no control characters: text this module can lay out."""
    if text.isascii():  # the usual case, at C speed: printable ASCII is " " to "~"
        return text.isprintable()
    return all(" " <= ch <= "~" or ch in ONE_CELL or ch in TWO_CELLS for ch in text)


def cells(text: str) -> int:
    """How many terminal cells ``text`` (:func:`plain`) takes."""
    if text.isascii():
        return len(text)
    return len(text) + sum(ch in TWO_CELLS for ch in text)


def fit(text: str, size: int, *, right: bool = False) -> str:
    """``text`` in exactly ``size`` cells, as rich fits a cell that does not wrap: cut with
    an ellipsis when too long (a wide character that would straddle the cut becomes a
    space), padded on the right (or the left, ``right``) when short."""
    if cells(text) > size:
        if size <= 0:
            return ""
        kept, used = [], 0
        for ch in text:
            width = cells(ch)
            if used + width > size - 1:
                break
            kept.append(ch)
            used += width
        text = "".join(kept) + " " * (size - 1 - used) + "…"
    pad = " " * (size - cells(text))
    return pad + text if right else text + pad


def table_text(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    totals: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    width: int = 120,
) -> str | None:
    """The table as rich prints it without colour, or None when rich must lay it out."""
    compact, places, sizes, shown, caption = layout(rows, columns, totals, meta, width)
    if not shown or not all(sizes[c.key] > 0 for c in shown):
        return None  # rich gives a column of width 0 a cell anyway

    def cell(value: Any, column: Column) -> str:
        return cell_text(value, column, compact, places)

    lines = [[c.header for c in shown]]
    lines += [[cell(row.get(c.key), c) for c in shown] for row in rows]
    if totals is not None:
        total = [cell(totals.get(c.key), c) for c in shown]
        if shown[0].key not in totals:
            total[0] = "total"
        lines.append(total)
    if not all(plain(text) for line in lines for text in line):
        return None
    # rich's padding: one cell each side, none at the table's edges; collapsed (compact),
    # a column's left padding gives way to its neighbour's right padding
    last = len(shown) - 1
    pads = [(0 if i == 0 or compact else 1, 0 if i == last else 1) for i in range(len(shown))]
    table_width = sum(sizes[c.key] + left + right for c, (left, right) in zip(
        shown, pads, strict=True)) + last
    if table_width > width:
        return None

    def row_line(texts: Sequence[str]) -> str:
        out = []
        for text, column, (left, right) in zip(texts, shown, pads, strict=True):
            numeric = column.kind in ("int", "usd", "percent", "number")
            out.append(" " * left + fit(text, sizes[column.key], right=numeric) + " " * right)
        return " ".join(out)

    body: list[str] = []
    if title is not None:
        wrapped = wrap(printable(title), table_width)
        if wrapped is None:
            return None
        body += wrapped
    body.append(row_line(lines[0]))
    body.append("─" * table_width)
    body += [row_line(line) for line in lines[1:len(rows) + 1]]
    if totals is not None:
        if rows:  # rich draws a section's rule under the row before it
            body.append(" " * table_width)
        body.append(row_line(lines[-1]))
    if caption is not None:
        wrapped = wrap(printable(caption), table_width)
        if wrapped is None:
            return None
        body += wrapped
    return "".join(line + "\n" for line in body)


def wrap(text: str, width: int, *, pad: bool = True) -> list[str] | None:
    """``text`` word-wrapped to ``width`` as rich wraps it (words keep their trailing spaces;
    a line break goes before the word that does not fit), padded to ``width`` as a table's
    title is (``pad``) or not, as a plain line of text is; None where rich would fold."""
    if not plain(text) or not text.strip():
        return None
    lines: list[str] = []
    current = ""
    for match in _WORD.finditer(text):
        word = match.group(0)
        if cells(word.rstrip()) > width:
            return None  # rich folds such a word; not worth copying
        if current and cells(current) + cells(word.rstrip()) > width:
            lines.append(current)
            current = word
        else:
            current += word
    lines.append(current)
    out = []
    for line in lines:
        while cells(line) > width:  # only trailing spaces can pass the width
            line = line[:-1]
        out.append(line + " " * (width - cells(line)) if pad else line)
    return out
