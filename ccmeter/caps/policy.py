"""The caps policy: the ``[caps]`` table of the config, and which caps apply to a call.

Pure (no mitmproxy, no sqlite, no rich): it takes dicts and floats and returns frozen
records (:class:`Policy`, :class:`Check`, :class:`CapStatus`), so it is tested
exhaustively. Amounts are exact integer picodollars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any

from ccmeter import config
from ccmeter.caps.windows import SESSION_WINDOWS, WINDOWS, window_bounds, zone
from ccmeter.config import CCMeterError
from ccmeter.money import parse_usd
from ccmeter.periods import parse_duration
from ccmeter.record import Record

MODES = ("soft", "hard")
WINDOW_KINDS = ("calendar", "rolling")
ON_ERROR = ("allow", "block")
DEFAULT_WARN_AT = (0.8,)
DEFAULT_RESERVATION_TTL_S = 15 * 60
DEFAULT_PLAN_WARN_AT = 0.8


class Cap(Record):
    """One configured cap. ``scope`` is ``global``, ``project:NAME`` or ``per_session``;
    or a team budget (:mod:`ccmeter.tiers`), ``team:TEAM`` or ``group:TEAM/GROUP``, whose
    ``others_picousd`` is what the rest of the team spent in the window (from the share)."""

    name: str
    scope: str
    limit_picousd: int
    others_picousd: int = 0

    @property
    def tier(self) -> bool:
        return self.scope.startswith(("team:", "group:"))

class Policy(Record):
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
    #: Refuse a session's requests once it has made the same tool call this many times.
    loop: int | None = None
    #: Sessions whose caps (loop guard included) are paused, and until when.
    paused_sessions: tuple[tuple[str, float], ...] = ()
    #: Refuse a single call whose forecast input-side cost is above this (picodollars);
    #: ``per_call_projects`` overrides it for a project.
    per_call_picousd: int | None = None
    per_call_projects: tuple[tuple[str, int], ...] = ()
    #: Refuse calls once a plan window's utilization (a fraction) has reached this.
    plan_5h: float | None = None
    plan_7d: float | None = None
    #: Warn once a plan window's utilization reaches this fraction.
    plan_warn_at: float = DEFAULT_PLAN_WARN_AT

    @property
    def enabled(self) -> bool:
        return bool(self.caps)

    def session_paused(self, session_id: str | None, now: float) -> bool:
        return session_id is not None and any(
            sid == session_id and now < until for sid, until in self.paused_sessions)

    @property
    def tz(self) -> tzinfo | None:
        return zone(self.timezone)

    @property
    def needs_request_details(self) -> bool:
        """Does a check need what only the request's JSON says (project, session, model,
        streaming)? Global caps in soft mode with one flat estimate do not, so the proxy can
        forward the request before reading it."""
        return (self.mode == "hard" or bool(self.estimates) or bool(self.paused_sessions)
                or self.forecasts_first
                or any(cap.scope != "global" and not cap.tier for cap in self.caps))

    def per_call_limit(self, project: str | None) -> int | None:
        """The per-call cap for a call of ``project`` (its project's own, else the global)."""
        for name, pico in self.per_call_projects:
            if name == project:
                return pico
        return self.per_call_picousd

    @property
    def forecasts_first(self) -> bool:
        """Must a call's cost be forecast before it may go (a per-call cap is set)?"""
        return self.per_call_picousd is not None or bool(self.per_call_projects)

    def plan_caps(self) -> tuple[tuple[str, float], ...]:
        """The plan-window caps set: ``(("5h", 0.9),)``."""
        return tuple((name, limit) for name, limit in (("5h", self.plan_5h),
                                                        ("7d", self.plan_7d))
                     if limit is not None)

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

    Raises CCMeterError naming the bad key, or the unknown one (a typo'd cap is no cap).
    """
    unknown = config.caps_unknown_error(cfg)
    if unknown is not None:
        raise unknown
    table = cfg.get("caps") or {}
    if not isinstance(table, Mapping):
        raise CCMeterError("[caps] must be a table")
    caps = [Cap(n, "global", p) for n, p in _amounts(table, WINDOWS, "[caps]").items()]
    projects = table.get("projects") or {}
    if not isinstance(projects, Mapping):
        raise CCMeterError("[caps.projects] must be a table of project tables")
    per_call_projects = []
    for project, ptable in sorted(projects.items()):
        if not isinstance(ptable, Mapping):
            raise CCMeterError(f"[caps.projects.{project}] must be a table")
        where = f"[caps.projects.{project}]"
        caps += [Cap(n, f"project:{project}", p)
                 for n, p in _amounts(ptable, WINDOWS, where).items()]
        if "per_call" in ptable:
            per_call_projects.append((str(project), parse_per_call(ptable["per_call"],
                                                                   f"{where} per_call")))
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
    paused = table.get("paused_sessions") or {}
    if not isinstance(paused, Mapping):
        raise CCMeterError("[caps.paused_sessions] must be a table of session = date-time")
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
        reservation_ttl_s=(parse_duration(ttl, what="[caps] reservation_ttl").approx_seconds
                           if isinstance(ttl, str) else float(ttl)),
        loop=parse_loop(table.get("loop")),
        paused_sessions=tuple(sorted(
            (str(sid), _timestamp(until, f"[caps.paused_sessions] {sid}") or 0.0)
            for sid, until in paused.items())),
        per_call_picousd=(parse_per_call(table["per_call"], "[caps] per_call")
                          if "per_call" in table else None),
        per_call_projects=tuple(per_call_projects),
        plan_5h=parse_percent(table.get("plan_5h"), "[caps] plan_5h"),
        plan_7d=parse_percent(table.get("plan_7d"), "[caps] plan_7d"),
        plan_warn_at=parse_percent(table.get("plan_warn_at"), "[caps] plan_warn_at")
        or DEFAULT_PLAN_WARN_AT,
    )


def parse_per_call(value: Any, where: str) -> int:
    """A per-call cap: dollars above zero."""
    pico = parse_usd(value, where)
    if pico <= 0:
        raise CCMeterError(f"{where} must be above $0; got {value!r}")
    return pico


def parse_percent(value: Any, where: str) -> float | None:
    """A plan-window utilization given as a percent (``90``, ``"90%"``), as a fraction;
    None when absent."""
    if value is None:
        return None
    try:
        number = float(str(value).strip().removesuffix("%")) if not isinstance(
            value, bool) else None
    except ValueError:
        number = None
    if number is None or not 0 < number <= 100:
        raise CCMeterError(f"{where} must be a percent above 0 and at most 100; got {value!r}")
    if number <= 1 and not str(value).strip().endswith("%"):
        raise CCMeterError(f"{where} is a percent: {value!r} reads as {number:g} %; for "
                           f"{number:.0%} write {number * 100:g} (or \"{number:g}%\" if you "
                           "mean it)")
    return number / 100


def parse_loop(value: Any) -> int | None:
    """``[caps] loop``: a whole number of repeats, 2 or more (absent: no loop cap)."""
    if value is None:
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 2:
        raise CCMeterError(f"[caps] loop must be a whole number of repeats, 2 or more; "
                           f"got {value!r}")
    return number

class Check(Record):
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
        elif cap.tier:  # this laptop's whole spend, plus the others' (from whole days)
            scope, p, s, kind = cap.scope, None, None, "calendar"
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

class CapStatus(Record):
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
        """``daily``, ``daily for project api``, ``daily per session``,
        ``team platform monthly budget``, ``group backend monthly budget``."""
        if self.scope.startswith("team:"):
            return f"team {self.scope.removeprefix('team:')} {self.name} budget"
        if self.scope.startswith("group:"):
            return f"group {self.scope.partition('/')[2]} {self.name} budget"
        if self.scope.startswith("project:"):
            return f"{self.name} cap for project {self.scope.removeprefix('project:')}"
        if self.scope.startswith("session:"):
            return f"{self.name} cap per session" if self.name != "total" else "session cap"
        return f"{self.name} cap"

def status_of(
    check: Check, spent: int, policy: Policy, resets_at: float | None = None
) -> CapStatus:
    limit = check.cap.limit_picousd
    spent += check.cap.others_picousd  # a team budget: the rest of the team's spend too
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

def most_constraining(statuses: Sequence[CapStatus]) -> CapStatus | None:
    """The reached cap that lifts last, else the fullest one."""
    reached = [s for s in statuses if s.reached]
    if reached:
        return max(reached, key=lambda s: (s.resets_at is None, s.resets_at or 0))
    return max(statuses, key=lambda s: s.fraction, default=None)
