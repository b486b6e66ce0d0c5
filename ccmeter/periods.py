"""Time as every command reads and shows it: durations, moments, days, calendar buckets.

Pure (no I/O): text and Unix seconds in, Unix seconds, dates and labels out. One grammar for
every option that takes a length of time (``report --since``, ``caps pause --for``,
``team report --since`` ...), so ``30m`` means thirty minutes everywhere:

    s seconds · m minutes · h hours · d days · w weeks · mo calendar months · y years

A duration is one or more ``<whole number><unit>`` parts, each unit at most once, largest
first or in any order (``90m``, ``1h30m``, ``2w``, ``3mo``, ``1y6mo``). Months and years are
calendar months on the local wall clock (the 31st minus one month is the 30th or the 28th);
the other units are fixed lengths. A moment (``--since`` / ``--until``) is a duration back
from now, a named day (``today``, ``yesterday``, ``week`` = this Monday, ``month`` = the 1st,
``now``), an ISO date (``2026-11-01``), a month (``2026-11``) or an ISO date and time
(``2026-11-01T14:30``, local unless it carries an offset or ``Z``). Bad text raises
:class:`PeriodError` (a :class:`~ccmeter.config.CCMeterError` and a ``ValueError``) whose one
line lists the units.

Calendar buckets (hour, day, ISO week from Monday, month) are local time and safe across
daylight-saving changes; local midnight lives here and nowhere else.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime, timedelta, tzinfo
from itertools import pairwise

from ccmeter.config import CCMeterError
from ccmeter.record import Record

#: Seconds per fixed unit; ``mo`` and ``y`` are calendar months (12 for a year).
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
UNIT_MONTHS = {"mo": 1, "y": 12}
UNITS_HELP = "s seconds, m minutes, h hours, d days, w weeks, mo months, y years"
#: The longest duration any option takes: far enough for "everything", near enough that
#: every moment it reaches is a date the calendar (and the platform's clock) can hold.
MAX_YEARS = 100
MAX_SECONDS = MAX_YEARS * 366 * 86400

_PART = re.compile(r"(\d+)(mo|[smhdwy])")
_MONTH = re.compile(r"\d{4}-\d{2}")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_NAMED = ("now", "today", "yesterday", "week", "month")
MOMENT_HELP = ("a duration back from now (30m, 12h, 7d, 2w, 3mo, 1y; units: " + UNITS_HELP
               + "), a date (2026-11-01), a month (2026-11), a date and time "
               "(2026-11-01T14:30) or today/yesterday/week/month")


class PeriodError(CCMeterError, ValueError):
    """Text that is not a duration or a moment; its message is one line for the user."""


class Duration(Record):
    """A length of time: whole calendar ``months`` plus fixed ``seconds``."""

    months: int = 0
    seconds: int = 0

    def before(self, now: float) -> float:
        """The moment this long before ``now`` (months on the local wall clock)."""
        moment = now - self.seconds
        if self.months:
            moment = add_months(datetime.fromtimestamp(moment), -self.months).timestamp()
        return moment

    def after(self, now: float) -> float:
        """The moment this long after ``now`` (months on the local wall clock)."""
        moment = now
        if self.months:
            moment = add_months(datetime.fromtimestamp(moment), self.months).timestamp()
        return moment + self.seconds

    @property
    def approx_seconds(self) -> float:
        """Its length in seconds, a month counted as 30.44 days (for sizes, never windows)."""
        return self.months * 30.436875 * 86400 + self.seconds


def parse_duration(text: str, *, what: str = "duration", or_date: bool = False) -> Duration:
    """``30m``, ``1h30m``, ``7d``, ``2w``, ``3mo``, ``1y`` -> a :class:`Duration` (> 0).

    Raises :class:`PeriodError` naming the units for anything else, and for a duration over
    :data:`MAX_YEARS` years (``or_date``: where a date is accepted too, the error says so).
    Units are lowercase: ``1M`` (a minute or a month?) is an error, not a minute.
    """
    compact = re.sub(r"\s+", "", str(text))
    if _PART.match(compact.lower()) and compact != compact.lower():
        raise PeriodError(f"{text!r}: units are lowercase ({UNITS_HELP}); "
                          "m is minutes, mo months")
    parts = list(_PART.finditer(compact))
    units = [match.group(2) for match in parts]
    if (not parts or "".join(match.group(0) for match in parts) != compact
            or len(set(units)) != len(units)):
        raise PeriodError(f"{text!r} is not a {what}; use a number and a unit ({UNITS_HELP}), "
                          "e.g. 30m, 12h, 7d, 2w, 3mo or 1h30m")
    months = seconds = 0
    for match in parts:
        count, unit = int(match.group(1)), match.group(2)
        if count > MAX_SECONDS:  # bound before multiplying: 10**19 days is not worth computing
            raise _too_long(text, or_date)
        if unit in UNIT_MONTHS:
            months += count * UNIT_MONTHS[unit]
        else:
            seconds += count * UNIT_SECONDS[unit]
    if months * 30.5 * 86400 + seconds > MAX_SECONDS:  # 1200 months is 100 years
        raise _too_long(text, or_date)
    if months == 0 and seconds == 0:
        raise PeriodError(f"{text!r} is no time at all; give a {what} above zero, e.g. 30m")
    return Duration(months=months, seconds=seconds)


def _too_long(text: str, or_date: bool = True) -> PeriodError:
    return PeriodError(f"{text!r} is longer than {MAX_YEARS} years; give a shorter duration"
                       + (" or a date (2026-11-01)" if or_date else ""))


def parse_until(text: str, *, now: float | None = None, what: str = "duration") -> float:
    """The end of a ``--for``: a duration from now (``2h``, ``3mo``) or a moment after now
    (``2026-12-01`` = that day's midnight, ``2026-12-01T09:00``)."""
    now = time.time() if now is None else now
    value = re.sub(r"\s+", "", str(text))
    if _PART.match(value.lower()):
        return parse_duration(text, what=what, or_date=True).after(now)
    if not re.match(r"\d{4}-\d{2}", value):
        raise PeriodError(f"{text!r} is not a {what}; use a number and a unit ({UNITS_HELP}), "
                          "e.g. 30m, 2h, 1d, or a date (2026-12-01) or date and time "
                          "(2026-12-01T09:00)")
    try:
        moment = parse_when(value, now=now)
    except PeriodError:
        raise PeriodError(f"cannot read {text!r} as a date; use 2026-12-01 or "
                          "2026-12-01T09:00, or a duration (30m, 2h, 1d)") from None
    if moment <= now:
        raise PeriodError(f"{text!r} is not in the future; give a later date or a duration")
    if moment - now > MAX_SECONDS:
        raise _too_long(text)
    return moment


def parse_when(text: str, *, now: float | None = None, end: bool = False) -> float:
    """Unix seconds for a ``--since`` / ``--until`` value (see the module docstring).

    With ``end`` (an ``--until``) a day or a month names its end, so it is included:
    ``--until 2026-11-01`` is the next midnight, ``--until 2026-11`` is December 1st.
    """
    now = time.time() if now is None else now
    value = str(text).strip().lower()
    if value in _NAMED:
        if value == "now":
            return now
        today = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        first = {
            "today": today,
            "yesterday": today - timedelta(days=1),
            "week": today - timedelta(days=today.weekday()),
            "month": today.replace(day=1),
        }[value]
        if end and value in ("today", "yesterday"):
            first += timedelta(days=1)
        return _midnight_of(first)
    if _PART.match(re.sub(r"\s+", "", value)):
        return parse_duration(text, what="time", or_date=True).before(now)
    try:
        if _MONTH.fullmatch(value):
            first = datetime.fromisoformat(value + "-01")
            return _midnight_of(add_months(first, 1) if end else first)
        if _DAY.fullmatch(value):
            first = datetime.fromisoformat(value)
            return _midnight_of(first + timedelta(days=1) if end else first)
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        raise PeriodError(f"cannot read {text!r} as a time; use {MOMENT_HELP}") from None


def parse_day(text: str, *, now: float | None = None, end: bool = False) -> date:
    """The local day a ``--since`` (or, with ``end``, ``--until``) value falls on.

    The same grammar as :func:`parse_when`; with ``end`` a day or a month is its last day.
    For whole-day data (the team share): a day is in when any part of it is in the range.
    """
    moment = parse_when(text, now=now, end=end)
    if end and re.fullmatch(r"\d{4}-\d{2}(-\d{2})?|today|yesterday", str(text).strip().lower()):
        moment -= 1  # their end is the next midnight: the day before it is the last one in
    try:
        return datetime.fromtimestamp(moment).date()
    except (ValueError, OverflowError, OSError):
        raise _too_long(text) from None


def _midnight_of(day: datetime) -> float:
    return midnight(day.date())


# --- calendar arithmetic -------------------------------------------------------------------


def add_months(moment: datetime, months: int) -> datetime:
    """The same local wall time ``months`` calendar months away (day clamped to the month)."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise PeriodError(f"{months} months from {moment:%Y-%m-%d} is outside the calendar")
    import calendar  # here: it imports locale, and only month arithmetic needs it

    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def bucket_start(ts: float, unit: str) -> datetime:
    """The naive local datetime at which the ``unit`` (hour/day/week/month) holding ts begins."""
    moment = datetime.fromtimestamp(ts)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    raise ValueError(f"not a time unit: {unit!r}")


def next_bucket(start: datetime, unit: str) -> datetime:
    """The start of the bucket after the one starting at ``start`` (local, DST-safe)."""
    if unit == "hour":
        return bucket_start(start.timestamp() + 3600, "hour")
    if unit == "day":
        return (start + timedelta(days=1)).replace(hour=0)
    if unit == "week":
        return (start + timedelta(days=7)).replace(hour=0)
    return add_months(start, 1)


def bucket_label(start: datetime, unit: str) -> str:
    """``2026-11-27 09:00`` / ``2026-11-27`` / ``2026-11-23`` (the Monday) / ``2026-11``.

    The hour that repeats when clocks go back carries its zone name (``02:00 CEST`` and
    ``02:00 CET``) so the two stay apart.
    """
    if unit == "hour":
        label = start.strftime("%Y-%m-%d %H:00")
        if start.replace(fold=0).timestamp() != start.replace(fold=1).timestamp():
            label += f" {start.astimezone().tzname()}"  # the hour the clocks repeat
        return label
    if unit == "month":
        return start.strftime("%Y-%m")
    return start.strftime("%Y-%m-%d")


def slot_seconds() -> int:
    """UTC slot width that no local hour, day, week or month boundary ever splits.

    An hour where the local zone's offsets are whole hours (the ``api_calls_rollup`` index
    is built on it); else a quarter-hour (India, Nepal, ...), which the report reads as
    :func:`hour_parts` of the index's hourly slot.
    """
    offsets = (time.timezone, time.altzone)
    if all(offset % 3600 == 0 for offset in offsets):
        return 3600
    if all(offset % 900 == 0 for offset in offsets):
        return 900
    return 60


def hour_parts(slot: int) -> list[tuple[int, int]]:
    """The parts of every UTC hour (seconds into it, from and to) that no local hour, day,
    week or month boundary splits, for a zone whose ``slot_seconds()`` is ``slot``: the
    whole hour where local hours are whole UTC hours; else split where the local hours
    begin (India: at :30, Nepal: at :15), each part a whole number of slots."""
    # local = UTC - offset (seconds west): a local hour starts where UTC = offset (mod 1 h)
    cuts = sorted({offset % 3600 for offset in (time.timezone, time.altzone)} - {0})
    if any(cut % slot for cut in cuts):
        raise ValueError(f"a {slot} s slot does not hold this zone's hours")
    edges = [0, *cuts, 3600]
    return list(pairwise(edges))


def midnight(day: date, tz: tzinfo | None = None) -> float:
    """The first instant of ``day`` in ``tz`` (None: the system's local time). Where
    midnight does not exist (a DST gap at 00:00) the zone's rules (PEP 495, fold=0) map it
    to the moment the clocks jumped."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def local_midnight(now: float | None = None) -> float:
    """The local midnight that began the day holding ``now``."""
    now = time.time() if now is None else now
    return midnight(datetime.fromtimestamp(now).date())


def week_start(now: float | None = None) -> float:
    """Monday 00:00, local, of the ISO week holding ``now``."""
    now = time.time() if now is None else now
    return bucket_start(now, "week").timestamp()


def month_start(day: date) -> float:
    """Local midnight of the first of ``day``'s month."""
    return midnight(day.replace(day=1))
