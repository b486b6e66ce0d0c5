"""Spending caps: window arithmetic, cap evaluation, refusal messages, and the check.

The first part is pure (no mitmproxy, no sqlite, no rich): parsing the ``[caps]`` table of the
config, the calendar/rolling windows, what a cap's status is given its spend, the messages a
refused request shows, and the running cost estimate hard mode cuts streams with. It takes
floats, dicts and dataclasses and returns dataclasses, so it is tested exhaustively.

The last part (:class:`Guard`, :func:`cap_statuses`) is a thin layer over named SQL
functions in :mod:`ccmeter.store`; the store is imported lazily there, so importing this
module pulls in no database code.

Windows are calendar windows in the user's local time by default (the hour, the day, the
ISO week starting Monday 00:00, the month), computed with the zone's rules so a day is 23
or 25 hours long when the clocks change. ``window = "rolling"`` makes them the last
1 h / 24 h / 7 d / 30 d instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from shlex import quote
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ccmeter.config import CCMeterError

log = logging.getLogger(__name__)

PICO = 10**12
WINDOWS = ("hourly", "daily", "weekly", "monthly")
SESSION_WINDOWS = (*WINDOWS, "total")  # a per-session cap may also bound a whole session
ROLLING_SPAN_S = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400, "monthly": 30 * 86400}
MODES = ("soft", "hard")
WINDOW_KINDS = ("calendar", "rolling")
ON_ERROR = ("allow", "block")
MAX_CAP_USD = Decimal(1_000_000)  # SQLite integers hold ~9.2e6 USD in picodollars
DEFAULT_WARN_AT = (0.8,)
DEFAULT_RESERVATION_TTL_S = 15 * 60
#: Hard mode's output estimate: one token per this many UTF-8 bytes of streamed text
#: (English averages ~4 bytes a token, code ~3, CJK ~3 bytes a character and a token each),
#: so the estimate errs high and a stream is cut early rather than late.
BYTES_PER_TOKEN = 3

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


# --- money and durations ----------------------------------------------------------------


def parse_usd(value: Any, where: str = "amount") -> int:
    """A dollar amount (``"20"``, ``"$0.50"``, ``20``, ``7.5``) as exact picodollars."""
    if isinstance(value, bool):
        raise CCMeterError(f"{where}: expected a dollar amount, got {value!r}")
    text = repr(value) if isinstance(value, float) else str(value)
    text = text.strip().removeprefix("$").replace(",", "").replace("_", "")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise CCMeterError(f"{where}: {value!r} is not a dollar amount (try 20 or 7.50)") from None
    if not amount.is_finite():
        raise CCMeterError(f"{where}: {value!r} is not a dollar amount (try 20 or 7.50)")
    if amount < 0:
        raise CCMeterError(f"{where}: a cap cannot be negative ({value!r})")
    if amount > MAX_CAP_USD:
        raise CCMeterError(f"{where}: {value!r} is above the largest cap, ${MAX_CAP_USD:,}")
    pico = amount * PICO
    if pico != pico.to_integral_value():
        raise CCMeterError(f"{where}: {value!r} has more decimals than a picodollar (1e-12)")
    return int(pico)


def usd_text(pico: int) -> str:
    """Exact, shortest decimal text for a config file: 20000000000000 -> ``"20"``."""
    text = format(Decimal(pico).scaleb(-12).normalize(), "f")
    return text


def format_usd(pico: int, decimals: int = 2) -> str:
    """``$20.00``; floored (a spend is never shown above what was spent), thousands split."""
    q = Decimal(1).scaleb(-decimals)
    amount = Decimal(pico).scaleb(-12).quantize(q, rounding=ROUND_FLOOR)
    return f"${amount:,.{decimals}f}"


def decimals_for(pico: int) -> int:
    """Decimals needed to show a cap exactly, at least 2 ($0.005 stays $0.005)."""
    exponent = Decimal(pico).scaleb(-12).normalize().as_tuple().exponent
    return max(2, -int(exponent)) if isinstance(exponent, int) else 2


def format_spend(spent: int, limit: int) -> str:
    """A spend shown beside its cap: at the cap's precision (so ``$20.07`` of ``$20.00``),
    with more decimals only where flooring would show a spend above the cap as equal to it
    or below it (``$0.0026`` past a ``$0.002`` cap, ``$20.004`` past ``$20.00``)."""
    places = decimals_for(limit)
    while spent > limit and places < 12:
        shown = Decimal(spent).scaleb(-12).quantize(Decimal(1).scaleb(-places),
                                                    rounding=ROUND_FLOOR)
        if shown > Decimal(limit).scaleb(-12):
            break
        places += 1
    return format_usd(spent, places)


def parse_duration(text: str) -> float:
    """``30m``, ``2h``, ``1h30m``, ``1d``, ``45s`` -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise CCMeterError(f"{text!r} is not a duration; use e.g. 30m, 2h, 1h30m or 1d")
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    seconds = d * 86400 + h * 3600 + m * 60 + s
    if seconds <= 0:
        raise CCMeterError(f"{text!r} is not a duration; use e.g. 30m, 2h, 1h30m or 1d")
    return float(seconds)


