"""A subscription's plan windows (Pro/Max: 5 hours and 7 days) from what the proxy saw. Pure.

Subscription answers carry ``anthropic-ratelimit-unified-{5h,7d}-utilization`` (a fraction
of the window used, rising call by call) and ``-reset`` (when the window ends, epoch
seconds); the proxy records them with each call. From those rows:

- **used and resets**: the newest call's utilization and reset. A window whose reset has
  passed since that call is shown as reset (nothing seen since).
- **the window's calls**: those made from ``reset - length`` on (a window ends ``length``
  after it began).
- **shares**: each call is given the step the utilization took up to its answer, over the
  highest value any earlier call of the window reported (never negative: answers of
  concurrent calls arrive out of order). Use of the plan ccmeter does not see (claude.ai,
  another machine) shows up in the next metered call's step. A window's shares add up to its
  highest utilization.
- **rate and run-out**: utilization gained over the last hour (5h window) or day (7d window)
  of the window before its newest call, per hour; at that rate, when it reaches 100 %, if
  that is before the reset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ccmeter.record import Record

#: name -> (length in seconds, the span the current rate is measured over)
WINDOWS = {"5h": (5 * 3600, 3600), "7d": (7 * 86400, 86400)}
#: a rate measured over less than this is no rate
_MIN_RATE_SPAN_S = 60.0


class PlanCall(Record):
    """One metered call with plan headers (utilization None: that window's header absent)."""

    ts: float
    session_id: str | None
    project: str | None
    util_5h: float | None = None
    reset_5h: float | None = None
    util_7d: float | None = None
    reset_7d: float | None = None
    binding: str | None = None


def from_rows(rows: Iterable[Mapping[str, Any]]) -> list[PlanCall]:
    """PlanCalls from ``store.plan_calls`` rows."""
    return [PlanCall(r["started_ts"], r["session_id"], r["project"], r["plan_5h_utilization"],
                     r["plan_5h_reset"], r["plan_7d_utilization"], r["plan_7d_reset"],
                     r["plan_binding_window"]) for r in rows]


class Share(Record):
    """What one session (or project) took of a window: the sum of its calls' steps."""

    key: str | None
    project: str | None
    calls: int
    share: float


class Window(Record):
    """Where one plan window stands."""

    name: str
    #: fraction used at the newest call (None: no call reported it, or it has reset since)
    utilization: float | None
    resets_at: float | None
    #: when the newest call reporting it was made
    observed_at: float | None
    #: the reset passed after the newest call: the window started again, unseen
    reset_passed: bool = False
    binding: bool = False
    calls: int = 0
    #: utilization per hour at the current rate (None: too few calls to tell)
    rate_per_hour: float | None = None
    #: when the window runs out at that rate; None if not before it resets
    runs_out_at: float | None = None
    shares: tuple[Share, ...] = ()


_BINDING_NAMES = {"5h": ("five_hour", "5h"), "7d": ("seven_day", "7d")}


def _columns(call: PlanCall, name: str) -> tuple[float | None, float | None]:
    if name == "5h":
        return call.util_5h, call.reset_5h
    return call.util_7d, call.reset_7d


def window(calls: Sequence[PlanCall], name: str, now: float, *,
           by: str = "session") -> Window:
    """Window ``name`` (``5h`` or ``7d``) from ``calls`` in time order; shares ``by``
    ``session`` or ``project``."""
    length, rate_span = WINDOWS[name]
    seen = [(c, u, r) for c in calls for u, r in [_columns(c, name)]
            if u is not None and r is not None]
    if not seen:
        return Window(name, None, None, None)
    newest, utilization, reset = seen[-1]
    binding = (newest.binding or "").lower() in _BINDING_NAMES[name]
    if reset <= now:
        return Window(name, None, reset, newest.ts, reset_passed=True, binding=binding)
    start = reset - length
    members = [(c, u) for c, u, _ in seen if c.ts >= start]
    steps = _steps(members)
    shares = _shares(members, steps, by)
    rate = _rate(members, start, rate_span)
    runs_out = None
    if rate is not None and rate > 0:
        at = newest.ts + max(0.0, 1.0 - utilization) / rate * 3600
        runs_out = at if at < reset else None
    elif utilization >= 1:
        runs_out = newest.ts
    return Window(name, utilization, reset, newest.ts, binding=binding, calls=len(members),
                  rate_per_hour=rate, runs_out_at=runs_out, shares=shares)


def _steps(members: Sequence[tuple[PlanCall, float]]) -> list[float]:
    """Each call's rise of the utilization over the highest value reported before it."""
    high = 0.0
    steps = []
    for _call, utilization in members:
        steps.append(max(0.0, utilization - high))
        high = max(high, utilization)
    return steps


def _shares(members: Sequence[tuple[PlanCall, float]], steps: Sequence[float],
            by: str) -> tuple[Share, ...]:
    totals: dict[str | None, list] = {}  # key -> [calls, share, projects]
    for (call, _u), step in zip(members, steps, strict=True):
        key = call.session_id if by == "session" else call.project
        entry = totals.setdefault(key, [0, 0.0, set()])
        entry[0] += 1
        entry[1] += step
        if call.project:
            entry[2].add(call.project)
    shares = [Share(key, next(iter(v[2])) if len(v[2]) == 1 else None, v[0], v[1])
              for key, v in totals.items()]
    return tuple(sorted(shares, key=lambda s: (-s.share, -s.calls, str(s.key))))


def _rate(members: Sequence[tuple[PlanCall, float]], start: float,
          span: float) -> float | None:
    """Utilization per hour over the last ``span`` seconds before the newest call.

    The baseline is the highest utilization reported by the time that span began, or 0 at the
    window's start; a window whose calls all fall inside the span is measured from its first
    call (what came before it in the window is not known to be recent).
    """
    if not members:
        return None
    newest_ts = members[-1][0].ts
    since = max(start, newest_ts - span)
    before = [u for c, u in members if c.ts <= since]
    high = max((u for _c, u in members), default=0.0)
    if before:
        base_ts, base = since, max(before)
    elif since == start and newest_ts - start <= span:
        base_ts, base = start, 0.0
    else:
        base_ts, base = members[0][0].ts, members[0][1]
    elapsed = newest_ts - base_ts
    if elapsed < _MIN_RATE_SPAN_S:
        return None
    return max(0.0, high - base) / elapsed * 3600


def plan_windows(calls: Iterable[PlanCall], now: float, *, by: str = "session") -> list[Window]:
    """Both windows, 5h first."""
    ordered = sorted(calls, key=lambda c: c.ts)
    return [window(ordered, name, now, by=by) for name in WINDOWS]


class Hour(Record):
    """The plan windows as the calls of one hour reported them (``ccmeter plan --by hour``)."""

    start: float
    calls: int
    #: the highest utilization any call of the hour reported (None: no call reported it)
    util_5h: float | None
    util_7d: float | None
    #: a window reset during the hour (a call reported a later reset than the one before)
    reset_5h: bool = False
    reset_7d: bool = False


def by_hour(calls: Iterable[PlanCall], since: float) -> list[Hour]:
    """Each hour from ``since`` on that has calls, oldest first: utilization over time."""
    hours: dict[int, list[PlanCall]] = {}
    for call in sorted(calls, key=lambda c: c.ts):
        if call.ts >= since:
            hours.setdefault(int(call.ts // 3600), []).append(call)
    out = []
    last_reset: dict[str, float | None] = {"5h": None, "7d": None}
    for hour, members in sorted(hours.items()):
        high: dict[str, float | None] = {"5h": None, "7d": None}
        reset = {"5h": False, "7d": False}
        for call in members:
            for name in ("5h", "7d"):
                used, ends = _columns(call, name)
                if used is not None:
                    high[name] = used if high[name] is None else max(high[name] or 0.0, used)
                if ends is not None:
                    if last_reset[name] is not None and ends > (last_reset[name] or 0) + 60:
                        reset[name] = True
                    last_reset[name] = ends
        out.append(Hour(hour * 3600.0, len(members), high["5h"], high["7d"], reset["5h"],
                        reset["7d"]))
    return out
