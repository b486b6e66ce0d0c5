"""Spend reports: what ccmeter's database says, grouped and totalled. No rendering here.

Design notes (the why):
- SQLite does the heavy part: one ``GROUP BY`` over the filtered rows, keyed on the report's
  dimensions plus a coarse UTC time slot (an hour, a quarter-hour in zones with half-hour
  offsets, or a UTC day when no time dimension is asked for). Python then folds the slots
  into *local* hours, days, ISO weeks (starting Monday) and months, calling
  ``datetime.fromtimestamp`` once per distinct slot rather than once per row. That is both
  correct across daylight-saving changes and fast at a million rows.
- The UTC slot also fixes the UTC date, which is what selects a model's price period, so what
  prompt caching saved is computed with the rates that were in force, exactly (``Decimal``).
- Money stays in integer picodollars. A group with no priced call has cost ``None``
  ("unpriced"), never 0; a group with some unpriced calls carries their count.

What caching saved, per call group, with the current catalog's rates for each model, period,
speed (fast), long-context tier, US-geo and batch multipliers and the user's discount::

    saved = cache_read_tokens     x (input_rate - cache_read_rate)
          - cache_write_5m_tokens x (cache_write_5m_rate - input_rate)
          - cache_write_1h_tokens x (cache_write_1h_rate - input_rate)

i.e. what the cached tokens would have cost as plain input, minus what they cost. It can be
negative (writes that were never read back). Advisor hops are not counted. Models the catalog
does not know add nothing; a group with none it knows has ``None``.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from ccmeter import store
from ccmeter.pricing import Catalog, Rates

PICO_PER_USD = 10**12
TIME_DIMENSIONS = ("hour", "day", "week", "month")
DIMENSIONS = ("project", "session", "model", "provider", *TIME_DIMENSIONS)
TOKEN_FIELDS = (
    "input_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "output_tokens",
)
MAX_FILLED_BUCKETS = 2000
NONE_LABEL = "(none)"

_PICO_PER_TOKEN = Decimal(10**6)  # USD per MTok -> picodollars per token
_RELATIVE = re.compile(r"^(\d+)\s*(h|d|w|m|y)$")

# --- SQL -----------------------------------------------------------------------------------

_PROMPT_TOKENS_SQL = (
    "(input_tokens + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens)"
)
_FILTER_SINCE = "started_ts >= :since"
_FILTER_UNTIL = "started_ts < :until"
_FILTER_PROJECT = "project = :project"
_FILTER_MODEL = "instr(lower(COALESCE(model, '')), :model) > 0"
_FILTER_SESSION = "session_id = :session"
#: Redundant slot bounds next to the exact time filters, so the range is served by the
#: ``api_calls_rollup`` expression index (whose first column is the hourly slot).
_FILTER_SLOT_SINCE = "CAST(started_ts / {slot} AS INTEGER) >= :slot_since"
_FILTER_SLOT_UNTIL = "CAST(started_ts / {slot} AS INTEGER) <= :slot_until"
#: The one aggregate every report runs. Its GROUP BY is a prefix of the ``api_calls_rollup``
#: covering index (migration 2), so SQLite aggregates in index order without sorting a
#: million rows. ``{slot}`` is a literal (3600 normally) so the expression matches the index.
REPORT_SQL = """
SELECT CAST(started_ts / {slot} AS INTEGER) AS slot,
    project, model AS model_name, speed, service_tier, inference_geo{session},
    COUNT(*) AS calls,
    SUM(input_tokens) AS input_tokens,
    SUM(cache_write_5m_tokens) AS cache_write_5m_tokens,
    SUM(cache_write_1h_tokens) AS cache_write_1h_tokens,
    SUM(cache_read_tokens) AS cache_read_tokens,
    SUM(output_tokens) AS output_tokens,
    SUM(cost_picousd) AS cost_picousd,
    COUNT(cost_picousd) AS priced_calls,
    MIN(started_ts) AS first_ts,
    MAX(started_ts) AS last_ts
