"""Charts as SVG text: pure functions, numbers in, markup out. No I/O, no third-party code.

Colours are CSS classes (``c0`` … ``c7``, ``axis``, ``grid``), so one stylesheet gives the
light and the dark theme. Every bar carries a ``<title>`` (the browser's tooltip, and what a
screen reader reads), so the exact figure is never only a pixel height.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape

PALETTE = 8  # classes c0..c7; further series reuse them in turn
OTHER = "other"


def _fmt(value: float) -> str:
    """A coordinate: short, and the same on every platform."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def nice_max(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n that is at least ``value`` (an axis top)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    while step > value:
        step /= 10
    for factor in (1, 2, 2.5, 5, 10):
        if step * factor >= value:
            return step * factor
    return step * 10


def top_series(series: Mapping[str, Sequence[float]], keep: int = PALETTE - 1
               ) -> dict[str, list[float]]:
    """The ``keep`` largest series by total; the rest summed into one ``other`` series."""
    ranked = sorted(series, key=lambda name: (-sum(series[name]), name))
    out = {name: list(series[name]) for name in ranked[:keep]}
    rest = ranked[keep:]
    if rest:
        length = max(len(series[name]) for name in rest)
        merged = [0.0] * length
        for name in rest:
            for index, value in enumerate(series[name]):
                merged[index] += value
        out[OTHER] = merged
    return out