def format_in(seconds: float) -> str:
    """A time left, ``3h12m`` (minutes rounded up); ``2d3h`` from a day on."""
    minutes = max(0, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{mins}m"


# --- time zones and windows --------------------------------------------------------------


def zone(name: str | None) -> tzinfo | None:
    """An IANA zone; None means the system's local time (with its DST rules)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CCMeterError(f"unknown time zone {name!r}; use a name like Europe/Berlin") from None


def local_time(ts: float, tz: tzinfo | None = None) -> datetime:
    """Wall-clock time at ``ts``: aware in ``tz``, or naive system-local (fold set)."""
    return datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts)


def _midnight(day: date, tz: tzinfo | None) -> float:
    """The first instant of ``day``: where midnight does not exist (a DST gap at 00:00) the
    zone's rules (PEP 495, fold=0) map it to the moment the clocks jumped."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


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
    return _midnight(first, tz), _midnight(nxt, tz)


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


# --- the policy: what the [caps] table says ----------------------------------------------


@dataclass(frozen=True)
class Cap:
    """One configured cap. ``scope`` is ``global``, ``project:NAME`` or ``per_session``."""

    name: str
    scope: str
    limit_picousd: int


@dataclass(frozen=True)
class Policy:
    caps: tuple[Cap, ...] = ()
    mode: str = "soft"
    window: str = "calendar"
    warn_at: tuple[float, ...] = DEFAULT_WARN_AT
    on_error: str = "allow"
    timezone: str | None = None
    notify: bool = True
    paused_until: float | None = None
    estimate_picousd: int = 0
    estimates: tuple[tuple[str, int], ...] = ()
    reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S

    @property
    def enabled(self) -> bool:
        return bool(self.caps)

    @property
    def tz(self) -> tzinfo | None:
        return zone(self.timezone)

    @property
    def needs_request_details(self) -> bool:
        """Does a check need what only the request's JSON says (project, session, model,
        streaming)? Global caps in soft mode with one flat estimate do not, so the proxy can
        forward the request before reading it."""
        return (self.mode == "hard" or bool(self.estimates)
                or any(cap.scope != "global" for cap in self.caps))

    def paused(self, now: float) -> bool:
        return self.paused_until is not None and now < self.paused_until

    @property
    def reserves(self) -> bool:
        """Do calls reserve an estimate while in flight? With none (the default) an
        in-flight call counts $0 until its row is written."""
        return self.estimate_picousd > 0 or any(pico > 0 for _, pico in self.estimates)

    def estimate_for(self, model: str | None) -> int:
        """Picodollars reserved for an in-flight call of ``model`` (longest prefix match)."""
        best, best_len = self.estimate_picousd, -1
        for prefix, pico in self.estimates:
            if model and model.startswith(prefix) and len(prefix) > best_len:
                best, best_len = pico, len(prefix)
        return best


def _amounts(table: Mapping[str, Any], names: Sequence[str], where: str) -> dict[str, int]:
    out = {}
    for name in names:
        if name in table:
            out[name] = parse_usd(table[name], f"{where}.{name}")
    return out


def _choice(table: Mapping[str, Any], key: str, choices: Sequence[str], default: str) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise CCMeterError(
            f"[caps] {key} must be one of {', '.join(choices)}; got {value!r}"
        )
    return str(value)


def parse_warn_at(value: Any) -> tuple[float, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        try:
            number = float(str(item).strip().removesuffix("%"))
        except ValueError:
            raise CCMeterError(f"warn_at: {item!r} is not a fraction like 0.8") from None
        if isinstance(item, str) and item.strip().endswith("%"):
            number /= 100
        if not 0 < number <= 1:
            raise CCMeterError(f"warn_at: {item!r} must be a fraction above 0 and at most 1")
        out.append(number)
    return tuple(sorted(set(out)))


def _timestamp(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.astimezone()).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise CCMeterError(f"{where}: expected a date-time, got {value!r}")


def parse_policy(cfg: Mapping[str, Any]) -> Policy:
    """The ``[caps]`` table of a loaded config (the whole config dict) as a :class:`Policy`.

    Raises CCMeterError naming the bad key.
    """
    table = cfg.get("caps") or {}
    if not isinstance(table, Mapping):
        raise CCMeterError("[caps] must be a table")
    caps = [Cap(n, "global", p) for n, p in _amounts(table, WINDOWS, "[caps]").items()]
    projects = table.get("projects") or {}
    if not isinstance(projects, Mapping):
        raise CCMeterError("[caps.projects] must be a table of project tables")
    for project, ptable in sorted(projects.items()):
        if not isinstance(ptable, Mapping):
            raise CCMeterError(f"[caps.projects.{project}] must be a table")
        where = f"[caps.projects.{project}]"
        caps += [Cap(n, f"project:{project}", p)
                 for n, p in _amounts(ptable, WINDOWS, where).items()]
    per_session = table.get("per_session") or {}
    if not isinstance(per_session, Mapping):
        raise CCMeterError("[caps.per_session] must be a table")
    caps += [Cap(n, "per_session", p)
             for n, p in _amounts(per_session, SESSION_WINDOWS, "[caps.per_session]").items()]
    estimates = table.get("estimates") or {}
    if not isinstance(estimates, Mapping):
        raise CCMeterError("[caps.estimates] must be a table of model = dollars")
    timezone = table.get("timezone")
    if timezone is not None:
        zone(str(timezone))
    ttl = table.get("reservation_ttl", "15m")
    return Policy(
        caps=tuple(caps),
        mode=_choice(table, "mode", MODES, "soft"),
        window=_choice(table, "window", WINDOW_KINDS, "calendar"),
        warn_at=parse_warn_at(table.get("warn_at", list(DEFAULT_WARN_AT))),
        on_error=_choice(table, "on_error", ON_ERROR, "allow"),
        timezone=str(timezone) if timezone else None,
        notify=bool(table.get("notify", True)),
        paused_until=_timestamp(table.get("paused_until"), "[caps] paused_until"),
        estimate_picousd=parse_usd(table.get("estimate", 0), "[caps] estimate"),
        estimates=tuple(
            (str(m), parse_usd(v, f"[caps.estimates] {m}")) for m, v in sorted(estimates.items())
        ),
        reservation_ttl_s=parse_duration(ttl) if isinstance(ttl, str) else float(ttl),
    )


# --- evaluation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One cap applied to one moment: the window and the rows it sums over."""

    cap: Cap
    scope: str  # "global", "project:NAME" or "session:ID"
    start: float
    end: float | None
    project: str | None = None
    session_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.scope}/{self.cap.name}"


def checks_for(
    policy: Policy, now: float, *, project: str | None = None, session_id: str | None = None,
    all_projects: bool = False,
) -> list[Check]:
    """The caps that apply to a call of ``project``/``session_id`` at ``now``.

    ``all_projects`` lists every project's caps (for ``ccmeter caps``), not only ``project``'s.
    """
    tz = policy.tz
    out = []
    for cap in policy.caps:
        kind = policy.window
        if cap.scope == "global":
            scope, p, s = "global", None, None
        elif cap.scope.startswith("project:"):
            name = cap.scope.removeprefix("project:")
            if not all_projects and name != project:
                continue
            scope, p, s = cap.scope, name, None
        else:  # per_session
            if not session_id:
                continue
            scope, p, s = f"session:{session_id}", None, session_id
        start, end = window_bounds(cap.name, now, tz, kind)
        out.append(Check(cap, scope, start, end, p, s))
    return out


@dataclass(frozen=True)
class CapStatus:
    """Where one cap stands. ``fraction`` is spent / limit (1.0 or more: reached)."""

    name: str
    scope: str
    limit_picousd: int
    spent_picousd: int
    resets_at: float | None
    fraction: float
    window: str
    warn_at: tuple[float, ...] = DEFAULT_WARN_AT
    window_start: float = 0.0

    @property
    def remaining_picousd(self) -> int:
        return max(0, self.limit_picousd - self.spent_picousd)

    @property
    def reached(self) -> bool:
        return self.spent_picousd >= self.limit_picousd

    @property
    def warning(self) -> bool:
        """At or past the lowest warning fraction (and not reached)."""
        return not self.reached and bool(self.warn_at) and self.fraction >= min(self.warn_at)

    @property
    def label(self) -> str:
        """``daily``, ``daily for project api``, ``daily per session``."""
        if self.scope.startswith("project:"):
            return f"{self.name} cap for project {self.scope.removeprefix('project:')}"
        if self.scope.startswith("session:"):
            return f"{self.name} cap per session" if self.name != "total" else "session cap"
        return f"{self.name} cap"


def status_of(
    check: Check, spent: int, policy: Policy, resets_at: float | None = None
) -> CapStatus:
    limit = check.cap.limit_picousd
    fraction = spent / limit if limit else (1.0 if spent >= 0 else 0.0)
    return CapStatus(
        name=check.cap.name,
        scope=check.scope,
        limit_picousd=limit,
        spent_picousd=spent,
        resets_at=check.end if resets_at is None else resets_at,
        fraction=fraction,
        window="calendar" if check.end is not None else (
            "total" if check.cap.name == "total" else "rolling"),
        warn_at=policy.warn_at,
        window_start=check.start,
    )


def raise_command(status: CapStatus) -> str:
    flag = f"--{status.name} N"
    if status.scope.startswith("project:"):
        return f"ccmeter caps set --project {quote(status.scope.removeprefix('project:'))} {flag}"
    if status.scope.startswith("session:"):
        return f"ccmeter caps set --per-session {flag}"
    return f"ccmeter caps set {flag}"


def format_reset(resets_at: float, now: float, tz: tzinfo | None = None) -> str:
    """``00:00`` today or tomorrow, ``Mon 00:00`` within a week, ``Dec 1 00:00`` later."""
    at, today = local_time(resets_at, tz), local_time(now, tz)
    days = (at.date() - today.date()).days
    if days <= 1:
        return f"{at:%H:%M}"
    if days < 7:
        return f"{at:%a %H:%M}"
    return f"{at:%b} {at.day} {at:%H:%M}"


def reset_phrase(status: CapStatus, now: float, tz: tzinfo | None = None) -> str:
    if status.resets_at is None:
        return "it does not reset (a whole-session cap)" if status.name == "total" else (
            "resets as spend leaves the rolling window")
    return (f"resets {format_reset(status.resets_at, now, tz)} "
            f"(in {format_in(status.resets_at - now)})")


def refusal_message(status: CapStatus, now: float, tz: tzinfo | None = None) -> str:
    """The text Claude Code shows: ``ccmeter: daily cap $20.00 reached ($20.07 spent);
    resets 00:00 (in 3h12m). Raise it with: ccmeter caps set --daily N``."""
    places = decimals_for(status.limit_picousd)
    spent = format_spend(status.spent_picousd, status.limit_picousd)
    return (
        f"ccmeter: {status.label} {format_usd(status.limit_picousd, places)} reached "
        f"({spent} spent); {reset_phrase(status, now, tz)}. "
        f"Raise it with: {raise_command(status)}"
    )


def error_refusal_message(reason: str) -> str:
    return (
        f"ccmeter: spending caps cannot be checked ({reason}) and caps.on_error is \"block\". "
        "Fix the database, or allow calls meanwhile with: ccmeter caps set --on-error allow"
    )


def warning_message(status: CapStatus, threshold: float, now: float,
                    tz: tzinfo | None = None) -> str:
    places = decimals_for(status.limit_picousd)
    return (
        f"{status.label} at {status.fraction:.0%} (warning at {threshold:.0%}): "
        f"{format_spend(status.spent_picousd, status.limit_picousd)} of "
        f"{format_usd(status.limit_picousd, places)}; {reset_phrase(status, now, tz)}"
    )


def most_constraining(statuses: Sequence[CapStatus]) -> CapStatus | None:
    """The reached cap that lifts last, else the fullest one."""
    reached = [s for s in statuses if s.reached]
    if reached:
        return max(reached, key=lambda s: (s.resets_at is None, s.resets_at or 0))
    return max(statuses, key=lambda s: s.fraction, default=None)


def summary_note(statuses: Sequence[CapStatus], project: str | None = None) -> str | None:
    """For ``ccmeter run``'s exit line: ``daily cap 31 %`` (the fullest global cap or cap of
    the run's project), or ``daily cap reached``."""
    relevant = [s for s in statuses if s.scope in ("global", f"project:{project}")]
    worst = most_constraining(relevant)
    if worst is None:
        return None
    name = worst.label
    if worst.reached:
        return f"{name} reached"
    return f"{name} {math.floor(worst.fraction * 100)} %"


# --- hard mode: the running cost of a stream ---------------------------------------------


class RunningCost:
    """What a stream has cost so far: its usage priced, plus output tokens estimated from
    the UTF-8 bytes of text/thinking/tool-input deltas seen (one token per
    ``BYTES_PER_TOKEN`` bytes), whichever is higher. Decimal pricing runs only when the
    usage changes; each delta is integer arithmetic."""

    __slots__ = ("_base", "_catalog", "_per_mtok", "_reported", "_when", "model", "streamed_bytes")

    def __init__(self, catalog: Any, when: datetime) -> None:
        self._catalog = catalog
        self._when = when
        self._base = 0
        self._per_mtok = 0  # picodollars per million more output tokens
        self._reported = 0
        self.model: str | None = None
        self.streamed_bytes = 0

    def set_usage(self, model: str | None, usage: Any) -> None:
        self.model = model
        base = self._catalog.price(model, usage, self._when).cost_picousd
        more = replace(usage, output_tokens=usage.output_tokens + 1_000_000)
        plus = self._catalog.price(model, more, self._when).cost_picousd
        if base is None or plus is None:
            return
        self._base, self._per_mtok, self._reported = base, plus - base, usage.output_tokens

    @property
    def estimated_output_tokens(self) -> int:
        return max(self._reported, -(-self.streamed_bytes // BYTES_PER_TOKEN))

    @property
    def picousd(self) -> int:
        extra = self.estimated_output_tokens - self._reported
        return self._base + extra * self._per_mtok // 1_000_000


class StreamLimit:
    """Hard mode for one stream: the cap with the least headroom at admission, and the
    stream's running cost. ``crossed`` once the call alone would reach that cap."""

    __slots__ = ("_usage", "headroom", "running", "status", "tz")

    def __init__(self, status: CapStatus, headroom: int, running: RunningCost,
                 tz: tzinfo | None = None) -> None:
        self.status, self.headroom, self.running, self.tz = status, headroom, running, tz
        self._usage: Any = None

    def observe(self, name: str, data: Mapping[str, Any] | None, model: str | None,
                usage: Any) -> None:
        """Fold one decoded event in (``usage``/``model``: the message state after it)."""
        if usage is not None and usage is not self._usage:
            self._usage = usage
            self.running.set_usage(model, usage)
        if name == "content_block_delta" and data is not None:
            delta = data.get("delta")
            if isinstance(delta, Mapping):
                for key in ("text", "thinking", "partial_json"):
                    piece = delta.get(key)
                    if isinstance(piece, str):
                        self.running.streamed_bytes += len(piece.encode("utf-8"))

    @property
    def crossed(self) -> bool:
        return self.running.picousd >= self.headroom

    def message(self, now: float) -> str:
        spent = self.status.spent_picousd + self.running.picousd
        status = replace(self.status, spent_picousd=spent,
                         fraction=spent / self.status.limit_picousd
                         if self.status.limit_picousd else 1.0)
        return refusal_message(status, now, self.tz)


def sse_error_event(message: str) -> bytes:
    """A well-formed SSE ``error`` event in the API's shape."""
    import json

    data = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"


# --- the thin layer over the store ---------------------------------------------------------


@dataclass
class Decision:
    """The answer for one request. ``headroom`` maps a check to what the call may still
    spend before that cap is reached (hard mode cuts the stream there)."""

    allowed: bool
    message: str | None = None
    statuses: list[CapStatus] = field(default_factory=list)
    headroom: list[tuple[CapStatus, int]] = field(default_factory=list)
    reserved: bool = False
    reason: str = "ok"  # ok | paused | cap | db_error | off


def _notify(text: str) -> None:
    """A desktop notification where there is one; never blocks, never raises."""
    try:
        if sys.platform == "darwin" and shutil.which("osascript"):
            script = f"display notification {_applescript(text)} with title \"ccmeter\""
            argv = ["osascript", "-e", script]
        elif shutil.which("notify-send"):
            argv = ["notify-send", "--app-name=ccmeter", "ccmeter", text]
        else:
            return
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except Exception:
        log.debug("desktop notification failed", exc_info=True)


def _applescript(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Plan:
    """A Guard's checks for one (policy, project, session), valid in [valid_from, until)."""

    policy: Policy
    checks: tuple[Check, ...]
    query: Any  # store.SpendQuery, summing every check's window
    limits: tuple[int, ...]
    valid_from: float
    until: float


class Guard:
    """Check-and-reserve for one process, one check at a time: on the proxy's event loop
    when the check need not wait (a connection that never waits for a lock), else on a
    single-worker executor (a connection that waits up to ``CAP_CHECK_WAIT_MS``)."""

    def __init__(self, db_path: Path | str, notify: Any = _notify) -> None:
        from ccmeter import store

        self._store = store  # imported once here, not in each check: it is on the hot path
        self.db_path = Path(db_path)
        self._dbs: dict[bool, Any] = {}  # wait? -> connection
        self._lock = threading.Lock()
        self._warned: set[tuple[str, float, float]] = set()
        self._notify = notify
        self._plans: dict[tuple[int, str | None, str | None], _Plan] = {}

    def _conn(self, wait: bool = True) -> Any:
        store = self._store
        db = self._dbs.get(wait)
        if db is None:
            db = self._dbs[wait] = store.connect_cap_checker(
                self.db_path, wait_ms=store.CAP_CHECK_WAIT_MS if wait else 0)
        return db

    def close(self) -> None:
        with self._lock:
            self._drop_conn()

    def check(
        self, policy: Policy, *, call_uid: str, project: str | None, session_id: str | None,
        model: str | None, now: float | None = None, wait: bool = True,
    ) -> Decision | None:
        """Check every applicable cap and, when the policy has an estimate for the model,
        reserve for the call (see :func:`ccmeter.store.cap_check_and_reserve`).

        With ``wait=False`` (the proxy's event loop) it returns None instead of waiting for
        this guard's other user or for another process's write lock.
        """
        store = self._store
        now = time.time() if now is None else now
        if not policy.enabled:
            return Decision(True, reason="off")
        if policy.paused(now):
            return Decision(True, reason="paused")
        plan = self._plan(policy, now, project, session_id)
        checks = plan.checks
        if not checks:
            return Decision(True, reason="off")
        estimate = policy.estimate_for(model)
        reservation = store.Reservation(call_uid, now, estimate, now + policy.reservation_ttl_s,
                                        project, session_id) if estimate > 0 else None
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            try:
                conn = self._conn(wait)
                spents, allowed = store.cap_check_and_reserve(
                    conn, plan.query, now,
                    lambda spent: all(s < lim for s, lim in zip(spent, plan.limits, strict=True)),
                    reservation, wait=wait,
                )
            except store.WouldBlock:
                return None
            except Exception as exc:
                self._drop_conn()
                return self._on_error(policy, exc)
            statuses = [_measured(conn, policy, c, s, now)
                        for c, s in zip(checks, spents, strict=True)]
            if not allowed:
                worst = most_constraining([s for s in statuses if s.reached])
                assert worst is not None
                message = refusal_message(worst, now, policy.tz)
                log.warning("ccmeter: refused a call: %s", message.removeprefix("ccmeter: "))
                return Decision(False, message, statuses, reason="cap")
            self._warn(policy, statuses, now, wait)
        finally:
            self._lock.release()
        headroom = [(s, s.limit_picousd - s.spent_picousd) for s in statuses]
        return Decision(True, None, statuses, headroom, reserved=True)

    def _plan(self, policy: Policy, now: float, project: str | None,
              session_id: str | None) -> _Plan:
        """:func:`checks_for` and the query that sums their windows, worked out once per
        window: calendar bounds hold until the window ends (rolling ones move every call)."""
        store = self._store
        key = (id(policy), project, session_id)
        plan = self._plans.get(key)
        if plan is not None and plan.policy is policy and plan.valid_from <= now < plan.until:
            return plan
        checks = tuple(checks_for(policy, now, project=project, session_id=session_id))
        query = store.spend_query([store.SpendWindow(c.start, c.project, c.session_id)
                                   for c in checks], reservations=policy.reserves)
        plan = _Plan(policy, checks, query, tuple(c.cap.limit_picousd for c in checks),
                     max((c.start for c in checks), default=0.0),
                     min((c.end for c in checks if c.end is not None), default=math.inf))
        if policy.window == "calendar" or all(c.cap.name == "total" for c in checks):
            if len(self._plans) >= 1024:  # per-session caps: one plan per session
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _drop_conn(self) -> None:
        dbs, self._dbs = self._dbs, {}
        for db in dbs.values():
            with contextlib.suppress(Exception):
                db.conn.close()

    def _on_error(self, policy: Policy, exc: Exception) -> Decision:
        reason = f"database error: {type(exc).__name__}: {exc}"[:200]
        if policy.on_error == "block":
            log.error("ccmeter: cannot check caps (%s); refusing (on_error = block)", reason)
            return Decision(False, error_refusal_message(reason), reason="db_error")
        log.error("ccmeter: cannot check caps (%s); allowing (on_error = allow)", reason)
        return Decision(True, reason="db_error")

    def _warn(self, policy: Policy, statuses: Sequence[CapStatus], now: float,
              wait: bool = True) -> None:
        """Warn once per cap, window and threshold, across processes (``cap_warnings``).
        On the event loop (``wait=False``) a locked database is not waited for: the warning
        is given, at the risk of another process giving it too."""
        store = self._store
        for status in statuses:
            passed = [t for t in policy.warn_at if status.fraction >= t]
            if not passed:
                continue
            threshold = max(passed)
            window_key = (status.window_start if status.window != "rolling"
                          else float(int(now // ROLLING_SPAN_S[status.name])))
            memo = (f"{status.scope}/{status.name}", window_key, threshold)
            if memo in self._warned:
                continue
            self._warned.add(memo)
            try:
                first = store.cap_mark_warned(self._conn(wait), memo[0], window_key, threshold,
                                              now, wait=wait)
            except Exception as exc:
                log.warning("ccmeter: could not record a cap warning (%s); giving it anyway", exc)
                first = True
            if first:
                text = warning_message(status, threshold, now, policy.tz)
                log.warning("ccmeter: %s", text)
                if policy.notify:
                    self._notify(text)


def _measured(conn: Any, policy: Policy, check: Check, spent: int, now: float) -> CapStatus:
    """``status_of``, with a rolling cap's reset time looked up when it is reached: the
    moment enough of the oldest spend has left the window."""
    resets_at = None
    if check.end is None and check.cap.name != "total" and spent >= check.cap.limit_picousd:
        from ccmeter import store

        excess = spent - check.cap.limit_picousd + 1
        oldest = store.cap_rolling_release_ts(
            conn, store.SpendWindow(check.start, check.project, check.session_id), excess)
        if oldest is not None:
            resets_at = max(now, oldest + ROLLING_SPAN_S[check.cap.name])
    return status_of(check, spent, policy, resets_at)


def cap_statuses(
    db: Any, cfg: Mapping[str, Any], now: float | None = None, *,
    project: str | None = None, session_id: str | None = None,
) -> list[CapStatus]:
    """Every configured cap's status (for ``ccmeter caps``, ``watch`` and the status line).

    ``db`` is a store connection or a database path; ``cfg`` the loaded config (its
    ``[caps]`` table is read). Project caps of every project are listed; per-session caps
    only for ``session_id``. Spend includes in-flight calls' reservations.
    """
    from ccmeter import store

    now = time.time() if now is None else now
    policy = parse_policy(cfg)
    conn = store.connect(db) if isinstance(db, str | Path) else db
    try:
        out = []
        for check in checks_for(policy, now, project=project, session_id=session_id,
                                all_projects=True):
            spent = store.cap_spent(conn, store.SpendWindow(check.start, check.project,
                                                            check.session_id), now)
            out.append(_measured(conn, policy, check, spent, now))
        return out
    finally:
        if conn is not db:
            conn.conn.close()


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
