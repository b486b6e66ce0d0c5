"""One duration grammar for every option (m minutes, h, d, w, mo months, y years; dates and
datetimes), checked as a pure module (tables and properties) and through the CLI."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from ccmeter import config, periods, store
from ccmeter.cli import app
from ccmeter.config import CCMeterError

NOW = datetime(2026, 11, 27, 15, 30).timestamp()  # a Friday afternoon, local time
FIXED = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- the grammar ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "months", "seconds"), [
    ("30m", 0, 1800),          # minutes, as everywhere
    ("45s", 0, 45),
    ("12h", 0, 12 * 3600),
    ("7d", 0, 7 * 86400),
    ("2w", 0, 14 * 86400),
    ("3mo", 3, 0),
    ("1y", 12, 0),
    ("1h30m", 0, 5400),
    ("1h 30m", 0, 5400),
    ("30m1h", 0, 5400),
    ("1y6mo", 18, 0),
    ("1mo2w", 1, 14 * 86400),
])
def test_durations(text, months, seconds):
    assert periods.parse_duration(text) == periods.Duration(months=months, seconds=seconds)


@pytest.mark.parametrize("text", ["", "m", "30", "7x", "3 months", "1d1d", "0m", "-5m", "1.5h",
                                  "h1", "99999999d", "9999999999999999999d", "101y", "1201mo",
                                  "30mm", "2w3", "30M", "1M", "7D", "1h30M"])
def test_bad_durations_are_one_line_errors_that_list_the_units(text):
    with pytest.raises(CCMeterError) as caught:
        periods.parse_duration(text)
    message = str(caught.value)
    assert "\n" not in message and repr(text) in message
    if "years" not in message.split(";")[0]:  # too long / zero say what is wrong instead
        assert ("m minutes" in message and "mo months" in message) or "above zero" in message
    assert isinstance(caught.value, ValueError)


@given(st.dictionaries(st.sampled_from(sorted(FIXED)), st.integers(1, 400), min_size=1))
def test_any_fixed_duration_is_the_sum_of_its_parts(parts):
    text = "".join(f"{count}{unit}" for unit, count in parts.items())
    seconds = sum(count * FIXED[unit] for unit, count in parts.items())
    duration = periods.parse_duration(text)
    assert duration == periods.Duration(seconds=seconds)
    assert duration.before(NOW) == NOW - seconds
    assert duration.after(NOW) == NOW + seconds
    assert periods.parse_when(text, now=NOW) == NOW - seconds
    with pytest.raises(periods.PeriodError, match="units are lowercase"):  # 1M: min or month?
        periods.parse_when(text.upper(), now=NOW)


@given(st.integers(1, 1200), st.integers(0, 10**9))
def test_months_are_calendar_months_on_the_wall_clock(months, offset):
    now = 1_000_000_000 + offset  # 2001 .. 2033
    back = datetime.fromtimestamp(periods.parse_duration(f"{months}mo").before(now))
    start = datetime.fromtimestamp(now)
    assert (start.year * 12 + start.month) - (back.year * 12 + back.month) == months
    assert back.day <= start.day and (back.hour, back.minute) == (start.hour, start.minute)


@given(st.text(max_size=12))
def test_no_text_raises_anything_but_a_period_error(text):
    for parse in (periods.parse_duration, lambda t: periods.parse_when(t, now=NOW),
                  lambda t: periods.parse_day(t, now=NOW, end=True)):
        try:
            parse(text)
        except periods.PeriodError as exc:
            assert "\n" not in str(exc)


def test_dates_and_datetimes(utc):
    assert periods.parse_when("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert periods.parse_when("2026-11-01", end=True) == datetime(
        2026, 11, 2, tzinfo=UTC).timestamp()
    assert periods.parse_when("2026-11") == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert periods.parse_when("2026-12", end=True) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert periods.parse_when("2026-11-01T14:30") == datetime(
        2026, 11, 1, 14, 30, tzinfo=UTC).timestamp()
    assert periods.parse_when("2026-11-01T14:30+01:00") == datetime(
        2026, 11, 1, 13, 30, tzinfo=UTC).timestamp()
    now = datetime(2026, 5, 31, 10, tzinfo=UTC).timestamp()
    assert periods.parse_when("3mo", now=now) == datetime(
        2026, 2, 28, 10, tzinfo=UTC).timestamp()
    assert periods.parse_when("3m", now=now) == now - 180
    assert periods.parse_when("now", now=now) == now
    with pytest.raises(ValueError, match="mo months"):
        periods.parse_when("last tuesday")
    with pytest.raises(CCMeterError, match="100 years"):
        periods.parse_when("9999999999999999999d")
    with pytest.raises(CCMeterError):
        periods.parse_when("9999-12-31", end=True)


@pytest.mark.parametrize(("text", "end", "want"), [
    ("2026-11-27", False, date(2026, 11, 27)),
    ("2026-11-27", True, date(2026, 11, 27)),
    ("2026-11", False, date(2026, 11, 1)),
    ("2026-11", True, date(2026, 11, 30)),
    ("2026-02", True, date(2026, 2, 28)),
    ("7d", False, date(2026, 11, 20)),
    ("2w", False, date(2026, 11, 13)),
    ("30d", False, date(2026, 10, 28)),
    ("1mo", False, date(2026, 10, 27)),
    ("1m", False, date(2026, 11, 27)),  # a minute ago is still today
    ("today", False, date(2026, 11, 27)),
    ("today", True, date(2026, 11, 27)),
    ("yesterday", True, date(2026, 11, 26)),
    ("week", False, date(2026, 11, 23)),
    ("month", False, date(2026, 11, 1)),
])
def test_parse_day(text, end, want):
    assert periods.parse_day(text, now=NOW, end=end) == want


@pytest.mark.parametrize("text", ["yesterday-ish", "2026-13", "7x", ""])
def test_parse_day_rejects(text):
    with pytest.raises(CCMeterError):
        periods.parse_day(text, now=NOW)


def test_local_midnight_and_week_start():
    assert periods.local_midnight(NOW) == datetime(2026, 11, 27).timestamp()
    assert periods.week_start(NOW) == datetime(2026, 11, 23).timestamp()
    assert periods.month_start(date(2026, 11, 27)) == datetime(2026, 11, 1).timestamp()


# --- through the CLI -----------------------------------------------------------------------


def _call(uid: str, ts: float) -> dict:
    return {"call_uid": uid, "started_at": datetime.fromtimestamp(ts, UTC).isoformat(),
            "started_ts": ts, "status": "ok", "model": "claude-opus-4-8", "project": "web",
            "input_tokens": 10, "output_tokens": 5, "cost_picousd": 1_000_000,
            "updated_ts": ts}


def test_report_since_30m_is_thirty_minutes(user_dirs):
    now = time.time()
    db = store.connect(config.paths().db_file)
    store.upsert_calls(db, [_call("recent", now - 10 * 60), _call("hours", now - 2 * 3600),
                            _call("weeks", now - 20 * 86400)])
    db.conn.close()
    runner = CliRunner()
    counts = {}
    for since in ("30m", "3h", "1mo", "90m"):
        result = runner.invoke(app, ["report", "--by", "project", "--since", since, "-f", "json"])
        assert result.exit_code == 0, result.output
        counts[since] = json.loads(result.output)["totals"]["calls"]
    assert counts == {"30m": 1, "3h": 2, "1mo": 3, "90m": 1}


@pytest.mark.parametrize("args", [
    ["report", "--since", "7x"],
    ["report", "--since", "9999999999999999999d"],
    ["report", "--until", "3 months"],
    ["sessions", "--since", "30"],
    ["team", "report", "--from", ".", "--since", "30q"],
])
def test_bad_durations_on_the_command_line_say_the_units(user_dirs, args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, CCMeterError), result.output
    message = str(result.exception)
    assert "\n" not in message
    assert "mo months" in message or "100 years" in message


@pytest.mark.parametrize(("length", "minutes"), [("30m", 30), ("1h30m", 90), ("2w", 14 * 1440)])
def test_caps_pause_reads_the_same_grammar(user_dirs, length, minutes):
    import tomllib

    before = time.time()
    result = CliRunner().invoke(app, ["caps", "pause", "--for", length])
    assert result.exit_code == 0, result.output
    until = tomllib.loads(user_dirs.config_file.read_text())["caps"]["paused_until"]
    assert abs(until.timestamp() - (before + minutes * 60)) < 5


def test_caps_pause_for_months_is_calendar_months(user_dirs):
    import tomllib

    result = CliRunner().invoke(app, ["caps", "pause", "--for", "1mo"])
    assert result.exit_code == 0, result.output
    until = tomllib.loads(user_dirs.config_file.read_text())["caps"]["paused_until"]
    now = datetime.now()
    assert (until.year * 12 + until.month) - (now.year * 12 + now.month) == 1


@pytest.mark.parametrize("length", ["99999999d", "9999999999999999999d", "3x", "30"])
def test_caps_pause_refuses_bad_lengths_in_one_line(user_dirs, length):
    result = CliRunner().invoke(app, ["caps", "pause", "--for", length])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and ("100 years" in lines[0] or "mo months" in lines[0]), lines
    assert not user_dirs.config_file.exists() or "paused_until" not in \
        user_dirs.config_file.read_text()


@pytest.mark.parametrize(("active", "shown"), [("2h", True), ("120", True), ("1h", False),
                                                ("30m", False)])
def test_watch_active_reads_the_same_grammar(user_dirs, active, shown):
    """`watch --active` took whole minutes only; a bare number still is minutes."""
    db = store.connect(config.paths().db_file)
    store.upsert_calls(db, [_call("ninety", time.time() - 90 * 60) | {"session_id": "s-ninety"}])
    db.conn.close()
    result = CliRunner().invoke(app, ["watch", "--once", "--active", active])
    assert result.exit_code == 0, result.output
    assert ("s-ninety" in result.output) is shown
    if shown:
        assert "in the last 120 min" in result.output