def stacked_bars(labels: Sequence[str], series: Mapping[str, Sequence[float]], *,
                 value_text: Callable[[float], str] = str, width: int = 760,
                 height: int = 240, title: str = "", hrefs: Sequence[str | None] = ()) -> str:
    """Vertical bars, one per label, each stacked from the series' values at that index.

    ``series`` maps a name to one value per label (missing values are 0); the legend lists
    them in the given order, which is also the stacking order from the bottom.
    """
    left, right, top, bottom = 64, 8, 10, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    count = len(labels)
    totals = [sum(_at(values, i) for values in series.values()) for i in range(count)]
    peak = nice_max(max(totals, default=0))
    parts = [_open(width, height, title)]
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_fmt(y)}" '
                     f'y2="{_fmt(y)}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{_fmt(y + 4)}" '
                     f'text-anchor="end">{escape(value_text(value))}</text>')
    slot = plot_w / count if count else plot_w
    bar = max(1.0, slot * 0.78)
    every = max(1, -(-count * 64 // plot_w)) if count else 1  # a label every ~64 px
    names = list(series)
    for index, label in enumerate(labels):
        x = left + slot * index + (slot - bar) / 2
        y = top + plot_h
        href = hrefs[index] if index < len(hrefs) else None
        if href:
            parts.append(f'<a href="{escape(href)}">')
        for number, name in enumerate(names):
            value = _at(series[name], index)
            if value <= 0:
                continue
            h = plot_h * value / peak
            y -= h
            parts.append(
                f'<rect class="c{number % PALETTE}" x="{_fmt(x)}" y="{_fmt(y)}" '
                f'width="{_fmt(bar)}" height="{_fmt(h)}"><title>{escape(label)} · '
                f'{escape(name)}: {escape(value_text(value))}</title></rect>')
        if href:
            parts.append("</a>")
        if index % every == 0:
            parts.append(f'<text class="axis" x="{_fmt(x + bar / 2)}" y="{height - bottom + 14}"'
                         f' text-anchor="middle">{escape(_short(label))}</text>')
    parts.append(f'<line class="axis-line" x1="{left}" x2="{width - right}" '
                 f'y1="{top + plot_h}" y2="{top + plot_h}"/>')
    parts.append("</svg>")
    return "".join(parts)


def legend(names: Sequence[str]) -> str:
    """The series names with their colours, as HTML (it wraps, unlike SVG text)."""
    items = "".join(f'<li><span class="swatch c{i % PALETTE}"></span>{escape(name)}</li>'
                    for i, name in enumerate(names))
    return f'<ul class="legend">{items}</ul>'


def hbars(items: Sequence[tuple[str, float]], *, value_text: Callable[[float], str] = str,
          width: int = 760, row: int = 22, title: str = "",
          hrefs: Sequence[str | None] = ()) -> str:
    """Horizontal bars, one per (label, value), largest scale first as given."""
    label_w, value_w = 220, 90
    plot_w = width - label_w - value_w
    height = max(row, row * len(items)) + 4
    peak = max((value for _, value in items), default=0) or 1
    parts = [_open(width, height, title)]
    for index, (label, value) in enumerate(items):
        y = 2 + index * row
        w = max(0.0, plot_w * value / peak)
        href = hrefs[index] if index < len(hrefs) else None
        shown = escape(label if len(label) <= 30 else label[:29] + "…")
        text = (f'<text class="label" x="{label_w - 8}" y="{y + row * 0.68:.1f}" '
                f'text-anchor="end">{shown}</text>')
        parts.append(f'<a href="{escape(href)}">{text}</a>' if href else text)
        parts.append(f'<rect class="c{index % PALETTE}" x="{label_w}" y="{y + 3}" '
                     f'width="{_fmt(w)}" height="{row - 6}"><title>{escape(label)}: '
                     f'{escape(value_text(value))}</title></rect>')
        parts.append(f'<text class="value" x="{_fmt(label_w + w + 6)}" '
                     f'y="{y + row * 0.68:.1f}">{escape(value_text(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def meter(fraction: float | None, *, width: int = 240, height: int = 14,
          warn_at: float = 0.8, title: str = "") -> str:
    """A progress bar for a cap or a plan window: ``ok``, ``warn`` or ``over`` by fill."""
    shown = 0.0 if fraction is None else max(0.0, min(1.0, fraction))
    state = ("none" if fraction is None else "over" if fraction >= 1
             else "warn" if fraction >= warn_at else "ok")
    return (f'{_open(width, height, title)}<rect class="track" x="0" y="0" width="{width}" '
            f'height="{height}" rx="3"/><rect class="fill {state}" x="0" y="0" '
            f'width="{_fmt(width * shown)}" height="{height}" rx="3"/></svg>')


def timeline(points: Sequence[tuple[float, float, str, str]], *, start: float, end: float,
             value_text: Callable[[float], str] = str, width: int = 760,
             height: int = 160, title: str = "", start_text: str = "",
             end_text: str = "") -> str:
    """Calls on a time axis: ``(ts, value, css class, tooltip)`` each, as a thin bar whose
    height is its value (a call's cost) and whose class says its kind or status."""
    left, right, top, bottom = 64, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    span = max(end - start, 1.0)
    peak = nice_max(max((value for _, value, _, _ in points), default=0))
    parts = [_open(width, height, title)]
    for tick in (0, 2, 4):
        y = top + plot_h - plot_h * tick / 4
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_fmt(y)}" '
                     f'y2="{_fmt(y)}"/><text class="axis" x="{left - 6}" y="{_fmt(y + 4)}" '
                     f'text-anchor="end">{escape(value_text(peak * tick / 4))}</text>')
    for ts, value, cls, tip in points:
        x = left + plot_w * (ts - start) / span
        h = max(1.5, plot_h * value / peak)
        parts.append(f'<rect class="{escape(cls)}" x="{_fmt(x - 1)}" y="{_fmt(top + plot_h - h)}"'
                     f' width="2.5" height="{_fmt(h)}"><title>{escape(tip)}</title></rect>')
    for x, text, anchor in ((left, start_text, "start"), (width - right, end_text, "end")):
        if text:
            parts.append(f'<text class="axis" x="{x}" y="{height - 6}" text-anchor="{anchor}">'
                         f"{escape(text)}</text>")
    parts.append(f'<line class="axis-line" x1="{left}" x2="{width - right}" '
                 f'y1="{top + plot_h}" y2="{top + plot_h}"/></svg>')
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    label = f' aria-label="{escape(title)}"' if title else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} '
            f'{height}" width="{width}" height="{height}" role="img"{label}>')


def _at(values: Sequence[float], index: int) -> float:
    return values[index] if index < len(values) else 0


def _short(label: str) -> str:
    """``2026-11-30`` -> ``11-30``; other labels as they are, at most 10 characters."""
    if len(label) == 10 and label[4] == "-" and label[7] == "-":
        return label[5:]
    return label if len(label) <= 10 else label[:9] + "…"
