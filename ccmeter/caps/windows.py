"""Cap windows: when the hour, day, ISO week and month start and end, in the user's zone.

Pure (no mitmproxy, no sqlite, no rich). Windows are calendar windows in the user's local
time by default (the hour, the day, the ISO week starting Monday 00:00, the month), computed
with the zone's rules so a day is 23 or 25 hours long when the clocks change.
``window = "rolling"`` makes them the last 1 h / 24 h / 7 d / 30 d instead.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo

from ccmeter.config import CCMeterError
from ccmeter.periods import midnight

WINDOWS = ("hourly", "daily", "weekly", "monthly")
SESSION_WINDOWS = (*WINDOWS, "total")  # a per-session cap may also bound a whole session
ROLLING_SPAN_S = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400, "monthly": 30 * 86400}


def zone(name: str | None) -> tzinfo | None:
    """An IANA zone; None means the system's local time (with its DST rules)."""
    if not name:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only for a configured zone

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CCMeterError(f"unknown time zone {name!r}; use a name like Europe/Berlin") from None

def local_time(ts: float, tz: tzinfo | None = None) -> datetime:
    """Wall-clock time at ``ts``: aware in ``tz``, or naive system-local (fold set)."""
    return datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts)


def calendar_window(name: str, now: float, tz: tzinfo | None = None) -> tuple[float, float]:
    """``[start, end)`` of the calendar hour/day/ISO week/month containing ``now``."""
    start, end = _calendar_window(name, now, tz)
    if now < start:  # ``now`` a hair before a boundary was rounded up to the microsecond
        return _calendar_window(name, start - 0.001, tz)
    return start, end

def _calendar_window(name: str, now: float, tz: tzinfo | None) -> tuple[float, float]:
    local = local_time(now, tz)
    if name == "hourly":
        # Keeps ``fold``: in the repeated hour of a fall-back night the two 01:00s are two
        # windows. Every current zone moves its clocks by whole hours except Lord Howe
        # (30 min), where the hour around the change is approximate.
        start = local.replace(minute=0, second=0, microsecond=0).timestamp()
        return start, start + 3600.0
    day = local.date()
    if name == "daily":
        first, nxt = day, day + timedelta(days=1)
    elif name == "weekly":
        first = day - timedelta(days=day.weekday())
        nxt = first + timedelta(days=7)
    elif name == "monthly":
        first = day.replace(day=1)
        nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    else:
        raise ValueError(f"unknown window {name!r}")
    return midnight(first, tz), midnight(nxt, tz)

def window_bounds(
    name: str, now: float, tz: tzinfo | None = None, kind: str = "calendar"
) -> tuple[float, float | None]:
    """Start of the window in force at ``now`` and its calendar end (None when rolling or
    for a session total: spend leaves a rolling window bit by bit, see ``resets_at``)."""
    if name == "total":
        return 0.0, None
    if kind == "rolling":
        return now - ROLLING_SPAN_S[name], None
    return calendar_window(name, now, tz)