FROM api_calls
{where}
GROUP BY 1, 2, 3, 4, 5, 6{session_group}
"""

#: The cache tokens of long prompts, by how many long-context thresholds (``{buckets}``: a
#: sum of ``prompt > :lcN`` terms) the prompt is over. A separate query because only the
#: rare long prompts reach its GROUP BY; conditional sums in REPORT_SQL would cost every row.
LONG_CONTEXT_SQL = """
SELECT CAST(started_ts / {slot} AS INTEGER) AS slot,
    project, model AS model_name, speed, service_tier, inference_geo{session},
    {buckets} AS lc_bucket,
    SUM(cache_read_tokens) AS cache_read_tokens,
    SUM(cache_write_5m_tokens) AS cache_write_5m_tokens,
    SUM(cache_write_1h_tokens) AS cache_write_1h_tokens
FROM api_calls
{where}
GROUP BY 1, 2, 3, 4, 5, 6, 7{session_group}
"""
_OVER_THRESHOLD = "(" + _PROMPT_TOKENS_SQL + " > :lc{i})"

SESSIONS_SQL = """
SELECT session_id, model,
    COUNT(*) AS calls,
    SUM(cost_picousd) AS cost_picousd,
    COUNT(cost_picousd) AS priced_calls,
    SUM(input_tokens + cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens)
        AS prompt_tokens,
    SUM(output_tokens) AS output_tokens,
    SUM(call_kind = 'subagent') AS subagent_calls,
    MIN(started_ts) AS first_ts,
    MAX(started_ts) AS last_ts,
    MAX(project) AS project
FROM api_calls
{where}
GROUP BY session_id, model
"""

SESSION_PREFIX_SQL = """
SELECT session_id FROM api_calls
WHERE session_id >= :low AND session_id < :high
GROUP BY session_id
LIMIT :limit
"""

SESSION_CALLS_SQL = """
SELECT call_uid, started_ts, ttfb_ms, duration_ms, project, agent_id, parent_agent_id,
    call_kind, model, requested_model, status, http_status, stop_reason, error_type,
    input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
    output_tokens, cost_picousd, pricing_note
FROM api_calls
WHERE session_id = :session
ORDER BY started_ts, call_uid
"""

SPEND_SINCE_SQL = """
SELECT COUNT(*) AS calls, SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced_calls
FROM api_calls WHERE started_ts >= :since
"""

SESSION_SPEND_SQL = """
SELECT COUNT(*) AS calls, SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced_calls,
    MAX(project) AS project
FROM api_calls WHERE session_id = :session
"""

#: Served by the partial index ``api_calls_plan`` (migration 2): instant at any size.
LATEST_PLAN_SQL = """
SELECT started_ts, plan_status, plan_5h_utilization, plan_5h_reset, plan_7d_utilization,
    plan_7d_reset, plan_binding_window, plan_overage_status
FROM api_calls
WHERE plan_5h_utilization IS NOT NULL
ORDER BY started_ts DESC
LIMIT 1
"""

RECENT_BY_AGENT_SQL = """
SELECT session_id, agent_id, call_kind, project,
    COUNT(*) AS calls, SUM(cost_picousd) AS cost_picousd, COUNT(cost_picousd) AS priced_calls,
    MIN(started_ts) AS first_ts, MAX(started_ts) AS last_ts
