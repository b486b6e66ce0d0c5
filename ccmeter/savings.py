"""What prompt caching saved, exactly, with the current catalog's rates. No I/O.

Per call group, with the rates for each model, price period (chosen by the UTC date), speed
(fast), long-context tier, US-geo and batch multipliers and the user's discount::

    saved = cache_read_tokens     x (input_rate - cache_read_rate)
          - cache_write_5m_tokens x (cache_write_5m_rate - input_rate)
          - cache_write_1h_tokens x (cache_write_1h_rate - input_rate)

i.e. what the cached tokens would have cost as plain input, minus what they cost. It can be
negative (writes that were never read back). Advisor hops are not counted. Models the catalog
does not know add nothing; a group with none it knows has ``None``. The spend report
(:mod:`ccmeter.reports`) feeds it its aggregate rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any

from ccmeter.pricing import Catalog, Period, Rates
from ccmeter.record import Record

_PICO_PER_TOKEN = Decimal(10**6)  # USD per MTok -> picodollars per token
#: The arithmetic of a saving: 60 digits, far beyond any sum of tokens times a rate.
_EXACT = Context(prec=60)


class _SavingRates(Record):
    """Picodollars saved per cache-read token and premium per cache-write token."""

    read_saving: Decimal
    write_5m_premium: Decimal
    write_1h_premium: Decimal

    def saved(self, read: int, write_5m: int, write_1h: int) -> Decimal:
        return (read * self.read_saving - write_5m * self.write_5m_premium
                - write_1h * self.write_1h_premium)


class _SavingPlan(Record):
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
        return self.saved_tokens(row["model_name"], utc_day, row["speed"],
                                 row["service_tier"], row["inference_geo"],
                                 int(row["cache_read_tokens"] or 0),
                                 int(row["cache_write_5m_tokens"] or 0),
                                 int(row["cache_write_1h_tokens"] or 0), long_rows)

    def saved_tokens(self, model: str | None, utc_day: date, speed: str | None,
                     tier: str | None, geo: str | None, read: int, write_5m: int,
                     write_1h: int, long_rows: Sequence[Mapping[str, Any]] = ()
                     ) -> Decimal | None:
        """:meth:`saved` for an aggregate row given as its fields."""
        key = (model, utc_day, speed, tier, geo)
        try:
            plan = self._cache[key]
        except KeyError:
            plan = self._cache[key] = self._compute(*key)
        if plan is None:
            return None
        if plan.long_context is None:
            with localcontext(_EXACT):
                return plan.base.saved(read, write_5m, write_1h)
        over = [r for r in long_rows if int(r["lc_bucket"]) > plan.threshold_index]
        lc_read = sum(int(r["cache_read_tokens"] or 0) for r in over)
        lc_5m = sum(int(r["cache_write_5m_tokens"] or 0) for r in over)
        lc_1h = sum(int(r["cache_write_1h_tokens"] or 0) for r in over)
        with localcontext(_EXACT):
            return (plan.base.saved(read - lc_read, write_5m - lc_5m, write_1h - lc_1h)
                    + plan.long_context.saved(lc_read, lc_5m, lc_1h))


def _periods(catalog: Catalog) -> list[Period]:
    """Every rate period of every model in the catalog."""
    out: list[Period] = []
    for row in catalog.models(date.min):
        key = catalog.resolve(row.id)
        if key is not None:
            out.extend(catalog.model(key).periods)
    return out


def long_context_thresholds(catalog: Catalog) -> list[int]:
    """Every distinct long-context threshold in the catalog, ascending."""
    return sorted({period.long_context.threshold_tokens for period in _periods(catalog)
                   if period.long_context is not None})


def price_change_days(catalog: Catalog) -> list[date]:
    """Every UTC day on which a model's rates change (a period starts), ascending: what
    caching saved is computed per price period, so sums must not cross these days."""
    return sorted({period.start for period in _periods(catalog)})


def to_pico(value: Decimal | None) -> int | None:
    """Whole picodollars (half to even) of an exact saving; None stays None."""
    if value is None:
        return None
    return int(value.to_integral_value(ROUND_HALF_EVEN))
