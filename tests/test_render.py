"""The shared renderer: money and dates formatted once, stable JSON/CSV, plain tables off a tty."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import pytest

from ccmeter import money, render
from ccmeter.render import Column, emit

COLUMNS = [
    Column("project", "Project"),
    Column("calls", "Calls", "int"),
    Column("cost", "Cost", "usd"),
    Column("share", "Share", "percent"),
    Column("first", "First", "datetime"),
    Column("bar", "", "spark"),
]
ROWS = [
    {"project": "api-server", "calls": 1234, "cost": 93_736_500_000, "share": 0.25,
     "first": 1_764_230_400.0, "bar": 1.0},
    {"project": "unknown-model", "calls": 3, "cost": None, "share": None, "first": None,
     "bar": 0.0},
]
TOTALS = {"calls": 1237, "cost": 93_736_500_000}



def run(fmt: str, **kwargs) -> str:
    out = io.StringIO()
    emit(ROWS, COLUMNS, fmt, file=out, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize(("pico", "text"), [
    (None, "unpriced"),
    (0, "$0.00"),
    (93_736_500_000, "$0.0937"),
    (1_234_567_890_000_000, "$1,234.57"),
    (12, "<$0.0001"),
    (-2_500_000_000_000, "-$2.50"),
])
def test_usd_for_people(pico, text):
    assert money.format_usd(pico) == text


def test_usd_for_machines_is_exact():
    assert money.usd_string(93_736_500_000) == "0.093736500000"
    assert money.usd_string(1) == "0.000000000001"
    assert money.usd_string(None) is None


def test_json_schema():
    doc = json.loads(run("json", title="T", totals=TOTALS, meta={"since": "x"}))
    assert set(doc) == {"title", "meta", "columns", "rows", "totals"}
    assert doc["title"] == "T" and doc["meta"] == {"since": "x"}
    assert [c["key"] for c in doc["columns"]] == ["project", "calls", "cost", "share", "first"]
    first, second = doc["rows"]
    assert first == {
        "project": "api-server", "calls": 1234, "cost_usd": "0.093736500000",
        "cost_picousd": 93_736_500_000, "share": 0.25,
        "first": datetime.fromtimestamp(1_764_230_400).astimezone().isoformat(),
    }
    assert second["cost_usd"] is None and second["cost_picousd"] is None
    assert doc["totals"]["calls"] == 1237 and doc["totals"]["project"] is None


def test_csv_has_field_names_and_no_totals():
    rows = list(csv.reader(io.StringIO(run("csv", totals=TOTALS))))
    assert rows[0] == ["project", "calls", "cost_usd", "cost_picousd", "share", "first"]
    assert rows[1][:4] == ["api-server", "1234", "0.093736500000", "93736500000"]
    assert rows[2][:4] == ["unknown-model", "3", "", ""]
    assert len(rows) == 3


def test_table_off_a_terminal_has_no_escape_codes(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    text = run("table", title="Spend", totals=TOTALS, meta={"period": "today"})
    assert "\x1b[" not in text
    assert "unpriced" in text and "$0.0937" in text and "1,234" in text
    assert "total" in text and "period: today" in text
    assert "█" in text  # the bar of the largest row


def test_no_color_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "120")
    out = Tty()
    emit(ROWS, COLUMNS, "table", file=out, totals=TOTALS)
    assert "\x1b[3" not in out.getvalue()  # no colour (bold may remain)


def test_narrow_terminal_drops_the_bar_and_keeps_numbers_whole(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    text = run("table", totals=TOTALS)
    assert "█" not in text
    assert "1.23k" in text and "$0.0937" in text and "…" not in text
    assert all(len(line) <= 60 for line in text.splitlines())
    monkeypatch.setenv("COLUMNS", "30")
    text = run("table", totals=TOTALS)
    assert "api-server" in text and "$0.0937" in text and "column" in text  # some hidden


def test_unknown_format_and_kind():
    with pytest.raises(ValueError):
        run("xml")
    with pytest.raises(ValueError):
        Column("x", "X", "money")


def test_sparkline_and_bar():
    assert render.sparkline([0, 1, 2, 4]) == "▁▂▄█"
    assert render.bar(1.0, 4) == "████"
    assert render.bar(0.0) == ""