FROM api_calls
WHERE session_id IN (
    SELECT DISTINCT session_id FROM api_calls
    WHERE started_ts >= :active_since AND session_id IS NOT NULL
)
GROUP BY session_id, agent_id, call_kind
"""

BURN_SQL = """
SELECT project, SUM(cost_picousd) AS cost_picousd
FROM api_calls WHERE started_ts >= :since
GROUP BY project
"""


# --- time ----------------------------------------------------------------------------------


def parse_when(text: str, *, now: float | None = None, end: bool = False) -> float:
    """Unix seconds for a ``--since`` / ``--until`` value.

    Accepts ``2026-11-01`` (local midnight; as an ``--until`` (``end=True``) the end of that
    day, so the day is included), ``2026-11-01T14:30`` (local unless it carries an offset),
    relative ``12h``, ``7d``, ``2w``, ``3m`` (calendar months), ``1y`` back from now, and
    ``today``, ``yesterday``, ``week`` (this Monday) and ``month`` (the 1st), local time.
    Raises ValueError with the accepted forms.
    """
    now = time.time() if now is None else now
    value = text.strip().lower()
    today = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    named = {
        "now": None,
        "today": today,
        "yesterday": today - timedelta(days=1),
        "week": today - timedelta(days=today.weekday()),
        "month": today.replace(day=1),
    }
    if value in named:
        moment = named[value]
        if moment is None:
            return now
        if end and value in ("today", "yesterday"):
            moment += timedelta(days=1)
        return moment.timestamp()
    match = _RELATIVE.match(value)
    if match:
        count, unit = int(match.group(1)), match.group(2)
        if unit in ("h", "d", "w"):
            hours = {"h": 1, "d": 24, "w": 24 * 7}[unit]
            return now - count * hours * 3600
        months = count * (12 if unit == "y" else 1)
        return add_months(datetime.fromtimestamp(now), -months).timestamp()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day)
            if end:
                moment += timedelta(days=1)
            return moment.timestamp()
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a time; use a date (2026-11-01), a date and time "
            "(2026-11-01T14:30), a relative time (12h, 7d, 2w, 3m) or today/yesterday/week/month"
        ) from None
    return moment.timestamp()


def add_months(moment: datetime, months: int) -> datetime:
    """The same local wall time ``months`` calendar months away (day clamped to the month)."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
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
    is built on it); else a quarter-hour (India, Nepal, ...: still correct, but the report
    then sorts instead of streaming the index).
    """
    offsets = (time.timezone, time.altzone)
    if all(offset % 3600 == 0 for offset in offsets):
        return 3600
    if all(offset % 900 == 0 for offset in offsets):
        return 900
    return 60


def local_midnight(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return bucket_start(now, "day").timestamp()


def week_start(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return bucket_start(now, "week").timestamp()


# --- pricing helpers -----------------------------------------------------------------------


def current_catalog(cfg: Mapping[str, Any]) -> Catalog:
    """The catalog the proxy prices with: the bundled one plus the config's ``[prices]``.

    Raises ValueError when the overrides are invalid.
    """
    catalog = Catalog.bundled()
    overrides = cfg.get("prices")
    if overrides:
        catalog = catalog.with_overrides(overrides)
    return catalog


@dataclass(frozen=True)
class _SavingRates:
    """Picodollars saved per cache-read token and premium per cache-write token."""

    read_saving: Decimal
    write_5m_premium: Decimal
    write_1h_premium: Decimal

    def saved(self, read: int, write_5m: int, write_1h: int) -> Decimal:
        return (read * self.read_saving - write_5m * self.write_5m_premium
                - write_1h * self.write_1h_premium)


@dataclass(frozen=True)
class _SavingPlan:
    """Rates for one (model, UTC day, speed, tier, geo): base, and long-context if any."""

    base: _SavingRates
    long_context: _SavingRates | None = None
    threshold_index: int = -1


class SavingsCalculator:
    """What prompt caching saved (see the module docstring), exactly, with ``catalog``."""

    def __init__(self, catalog: Catalog, thresholds: Sequence[int]) -> None:
        self.catalog = catalog
        self.thresholds = tuple(thresholds)
        self._cache: dict[tuple[Any, ...], _SavingPlan | None] = {}

    def plan(self, model: str | None, utc_day: date, speed: str | None, tier: str | None,
             geo: str | None) -> _SavingPlan | None:
        key = (model, utc_day, speed, tier, geo)
        if key not in self._cache:
            self._cache[key] = self._compute(*key)
        return self._cache[key]

    def _compute(self, model: str | None, utc_day: date, speed: str | None, tier: str | None,
                 geo: str | None) -> _SavingPlan | None:
        catalog = self.catalog
        resolved = catalog.resolve(model) if model else None
        if resolved is None:
            return None
        entry = catalog.model(resolved)
        period = entry.period_at(utc_day)
        with localcontext() as ctx:
            ctx.prec = 60
            factor = Decimal(1)
            if geo == "us" and entry.geo_us_multiplier_applies:
                factor *= catalog.geo_us_multiplier
            if tier == "batch":
                factor *= catalog.batch_multiplier
            if catalog.discount_percent:
                factor *= 1 - catalog.discount_percent / 100
            scale = _PICO_PER_TOKEN * factor

            def per_token(rates: Rates) -> _SavingRates:
                return _SavingRates(
                    read_saving=(rates.input - rates.cache_read) * scale,
                    write_5m_premium=(rates.cache_write_5m - rates.input) * scale,
                    write_1h_premium=(rates.cache_write_1h - rates.input) * scale,
                )

            if speed == "fast" and period.fast is not None:
                # Fast mode never takes a long-context tier (as in Catalog.price).
                return _SavingPlan(per_token(period.rates.at_fast(period.fast)))
            lc = period.long_context
            if lc is not None and lc.threshold_tokens in self.thresholds:
                return _SavingPlan(per_token(period.rates), per_token(lc.rates),
                                   self.thresholds.index(lc.threshold_tokens))
            return _SavingPlan(per_token(period.rates))

    def saved(self, row: Mapping[str, Any], utc_day: date,
              long_rows: Sequence[Mapping[str, Any]] = ()) -> Decimal | None:
        """Exact picodollars caching saved for one aggregate row; None if unpriced.

        ``long_rows`` are the LONG_CONTEXT_SQL rows of the same group.
        """
        plan = self.plan(row["model_name"], utc_day, row["speed"], row["service_tier"],
                         row["inference_geo"])
        if plan is None:
            return None
        read = int(row["cache_read_tokens"] or 0)
        write_5m = int(row["cache_write_5m_tokens"] or 0)
        write_1h = int(row["cache_write_1h_tokens"] or 0)
        with localcontext() as ctx:
            ctx.prec = 60
            if plan.long_context is None:
                return plan.base.saved(read, write_5m, write_1h)
            over = [r for r in long_rows if int(r["lc_bucket"]) > plan.threshold_index]
            lc_read = sum(int(r["cache_read_tokens"] or 0) for r in over)
            lc_5m = sum(int(r["cache_write_5m_tokens"] or 0) for r in over)
            lc_1h = sum(int(r["cache_write_1h_tokens"] or 0) for r in over)
            return (plan.base.saved(read - lc_read, write_5m - lc_5m, write_1h - lc_1h)
                    + plan.long_context.saved(lc_read, lc_5m, lc_1h))


def long_context_thresholds(catalog: Catalog) -> list[int]:
    """Every distinct long-context threshold in the catalog, ascending."""
    found = set()
    for row in catalog.models(date.min):
        key = catalog.resolve(row.id)
        if key is None:
            continue
        for period in catalog.model(key).periods:
            if period.long_context is not None:
                found.add(period.long_context.threshold_tokens)
    return sorted(found)


def _to_pico(value: Decimal | None) -> int | None:
    if value is None:
        return None
    return int(value.to_integral_value(ROUND_HALF_EVEN))


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    since: float | None = None
    until: float | None = None
    project: str | None = None
    model: str | None = None
    session: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        for name, clause in (
            ("since", _FILTER_SINCE),
            ("until", _FILTER_UNTIL),
            ("project", _FILTER_PROJECT),
            ("model", _FILTER_MODEL),
            ("session", _FILTER_SESSION),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            clauses.append(clause)
            params[name] = value.lower() if name == "model" else value
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass
class Group:
    """The totals of one report row (or of the whole report)."""

    calls: int = 0
    input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    priced_calls: int = 0
    cost_sum: int = 0
    saved: Decimal | None = None
    first_ts: float | None = None
    last_ts: float | None = None
    project: str | None = None

    def add(self, row: Mapping[str, Any], saved: Decimal | None) -> None:
        self.calls += int(row["calls"])
        for name in TOKEN_FIELDS:
            setattr(self, name, getattr(self, name) + int(row[name] or 0))
        self.priced_calls += int(row["priced_calls"])
        self.cost_sum += int(row["cost_picousd"] or 0)
        if saved is not None:
            self.saved = saved if self.saved is None else self.saved + saved
        first, last = row.get("first_ts"), row.get("last_ts")
        if first is not None and (self.first_ts is None or first < self.first_ts):
            self.first_ts = first
        if last is not None and (self.last_ts is None or last > self.last_ts):
            self.last_ts = last
        if row.get("project") and not self.project:
            self.project = row["project"]

    def merge(self, other: Group) -> None:
        self.calls += other.calls
        for name in TOKEN_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.priced_calls += other.priced_calls
        self.cost_sum += other.cost_sum
        if other.saved is not None:
            self.saved = other.saved if self.saved is None else self.saved + other.saved
        for ts in (other.first_ts, other.last_ts):
            if ts is None:
                continue
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    @property
    def cost_picousd(self) -> int | None:
        """Sum of the priced calls; None when the group has calls and none is priced.

        A group without calls (an idle bucket, an empty database) costs 0, not "unpriced".
        """
        return self.cost_sum if self.priced_calls or not self.calls else None

    @property
    def saved_picousd(self) -> int | None:
        """What caching saved; 0 without calls, None when no call's model has a price."""
        if self.saved is None:
            return None if self.calls else 0
        return _to_pico(self.saved)

    @property
    def unpriced_calls(self) -> int:
        return self.calls - self.priced_calls

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            **{name: getattr(self, name) for name in TOKEN_FIELDS},
            "cache_write_tokens": self.cache_write_5m_tokens + self.cache_write_1h_tokens,
            "cost": self.cost_picousd,
            "unpriced_calls": self.unpriced_calls,
            "cache_savings": self.saved_picousd,
            "first_call": self.first_ts,
            "last_call": self.last_ts,
        }


