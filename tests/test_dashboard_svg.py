"""The dashboard's SVG charts: pure functions, checked by reading the markup back."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from ccmeter.dashboard import svg

NS = "{http://www.w3.org/2000/svg}"


def rects(markup: str) -> list[dict[str, str]]:
    root = ET.fromstring(markup)  # well-formed XML, or this raises
    return [dict(el.attrib, title=el.findtext(f"{NS}title") or "")
            for el in root.iter(f"{NS}rect")]


@pytest.mark.parametrize(("value", "top"), [
    (0, 1), (-3, 1), (0.7, 1), (1, 1), (1.01, 2), (2.3, 2.5), (3, 5), (7.5, 10), (10, 10),
    (11, 20), (240, 250), (999, 1000), (1001, 2000), (3.2e13, 5e13),
])
def test_nice_max_is_the_next_round_axis_top(value, top):
    assert svg.nice_max(value) == pytest.approx(top)
    assert svg.nice_max(value) >= value


def test_top_series_keeps_the_largest_and_sums_the_rest_into_other():
    series = {f"p{i}": [float(i), 1.0] for i in range(10)}
    out = svg.top_series(series, keep=3)
    assert list(out) == ["p9", "p8", "p7", svg.OTHER]
    assert out[svg.OTHER] == [sum(range(7)), 7.0]
    assert sum(map(sum, out.values())) == sum(map(sum, series.values()))
    assert svg.top_series({"a": [1.0]}, keep=3) == {"a": [1.0]}


def test_stacked_bars_heights_are_proportional_and_stack_without_gaps():
    labels = ["2026-11-01", "2026-11-02", "2026-11-03"]
    series = {"api": [4.0, 0.0, 1.0], "web": [1.0, 2.0, 0.0]}
    markup = svg.stacked_bars(labels, series, value_text=lambda v: f"${v:g}", height=240)
    bars = [r for r in rects(markup) if r.get("class", "").startswith("c")]
    assert len(bars) == 4  # zero values draw nothing
    by_title = {r["title"]: r for r in bars}
    first_api, first_web = by_title["2026-11-01 · api: $4"], by_title["2026-11-01 · web: $1"]
    assert first_api["class"] == "c0" and first_web["class"] == "c1"
    # 5 is the peak and the axis top: 4 of it is 4/5 of the plot, 1 of it 1/5
    h_api, h_web = float(first_api["height"]), float(first_web["height"])
    assert h_api == pytest.approx(4 * h_web, abs=0.2)
    assert float(first_web["y"]) + h_web == pytest.approx(float(first_api["y"]), abs=0.1)
    assert float(by_title["2026-11-02 · web: $2"]["height"]) == pytest.approx(2 * h_web, abs=0.2)
    assert "11-01" in markup and ">$5<" in markup  # short day labels; the axis top


def test_labels_and_titles_are_escaped():
    markup = svg.stacked_bars(["<b>"], {"a&b <script>": [1.0]}, title='x"y')
    assert "<script>" not in markup and "a&amp;b &lt;script&gt;" in markup
    rects(markup)  # still well formed
    markup = svg.hbars([("</svg><img>", 1.0)], hrefs=["/project/a%20b?x=1&y=2"])
    assert "<img>" not in markup and "&amp;y=2" in markup
    rects(markup)


def test_hbars_widths_follow_the_values():
    markup = svg.hbars([("a", 10.0), ("b", 5.0), ("c", 0.0)], width=520)
    widths = [float(r["width"]) for r in rects(markup)]
    assert widths[0] == pytest.approx(2 * widths[1]) and widths[2] == 0
    assert widths[0] == pytest.approx(520 - 220 - 90)


def test_hbars_and_bars_with_nothing_draw_an_empty_chart():
    assert rects(svg.hbars([])) == []
    assert [r for r in rects(svg.stacked_bars([], {})) if r.get("class", "").startswith("c")] == []


@pytest.mark.parametrize(("fraction", "state", "width"), [
    (None, "none", 0), (0.0, "ok", 0), (0.5, "ok", 100), (0.85, "warn", 170),
    (1.0, "over", 200), (3.0, "over", 200),
])
def test_meter_fills_and_colours_by_fraction(fraction, state, width):
    fill = next(r for r in rects(svg.meter(fraction, width=200)) if "fill" in r.get("class", ""))
    assert fill["class"] == f"fill {state}"
    assert float(fill["width"]) == pytest.approx(width)


def test_timeline_places_calls_by_time_and_keeps_their_class():
    points = [(100.0, 1.0, "c0", "first"), (150.0, 2.0, "refused", "second"),
              (200.0, 0.0, "failed", "third")]
    markup = svg.timeline(points, start=100.0, end=200.0, width=464)
    bars = {r["title"]: r for r in rects(markup)}
    xs = [float(bars[t]["x"]) + 1 for t in ("first", "second", "third")]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1]) == pytest.approx((464 - 72) / 2)
    assert bars["second"]["class"] == "refused"
    assert float(bars["third"]["height"]) > 0  # a free call is still visible
    assert re.search(r'viewBox="0 0 464 160"', markup)


def test_legend_lists_series_with_their_colours():
    html = svg.legend(["a", "b<"])
    assert 'class="swatch c0"' in html and 'class="swatch c1"' in html and "b&lt;" in html
