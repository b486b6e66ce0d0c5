"""Subscription plan fees with effective dates, and a plan's fee over a report's period. Pure.

The fees are kept like prices: each plan has periods, each from a local date on. They come
from the catalog's ``plans`` list (``data/prices.json``) and from the user's config
(``[prices.plans."NAME"]``, ``monthly_usd`` and an optional ``from``), which wins. The
bundled catalog lists none today: no plan fee with a source was at hand when this was
written (see docs/reports.md), and a fee is never guessed.

A fee is per calendar month (local time). Over a period, each month it overlaps contributes
its fee times the share of the month's seconds the period covers, and the sum is rounded
half-even to the picodollar (the one rounding).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from ccmeter.config import CCMeterError
from ccmeter.money import parse_usd
from ccmeter.record import Record


class PlanFee(Record):
    """A plan's monthly fee from ``start`` (a local date) until the next period begins."""

    start: date
    monthly_picousd: int
    source: str | None = None


Fees = Mapping[str, tuple[PlanFee, ...]]


def _fee(raw: Any, where: str, *, sourced: bool = False) -> PlanFee:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a table with monthly_usd (and from)")
    unknown = set(raw) - {"monthly_usd", "from", *(("source",) if sourced else ())}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                         "known: monthly_usd, from")
    if "monthly_usd" not in raw:
        raise ValueError(f"{where}: monthly_usd is missing (the plan's fee per month)")
    try:
        start = date.fromisoformat(str(raw["from"])) if "from" in raw else date.min
    except ValueError:
        raise ValueError(f"{where}.from: expected a YYYY-MM-DD date") from None
    try:
        fee = parse_usd(raw["monthly_usd"], f"{where}.monthly_usd", what="a plan fee")
    except CCMeterError as exc:
        raise ValueError(str(exc)) from None
    source = raw.get("source")
    return PlanFee(start, fee, source if isinstance(source, str) else None)


def catalog_fees(raw: Any) -> dict[str, tuple[PlanFee, ...]]:
    """The catalog's ``plans``: ``[{"id": "max-5x", "periods": [{"from", "monthly_usd",
    "source"}, ...]}]``, periods strictly increasing; ValueError names what is wrong."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ValueError("prices: 'plans' must be a list")
    fees: dict[str, tuple[PlanFee, ...]] = {}
    for entry in raw:
        name = entry.get("id") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            raise ValueError("plans: every plan needs a string id")
        periods = entry.get("periods")
        if not isinstance(periods, list) or not periods:
            raise ValueError(f"plans[{name}].periods: expected a non-empty list")
        parsed = tuple(_fee(p, f"plans[{name}].periods[{i}]", sourced=True)
                       for i, p in enumerate(periods))
        starts = [p.start for p in parsed]
        if starts != sorted(set(starts)):
            raise ValueError(f"plans[{name}].periods: dates must be strictly increasing")
        fees[name.lower()] = parsed
    return fees


def with_overrides(fees: Fees, overrides: Any) -> dict[str, tuple[PlanFee, ...]]:
    """``fees`` with the config's ``[prices.plans]``: each named plan's fee replaces the
    catalog's from its ``from`` date on (from the start when none is given)."""
    merged = dict(fees)
    if not overrides:
        return merged
    if not isinstance(overrides, Mapping):
        raise ValueError("pricing overrides: 'plans' must be a table of plan names")
    for name, raw in overrides.items():
        fee = _fee(raw, f"prices.plans.{name}")
        kept = tuple(p for p in merged.get(str(name).lower(), ()) if p.start < fee.start)
        merged[str(name).lower()] = (*kept, fee)
    return merged


def fee_for_period(periods: tuple[PlanFee, ...], since: float, until: float) -> int:
    """Picodollars the plan costs from ``since`` to ``until`` (Unix seconds): each stretch of
    a calendar month under one fee period pays that fee times its share of the month's
    seconds; 0 for an empty period or before the plan's first fee."""
    from fractions import Fraction

    from ccmeter.periods import bucket_start, midnight, next_bucket

    starts = [midnight(p.start) if p.start > date.min else float("-inf") for p in periods]
    total = Fraction(0)
    month = bucket_start(since, "month")
    while month.timestamp() < until:
        following = next_bucket(month, "month")
        start, end = month.timestamp(), following.timestamp()
        for index, period in enumerate(periods):
            stop = starts[index + 1] if index + 1 < len(periods) else float("inf")
            overlap = min(end, until, stop) - max(start, since, starts[index])
            if overlap > 0:
                total += (Fraction(period.monthly_picousd) * Fraction(overlap)
                          / Fraction(end - start))
        month = following
    return round(total)  # a Fraction rounds half to even


def _fee_on(periods: tuple[PlanFee, ...], day: date) -> PlanFee | None:
    chosen = None
    for period in periods:
        if period.start <= day:
            chosen = period
    return chosen


def monthly_fee(periods: tuple[PlanFee, ...], at: float) -> PlanFee | None:
    """The fee in force on the local date of ``at``."""
    return _fee_on(periods, datetime.fromtimestamp(at).date())


class Comparison(Record):
    """A period's list-price equivalent against what the plan cost over it (picodollars)."""

    plan: str
    since: float
    until: float
    #: the monthly fee in force at the period's end
    monthly_fee: int | None
    fee: int
    #: None when no call of the period has a price
    list_price: int | None

    @property
    def difference(self) -> int | None:
        return None if self.list_price is None else self.list_price - self.fee

    @property
    def ratio(self) -> float | None:
        """The list-price equivalent as a multiple of the fee (None without either)."""
        if self.list_price is None or not self.fee:
            return None
        return self.list_price / self.fee


def compare(fees: Fees, plan: str, list_price: int | None, since: float,
            until: float) -> Comparison:
    """``list_price`` (a report's cost) against plan ``plan`` over ``[since, until)``."""
    periods = fees[plan.lower()]
    current = monthly_fee(periods, max(since, until - 1))
    return Comparison(plan, since, until, None if current is None else current.monthly_picousd,
                      fee_for_period(periods, since, until), list_price)