@dataclass
class Report:
    """Grouped rows (dicts ready for :func:`ccmeter.render.emit`) and their totals."""

    dimensions: tuple[str, ...]
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    filters: Filters
    catalog_version: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_time(self) -> bool:
        return any(d in TIME_DIMENSIONS for d in self.dimensions)


def validate_dimensions(dimensions: Sequence[str]) -> tuple[str, ...]:
    dims = tuple(dict.fromkeys(d.strip().lower() for d in dimensions))
    if not dims:
        raise ValueError("give at least one --by")
    if len(dims) > 2:
        raise ValueError("at most two --by groupings, e.g. --by model --by day")
    for dim in dims:
        if dim not in DIMENSIONS:
            raise ValueError(f"cannot group by {dim!r}; choose from {', '.join(DIMENSIONS)}")
    if sum(d in TIME_DIMENSIONS for d in dims) > 1:
        raise ValueError("use one time grouping (hour, day, week or month) at a time")
    return dims


def build_report(
    db: Any,
    dimensions: Sequence[str],
    filters: Filters,
    catalog: Catalog,
    *,
    fill_gaps: bool = True,
) -> Report:
    """Group the calls matching ``filters`` by one or two ``dimensions``."""
    dims = validate_dimensions(dimensions)
    time_dim = next((d for d in dims if d in TIME_DIMENSIONS), None)
    slot = slot_seconds()
    thresholds = long_context_thresholds(catalog)
    sql, params = report_sql(dims, filters, slot)
    raw = store.query(db, sql, params)
    long_rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    if thresholds:
        for row in store.query(db, *long_context_sql(dims, filters, thresholds, slot)):
            long_rows.setdefault(_group_key(row), []).append(row)

    savings = SavingsCalculator(catalog, thresholds)
    labels: dict[int, str] = {}
    days: dict[int, date] = {}
    groups: dict[tuple[Any, ...], Group] = {}
    for row in raw:
        slot_start = int(row["slot"]) * slot
        utc_day = days.get(slot_start)
        if utc_day is None:
            utc_day = days[slot_start] = datetime.fromtimestamp(slot_start, UTC).date()
        key_parts: list[Any] = []
        for dim in dims:
            if dim in TIME_DIMENSIONS:
                label = labels.get(slot_start)
                if label is None:
                    label = labels[slot_start] = bucket_label(bucket_start(slot_start, dim), dim)
                key_parts.append(label)
            else:
                key_parts.append(row[_ROW_FIELD[dim]])
        group = groups.get(tuple(key_parts))
        if group is None:
            group = groups[tuple(key_parts)] = Group()
        group.add(row, savings.saved(row, utc_day, long_rows.get(_group_key(row), ())))

    if time_dim is not None and len(dims) == 1 and fill_gaps:
        _fill_gaps(groups, time_dim, filters, raw)

    total = Group()
    for group in groups.values():
        total.merge(group)
    rows = _ordered_rows(dims, groups)
    if time_dim is not None:
        top = max((r["cost"] or 0 for r in rows), default=0)
        for row in rows:
            row["bar"] = (row["cost"] or 0) / top if top else 0.0
    return Report(dims, rows, total.as_dict(), filters, catalog.version)


