"""Cap windows, money parsing, policy parsing and messages: the pure part of ccmeter.caps."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccmeter import pricing
from ccmeter.caps import hardmode, messages, windows
from ccmeter.caps.guard import Guard
from ccmeter.caps.policy import (
    CapStatus,
    checks_for,
    most_constraining,
    parse_policy,
)
from ccmeter.config import CCMeterError
from ccmeter.money import exact_places, floor_usd, parse_usd, usd_text
from ccmeter.usage import Usage

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
ZONES = [NY, BERLIN, ZoneInfo("Asia/Kathmandu"), ZoneInfo("America/Santiago"), ZoneInfo("UTC")]


def ts(zone, *args, fold=0) -> float:
    return datetime(*args, tzinfo=zone, fold=fold).timestamp()


def local(t: float, zone) -> datetime:
    return datetime.fromtimestamp(t, zone)


# --- calendar windows: edges -------------------------------------------------------------


def test_daily_window_is_local_midnight_to_midnight():
    now = ts(BERLIN, 2026, 11, 27, 23, 59, 59)
    start, end = windows.calendar_window("daily", now, BERLIN)
    assert local(start, BERLIN) == datetime(2026, 11, 27, tzinfo=BERLIN)
    assert local(end, BERLIN) == datetime(2026, 11, 28, tzinfo=BERLIN)
    # midnight itself belongs to the new day
    assert windows.calendar_window("daily", end, BERLIN)[0] == end


def test_weekly_window_is_iso_week_from_monday():
    sunday = ts(NY, 2026, 11, 29, 12)  # a Sunday
    start, end = windows.calendar_window("weekly", sunday, NY)
    assert local(start, NY) == datetime(2026, 11, 23, tzinfo=NY)  # Monday
    assert local(start, NY).weekday() == 0
    assert end - start == 7 * 86400
    # across a year boundary: ISO week 1 of 2027 starts Monday 2027-01-04
    start, _ = windows.calendar_window("weekly", ts(NY, 2027, 1, 3, 10), NY)
    assert local(start, NY).date().isoformat() == "2026-12-28"


def test_monthly_window_edges_and_december():
    start, end = windows.calendar_window("monthly", ts(BERLIN, 2026, 12, 31, 23, 30), BERLIN)
    assert local(start, BERLIN) == datetime(2026, 12, 1, tzinfo=BERLIN)
    assert local(end, BERLIN) == datetime(2027, 1, 1, tzinfo=BERLIN)
    start, end = windows.calendar_window("monthly", ts(BERLIN, 2028, 2, 29, 12), BERLIN)
    assert local(end, BERLIN) == datetime(2028, 3, 1, tzinfo=BERLIN)


@pytest.mark.parametrize(("zone", "day", "hours"), [
    (NY, (2026, 3, 8), 23),        # spring forward
    (NY, (2026, 11, 1), 25),       # fall back
    (BERLIN, (2026, 3, 29), 23),
    (BERLIN, (2026, 10, 25), 25),
])
def test_days_with_a_clock_change_are_23_or_25_hours(zone, day, hours):
    start, end = windows.calendar_window("daily", ts(zone, *day, 12), zone)
    assert (end - start) == hours * 3600
    assert local(start, zone).hour == 0 and local(end, zone).hour == 0


def test_repeated_hour_of_fall_back_is_two_hourly_windows():
    first = ts(NY, 2026, 11, 1, 1, 30, fold=0)   # 01:30 EDT
    second = ts(NY, 2026, 11, 1, 1, 30, fold=1)  # 01:30 EST, an hour later
    w1 = windows.calendar_window("hourly", first, NY)
    w2 = windows.calendar_window("hourly", second, NY)
    assert w1[1] == w2[0] and w2[0] - w1[0] == 3600


def test_skipped_hour_of_spring_forward():
    start, _ = windows.calendar_window("hourly", ts(BERLIN, 2026, 3, 29, 3, 10), BERLIN)
    assert local(start, BERLIN).hour == 3
    before = windows.calendar_window("hourly", start - 1, BERLIN)
    assert before[1] == start and local(before[0], BERLIN).hour == 1


def test_midnight_that_does_not_exist_starts_the_day_at_the_jump():
    # Chile springs forward at 24:00 -> 01:00: 2026-09-06 has no 00:00.
    santiago = ZoneInfo("America/Santiago")
    start, _ = windows.calendar_window("daily", ts(santiago, 2026, 9, 6, 12), santiago)
    assert local(start, santiago).date().isoformat() == "2026-09-06"
    assert local(start, santiago).hour == 1
    assert local(start - 1, santiago).date().isoformat() == "2026-09-05"


def test_half_hour_offset_zone_hours_are_local():
    kathmandu = ZoneInfo("Asia/Kathmandu")  # UTC+05:45
    start, _ = windows.calendar_window("hourly", ts(kathmandu, 2026, 5, 1, 10, 20), kathmandu)
    assert local(start, kathmandu).minute == 0
    assert start % 3600 == 15 * 60


def test_system_local_time_is_used_without_a_zone(monkeypatch):
    import time as _time

    monkeypatch.setenv("TZ", "America/New_York")
    _time.tzset()
    try:
        now = ts(NY, 2026, 11, 1, 12)
        assert windows.calendar_window("daily", now) == windows.calendar_window("daily", now, NY)
    finally:
        monkeypatch.delenv("TZ")
        _time.tzset()


def test_rolling_and_total_windows():
    now = 1_800_000_000.0
    assert windows.window_bounds("daily", now, kind="rolling") == (now - 86400, None)
    assert windows.window_bounds("monthly", now, kind="rolling") == (now - 30 * 86400, None)
    assert windows.window_bounds("total", now) == (0.0, None)


# --- calendar windows: properties ----------------------------------------------------------

moments = st.floats(min_value=1_577_836_800, max_value=1_893_456_000, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(t=moments, zone=st.sampled_from(ZONES), name=st.sampled_from(windows.WINDOWS))
def test_windows_contain_now_and_tile_the_time_line(t, zone, name):
    start, end = windows.calendar_window(name, t, zone)
    assert start <= t < end
    assert windows.calendar_window(name, start, zone) == (start, end)  # idempotent
    assert windows.calendar_window(name, end, zone)[0] == end  # the next one starts at the end
    assert windows.calendar_window(name, start - 0.001, zone)[1] == start  # and previous ends


@settings(max_examples=300, deadline=None)
@given(t=moments, zone=st.sampled_from([NY, BERLIN]))
def test_window_lengths_and_starts(t, zone):
    d0, d1 = windows.calendar_window("daily", t, zone)
    assert d1 - d0 in (23 * 3600, 24 * 3600, 25 * 3600)
    assert local(d0, zone).date() == local(t, zone).date()
    assert (local(d0, zone).hour, local(d0, zone).minute) == (0, 0)
    w0, w1 = windows.calendar_window("weekly", t, zone)
    assert local(w0, zone).weekday() == 0 and local(w0, zone).hour == 0
    assert abs((w1 - w0) - 7 * 86400) <= 3600
    m0, _ = windows.calendar_window("monthly", t, zone)
    assert local(m0, zone).day == 1 and local(m0, zone).month == local(t, zone).month
    h0, h1 = windows.calendar_window("hourly", t, zone)
    assert h1 - h0 == 3600 and local(h0, zone).minute == 0
    assert w0 <= d0 and m0 <= d0 <= h0


# --- money, durations, formatting --------------------------------------------------------


@pytest.mark.parametrize(("text", "pico"), [
    ("20", 20 * 10**12), ("$7.50", 7_500_000_000_000), ("0.000000000001", 1), (5, 5 * 10**12),
    (7.5, 7_500_000_000_000), ("1,000", 1000 * 10**12), ("0", 0),
])
def test_parse_usd_is_exact(text, pico):
    assert parse_usd(text) == pico


@pytest.mark.parametrize("bad", ["abc", "-1", "nan", "inf", "0.0000000000001", "2000000", True,
                                 ""])
def test_parse_usd_rejects_bad_input(bad):
    with pytest.raises(CCMeterError):
        parse_usd(bad, "--daily")


@given(st.decimals(min_value=0, max_value=1_000_000, places=12, allow_nan=False))
def test_parse_usd_round_trips_through_config_text(amount):
    pico = parse_usd(str(amount))
    assert parse_usd(usd_text(pico)) == pico


def test_durations_and_time_left():
    from ccmeter.periods import parse_duration  # one grammar for every option

    assert parse_duration("30m").seconds == 1800
    assert parse_duration("1h30m").seconds == 5400
    assert parse_duration("1d").seconds == 86400
    for bad in ("", "30", "3x", "0m", "m"):
        with pytest.raises(CCMeterError):
            parse_duration(bad)
    assert messages.format_in(3 * 3600 + 11 * 60 + 5) == "3h12m"  # minutes round up
    assert messages.format_in(60) == "0h1m"
    assert messages.format_in(2 * 86400 + 3 * 3600) == "2d3h"


def test_format_usd_floors_and_keeps_cap_precision():
    assert floor_usd(20_079_999_999_999) == "$20.07"
    assert exact_places(5 * 10**9) == 3  # $0.005
    assert floor_usd(1_234_567 * 10**12) == "$1,234,567.00"


# --- policy and messages ---------------------------------------------------------------


def test_parse_policy_full_table():
    policy = parse_policy({"caps": {
        "hourly": "5", "daily": 20, "monthly": "300", "mode": "hard", "window": "rolling",
        "warn_at": [0.9, 0.5], "on_error": "block", "timezone": "Europe/Berlin",
        "estimate": "0.10", "estimates": {"claude-opus": "0.5"},
        "paused_until": datetime(2030, 1, 1, tzinfo=BERLIN),
        "projects": {"big-refactor": {"daily": "10"}}, "per_session": {"total": "3"},
    }})
    assert {(c.name, c.scope) for c in policy.caps} == {
        ("hourly", "global"), ("daily", "global"), ("monthly", "global"),
        ("daily", "project:big-refactor"), ("total", "per_session")}
    assert policy.warn_at == (0.5, 0.9)
    assert policy.estimate_for("claude-opus-4-8") == 5 * 10**11
    assert policy.estimate_for("claude-haiku-4-5") == 10**11
    assert policy.paused(datetime(2029, 1, 1, tzinfo=BERLIN).timestamp())
    checks = checks_for(policy, 1_800_000_000, project="other", session_id="s1")
    assert {c.scope for c in checks} == {"global", "session:s1"}


@pytest.mark.parametrize(("table", "needle"), [
    ({"daily": "x"}, "[caps].daily"), ({"mode": "harsh"}, "mode"),
    ({"window": "sliding"}, "window"), ({"timezone": "Mars/Olympus"}, "time zone"),
    ({"projects": {"p": {"daily": "-3"}}}, "[caps.projects.p].daily"),
    ({"warn_at": [1.5]}, "warn_at"), ({"on_error": "maybe"}, "on_error"),
])
def test_parse_policy_errors_name_the_key(table, needle):
    with pytest.raises(CCMeterError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_policy({"caps": table})


def _status(name="daily", scope="global", limit=20, spent=20.07, resets=None, window="calendar"):
    return CapStatus(name, scope, round(limit * 10**12), round(spent * 10**12), resets,
                          spent / limit, window)


def test_refusal_message_exact_format():
    now = ts(BERLIN, 2026, 11, 27, 20, 48)
    midnight = ts(BERLIN, 2026, 11, 28)
    message = messages.refusal_message(_status(resets=midnight), now, BERLIN)
    assert message == ("ccmeter: daily cap $20.00 reached ($20.07 spent); resets 00:00 "
                       "(in 3h12m). Raise it with: ccmeter caps set --daily N")
    project = _status(scope="project:big refactor", limit=10, spent=10.5, resets=midnight)
    assert messages.refusal_message(project, now, BERLIN).endswith(
        "Raise it with: ccmeter caps set --project 'big refactor' --daily N")
    assert "daily cap for project big refactor $10.00 reached ($10.50 spent)" in \
        messages.refusal_message(project, now, BERLIN)
    weekly = _status("weekly", resets=ts(BERLIN, 2026, 11, 30), limit=50, spent=50)
    assert "resets Mon 00:00 (in 2d3h)" in messages.refusal_message(weekly, now, BERLIN)
    monthly = _status("monthly", resets=ts(BERLIN, 2026, 12, 1) + 86400 * 20, limit=300,
                      spent=301)
    assert "resets Dec 21 00:00" in messages.refusal_message(monthly, now, BERLIN)


def test_most_constraining_picks_the_cap_that_lifts_last():
    a = _status("hourly", resets=100.0)
    b = _status("monthly", resets=900.0)
    c = _status("daily", spent=5, resets=50.0)
    assert most_constraining([a, b, c]) is b
    assert messages.summary_note([c]) == "daily cap 25 %"
    assert messages.summary_note([a]) == "hourly cap reached"


# --- hard mode's running estimate ---------------------------------------------------------


def test_running_cost_prices_usage_then_estimates_output_from_bytes():
    catalog = pricing.Catalog.bundled()
    when = datetime(2026, 11, 27)
    running = hardmode.RunningCost(catalog, when)
    usage = Usage(input_tokens=1000, output_tokens=1)
    running.set_usage("claude-opus-4-8", usage)
    assert running.picousd == catalog.price("claude-opus-4-8", usage, when).cost_picousd
    running.streamed_bytes = 3000  # ~1000 tokens at 3 bytes a token
    expected = catalog.price("claude-opus-4-8", Usage(input_tokens=1000, output_tokens=1000),
                             when).cost_picousd
    assert running.picousd == expected
    limit = hardmode.StreamLimit(_status(), expected, running)
    assert limit.crossed
    limit = hardmode.StreamLimit(_status(), expected + 1, running)
    assert not limit.crossed
    limit.observe("content_block_delta", {"delta": {"type": "text_delta", "text": "héllo"}},
                  "claude-opus-4-8", usage)
    assert running.streamed_bytes == 3006
    assert limit.crossed


def test_sse_error_event_shape():
    import json

    raw = messages.sse_error_event("nope")
    assert raw.startswith(b"event: error\ndata: ") and raw.endswith(b"\n\n")
    assert json.loads(raw.split(b"data: ", 1)[1]) == {
        "type": "error", "error": {"type": "rate_limit_error", "message": "nope"}}


def test_warning_message():
    status = _status(spent=16.5)
    text = messages.warning_message(status, 0.8, 0.0, BERLIN)
    assert text.startswith("daily cap at 82% (warning at 80%): $16.50 of $20.00")


def test_desktop_notification_never_raises_or_waits(monkeypatch):
    import shutil
    import subprocess

    calls = []

    def boom(argv, **kwargs):
        calls.append((argv, kwargs))
        raise OSError("no display")

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(subprocess, "Popen", boom)
    messages.desktop_notify("daily cap at 80%")  # no exception
    assert calls and calls[0][1]["start_new_session"] is True
    monkeypatch.setattr(shutil, "which", lambda name: None)
    calls.clear()
    messages.desktop_notify("nothing to run")
    assert calls == []


@pytest.mark.parametrize(("limit", "spent", "shown"), [
    ("0.002", "0.0026", "$0.002 reached ($0.0026 spent)"),  # not "$0.002 spent"
    ("0.002", "0.0020001", "$0.002 reached ($0.0020001 spent)"),
    ("20", "20.004", "$20.00 reached ($20.004 spent)"),  # not "$20.00 spent"
    ("20", "20.07", "$20.00 reached ($20.07 spent)"),  # the documented format, unchanged
    ("20", "20", "$20.00 reached ($20.00 spent)"),
    ("0.0001", "0.0004", "$0.0001 reached ($0.0004 spent)"),
    ("1000", "1000.000000000001", "$1,000.00 reached ($1,000.000000000001 spent)"),
])
def test_refusal_message_never_shows_a_spend_past_the_cap_as_the_cap(limit, spent, shown):
    status = CapStatus("daily", "global", parse_usd(limit), parse_usd(spent),
                            None, 1.0, "calendar")
    assert f"daily cap {shown}; " in messages.refusal_message(status, 0.0, BERLIN)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**15), st.integers(0, 10**6))
def test_shown_spend_is_above_the_shown_cap_whenever_it_is_above_the_cap(limit, over):
    from decimal import Decimal

    spent = messages.format_spend(limit + over, limit)
    shown = Decimal(spent.removeprefix("$").replace(",", ""))
    cap = Decimal(floor_usd(limit, exact_places(limit)).removeprefix("$")
                  .replace(",", ""))
    assert (shown > cap) if over else (shown == cap)
    assert shown * 10**12 <= limit + over  # floored: never shown above what was spent


def test_warning_shows_a_small_spend_beside_its_cap():
    status = CapStatus("daily", "global", parse_usd("0.002"),
                            parse_usd("0.0017"), None, 0.85, "calendar")
    assert "$0.001 of $0.002" in messages.warning_message(status, 0.8, 0.0, BERLIN)


def test_a_refusal_is_logged_with_one_ccmeter_prefix(tmp_path, caplog):
    import time

    from ccmeter import store

    db = store.connect(tmp_path / "c.db")
    now = time.time()
    store.upsert_calls(db, [{"call_uid": "c1", "started_at": "x", "started_ts": now - 1,
                             "status": "ok", "cost_picousd": 2_600_000_000, "updated_ts": now}])
    db.conn.close()
    guard = Guard(tmp_path / "c.db")
    policy = parse_policy({"caps": {"daily": "0.002", "notify": False}})
    with caplog.at_level("WARNING", logger="ccmeter.caps"):
        decision = guard.check(policy, call_uid="c2", project=None, session_id=None,
                               model="claude-opus-4-8", now=now)
    guard.close()
    assert decision is not None and not decision.allowed
    assert decision.message.startswith("ccmeter: daily cap $0.002 reached ($0.0026 spent); ")
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert line.startswith("ccmeter: refused a call: daily cap $0.002 reached ($0.0026 spent)")
    assert line.count("ccmeter:") == 1