_ROW_FIELD = {"project": "project", "session": "session_id", "model": "model_name",
              "provider": "provider"}


def _group_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (row["slot"], row["project"], row["model_name"], row["speed"], row["service_tier"],
            row["inference_geo"], row.get("session_id"), row.get("provider"))


def _where(filters: Filters, slot: int) -> tuple[str, dict[str, Any]]:
    where, params = filters.where()
    extra = []
    if filters.since is not None:
        extra.append(_FILTER_SLOT_SINCE.format(slot=int(slot)))
        params["slot_since"] = int(filters.since // slot)
    if filters.until is not None:
        extra.append(_FILTER_SLOT_UNTIL.format(slot=int(slot)))
        params["slot_until"] = int(filters.until // slot)
    if extra:
        where = (where + " AND " if where else "WHERE ") + " AND ".join(extra)
    return where, params


def _optional_columns(dims: Sequence[str]) -> tuple[str, str]:
    """Columns grouped on only when asked for (``session_id``, ``provider``), as the SELECT
    and GROUP BY additions: other reports keep the rollup index's exact GROUP BY."""
    names = [c for d, c in (("session", "session_id"), ("provider", "provider")) if d in dims]
    return "".join(f",\n    {c}" for c in names), "".join(f", {c}" for c in names)


def report_sql(dims: Sequence[str], filters: Filters, slot: int) -> tuple[str, dict[str, Any]]:
    """The aggregate query (and its parameters) for a report."""
    where, params = _where(filters, slot)
    columns, group = _optional_columns(dims)
    sql = REPORT_SQL.format(slot=int(slot), session=columns, where=where, session_group=group)
    return sql, params


def long_context_sql(
    dims: Sequence[str], filters: Filters, thresholds: Sequence[int], slot: int
) -> tuple[str, dict[str, Any]]:
    """The long-prompt query (and its parameters) matching :func:`report_sql`'s groups."""
    where, params = _where(filters, slot)
    terms = []
    for index, threshold in enumerate(thresholds):
        params[f"lc{index}"] = threshold
        terms.append(_OVER_THRESHOLD.format(i=index))
    where = (where + " AND " if where else "WHERE ") + terms[0]
    columns, group = _optional_columns(dims)
    sql = LONG_CONTEXT_SQL.format(slot=int(slot), session=columns, buckets=" + ".join(terms),
                                  where=where, session_group=group)
    return sql, params


def _fill_gaps(
    groups: dict[tuple[Any, ...], Group], unit: str, filters: Filters, raw: Sequence[Mapping]
) -> None:
    """Add empty rows for buckets without calls, so a time series shows its idle stretches.

    From ``--since`` (else the first call) to ``--until`` (else now); skipped when that would
    be more than ``MAX_FILLED_BUCKETS`` rows.
    """
    starts = [r["first_ts"] for r in raw]
    ends = [r["last_ts"] for r in raw]
    since = filters.since if filters.since is not None else min(starts, default=None)
    if since is None:
        return
    until = filters.until
    if until is None:
        until = max(time.time(), max(ends, default=since) + 1)
    labels: list[str] = []
    current = bucket_start(since, unit)
    while current.timestamp() < until:
        if len(labels) >= MAX_FILLED_BUCKETS:
            return
        labels.append(bucket_label(current, unit))
        current = next_bucket(current, unit)
    for label in labels:
        groups.setdefault((label,), Group())


def _ordered_rows(dims: Sequence[str], groups: Mapping[tuple[Any, ...], Group]) -> list[dict]:
    """Time buckets in order; other dimensions by cost (then calls), largest first."""
    rank: list[dict[Any, Any]] = []
    for index, dim in enumerate(dims):
        if dim in TIME_DIMENSIONS:
            rank.append({})
            continue
        weight: dict[Any, tuple[int, int]] = {}
        for key, group in groups.items():
            cost, calls = weight.get(key[index], (0, 0))
            weight[key[index]] = (cost + group.cost_sum, calls + group.calls)
        ordered = sorted(weight, key=lambda v: (-weight[v][0], -weight[v][1], str(v)))
        rank.append({value: position for position, value in enumerate(ordered)})

    def sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            key[i] if dims[i] in TIME_DIMENSIONS else rank[i][key[i]] for i in range(len(dims))
        )

    rows = []
    for key in sorted(groups, key=sort_key):
        group = groups[key]
        row: dict[str, Any] = {}
        for dim, value in zip(dims, key, strict=True):
            row[dim] = value
        row.update(group.as_dict())
        if "session" in dims and "project" not in dims:
            row["project"] = group.project
        rows.append(row)
    return rows


# --- sessions ------------------------------------------------------------------------------


@dataclass
class SessionSummary:
    session_id: str | None
    project: str | None
    first_ts: float
    last_ts: float
    calls: int
    cost_picousd: int | None
    unpriced_calls: int
    subagent_calls: int
    models: dict[str, int]

    def model_mix(self) -> str:
        """``opus-4-8 x12, haiku-4-5 x3``: models by calls, 'claude-' dropped."""
        parts = sorted(self.models.items(), key=lambda item: (-item[1], item[0]))
        text = ", ".join(f"{short_model(name)} ×{count}" for name, count in parts[:3])
        return text + (f", +{len(parts) - 3} more" if len(parts) > 3 else "")

    def as_row(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "started": self.first_ts,
            "last_call": self.last_ts,
            "project": self.project,
            "models": self.model_mix(),
            "model_calls": dict(self.models),
            "calls": self.calls,
            "subagent_calls": self.subagent_calls,
            "cost": self.cost_picousd,
            "unpriced_calls": self.unpriced_calls,
        }


def short_model(name: str | None) -> str:
    if not name:
        return "?"
    return name.removeprefix("claude-")


def list_sessions(db: Any, filters: Filters, limit: int = 20) -> list[SessionSummary]:
    """Sessions with calls matching ``filters``, most recently active first."""
    where, params = filters.where()
    rows = store.query(db, SESSIONS_SQL.format(where=where), params)
    sessions: dict[str | None, SessionSummary] = {}
    costs: dict[str | None, int] = {}
    priced: dict[str | None, int] = {}
    for row in rows:
        sid = row["session_id"]
        summary = sessions.get(sid)
        if summary is None:
            summary = sessions[sid] = SessionSummary(
                sid, row["project"], row["first_ts"], row["last_ts"], 0, None, 0, 0, {}
            )
        summary.first_ts = min(summary.first_ts, row["first_ts"])
        summary.last_ts = max(summary.last_ts, row["last_ts"])
        summary.project = summary.project or row["project"]
        summary.calls += row["calls"]
        summary.subagent_calls += int(row["subagent_calls"] or 0)
        summary.unpriced_calls += row["calls"] - row["priced_calls"]
        name = row["model"] or "?"
        summary.models[name] = summary.models.get(name, 0) + row["calls"]
        costs[sid] = costs.get(sid, 0) + int(row["cost_picousd"] or 0)
        priced[sid] = priced.get(sid, 0) + row["priced_calls"]
    for sid, summary in sessions.items():
        summary.cost_picousd = costs[sid] if priced[sid] else None
    ordered = sorted(sessions.values(), key=lambda s: -s.last_ts)
    return ordered[:limit] if limit else ordered


def resolve_session(db: Any, prefix: str) -> str:
    """The one session id starting with ``prefix``; ValueError lists candidates otherwise."""
    prefix = prefix.strip()
    if not prefix:
        raise ValueError("give a session id or the start of one (see `ccmeter sessions`)")
    found = [
        row["session_id"]
        for row in store.query(
            db, SESSION_PREFIX_SQL, {"low": prefix, "high": prefix + "\U0010ffff", "limit": 11}
        )
    ]
    if prefix in found:
        return prefix
    if not found:
        raise ValueError(f"no session starts with {prefix!r}; list them with `ccmeter sessions`")
    if len(found) > 1:
        shown = ", ".join(found[:10]) + (", …" if len(found) > 10 else "")
        raise ValueError(f"{prefix!r} matches {len(found)} sessions: {shown}; "
                         "give more characters")
    return found[0]


@dataclass
class SessionDetail:
    session_id: str
    calls: list[dict[str, Any]]
    agents: list[dict[str, Any]]
    totals: dict[str, Any]


def session_detail(db: Any, session_id: str) -> SessionDetail:
    """Every call of a session in order, marked by agent, with per-agent subtotals."""
    rows = store.query(db, SESSION_CALLS_SQL, {"session": session_id})
    calls: list[dict[str, Any]] = []
    agents: dict[str | None, Group] = {}
    agent_meta: dict[str | None, dict[str, Any]] = {}
    total = Group()
    for row in rows:
        agent = row["agent_id"] if row["call_kind"] == "subagent" or row["agent_id"] else None
        kind = row["call_kind"] or "main"
        label = "main" if agent is None and kind != "auxiliary" else (
            "auxiliary" if agent is None else f"└ {short_agent(agent)}")
        calls.append({
            "time": row["started_ts"],
            "call_uid": row["call_uid"],
            "agent": label,
            "agent_id": row["agent_id"],
            "parent_agent_id": row["parent_agent_id"],
            "call_kind": kind,
            "model": row["model"],
            "status": row["status"] + (f" {row['http_status']}" if row["status"] ==
                                       "upstream_error" and row["http_status"] else ""),
            **{name: row[name] for name in TOKEN_FIELDS},
            "cache_write_tokens": row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"],
            "cost": row["cost_picousd"],
            "ttfb_ms": None if row["ttfb_ms"] is None else round(row["ttfb_ms"]),
            "duration_ms": None if row["duration_ms"] is None else round(row["duration_ms"]),
        })
        single = {
            "calls": 1, **{name: row[name] for name in TOKEN_FIELDS},
            "priced_calls": 0 if row["cost_picousd"] is None else 1,
            "cost_picousd": row["cost_picousd"], "first_ts": row["started_ts"],
            "last_ts": row["started_ts"], "project": row["project"],
        }
        agent_key = agent if agent is not None else ("(auxiliary)" if kind == "auxiliary"
                                                     else None)
        agents.setdefault(agent_key, Group()).add(single, None)
        agent_meta.setdefault(agent_key, {"parent": row["parent_agent_id"], "kind": kind})
        total.add(single, None)
    agent_rows = []

    def agent_order(key: str | None) -> tuple[int, float]:
        rank = 0 if key is None else (1 if key == "(auxiliary)" else 2)
        return rank, agents[key].first_ts or 0.0

    for key in sorted(agents, key=agent_order):
        group = agents[key]
        agent_rows.append({
            "agent": "main" if key is None else key,
            "kind": agent_meta[key]["kind"],
            "parent_agent_id": agent_meta[key]["parent"],
            **group.as_dict(),
        })
    totals = total.as_dict()
    totals["project"] = total.project
    return SessionDetail(session_id, calls, agent_rows, totals)


def short_id(value: str | None, length: int = 8) -> str:
    return "" if value is None else value[:length]


def short_agent(value: str | None) -> str:
    """An agent id short enough for a table column, still telling agents apart."""
    if value is None:
        return ""
    return value if len(value) <= 16 else value[:12] + "…"


# --- live figures (watch, statusline) ------------------------------------------------------


def spend_since(db: Any, since: float) -> tuple[int | None, int]:
    """(picodollars of priced calls since ``since`` or None if none priced, unpriced calls)."""
    row = store.query(db, SPEND_SINCE_SQL, {"since": since})[0]
    cost = int(row["cost_picousd"] or 0) if row["priced_calls"] else None
    return cost, int(row["calls"] or 0) - int(row["priced_calls"] or 0)


def session_spend(db: Any, session_id: str) -> dict[str, Any]:
    row = store.query(db, SESSION_SPEND_SQL, {"session": session_id})[0]
    return {
        "calls": int(row["calls"] or 0),
        "cost": int(row["cost_picousd"] or 0) if row["priced_calls"] else None,
        "unpriced_calls": int(row["calls"] or 0) - int(row["priced_calls"] or 0),
        "project": row["project"],
    }


def latest_plan(db: Any) -> dict[str, Any] | None:
    """The most recent subscription-plan utilization the API reported, if any."""
    rows = store.query(db, LATEST_PLAN_SQL)
    return rows[0] if rows else None


def burn_by_project(db: Any, since: float) -> dict[str | None, int]:
    return {
        row["project"]: int(row["cost_picousd"] or 0)
        for row in store.query(db, BURN_SQL, {"since": since})
    }


def active_agents(db: Any, active_since: float) -> list[dict[str, Any]]:
    """Per (session, agent) totals for sessions with a call since ``active_since``."""
    return store.query(db, RECENT_BY_AGENT_SQL, {"active_since": active_since})
