"""What a price is made of: a model's rates per million tokens, its long-context and fast
rows, its effective-dated periods, and the price of one answer. Records only (pure, exact
``Decimal``); :mod:`ccmeter.pricing` reads the catalog into them and prices calls with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING

from ccmeter.money import PICO_PER_USD
from ccmeter.record import Record

if TYPE_CHECKING:  # the reading commands price nothing: no need for usage's dataclasses
    from ccmeter.usage import TokenCounts

RATE_NAMES = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
MILLION = Decimal(1_000_000)


class Price(Record):
    """The cost of one answer, or why it has none.

    ``cost_usd`` is None for an unknown model, never zero: an unpriced call must stay visible
    as unpriced in reports and must not silently pass a spending cap.
    """

    cost_usd: Decimal | None
    catalog_version: str
    model_key: str | None
    note: str | None

    @property
    def cost_picousd(self) -> int | None:
        """The cost as an integer number of picodollars (exact for catalog rates)."""
        if self.cost_usd is None:
            return None
        return int((self.cost_usd * PICO_PER_USD).to_integral_value(ROUND_HALF_EVEN))



class Rates(Record):
    """USD per million tokens for the five billed token categories."""

    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal

    def cost(self, tokens: TokenCounts) -> Decimal:
        """USD for these token counts at these rates (exact under the caller's context)."""
        total = (
            tokens.input_tokens * self.input
            + tokens.cache_write_5m_tokens * self.cache_write_5m
            + tokens.cache_write_1h_tokens * self.cache_write_1h
            + tokens.cache_read_tokens * self.cache_read
            + tokens.output_tokens * self.output
        )
        return total / MILLION

    def at_fast(self, fast: FastRates) -> Rates:
        """Fast-mode rates: the cache multipliers of this row, applied to the fast input rate.

        Scaling by ``fast.input / input`` keeps each model's own cache ratios (0.025x, 0.05x,
        0.1x reads) instead of assuming the common 1.25x / 2x / 0.1x.
        """
        if self.input == 0:
            return self._replace(input=fast.input, output=fast.output)
        return Rates(
            input=fast.input,
            cache_write_5m=self.cache_write_5m * fast.input / self.input,
            cache_write_1h=self.cache_write_1h * fast.input / self.input,
            cache_read=self.cache_read * fast.input / self.input,
            output=fast.output,
        )


class LongContext(Record):
    """A prompt-length tier: above ``threshold_tokens`` the whole request takes ``rates``."""

    threshold_tokens: int
    rates: Rates

    def applies(self, tokens: TokenCounts) -> bool:
        # Strictly greater: a prompt of exactly the threshold still pays the base row.
        return tokens.prompt_tokens > self.threshold_tokens


class FastRates(Record):
    """Input and output USD per million tokens in fast mode."""

    input: Decimal
    output: Decimal


class Period(Record):
    """The rates of one model from ``start`` (a UTC date) until the next period begins."""

    start: date
    rates: Rates
    long_context: LongContext | None
    fast: FastRates | None


class Model(Record):
    """One catalog model: the ids it is known by and its rate periods, oldest first."""

    id: str
    name: str
    aliases: tuple[str, ...]
    bedrock_ids: tuple[str, ...]
    vertex_ids: tuple[str, ...]
    geo_us_multiplier_applies: bool
    periods: tuple[Period, ...]
    note: str | None = None
    cloud_regional_premium_applies: bool = False

    def period_at(self, day: date) -> Period:
        """The period in force on ``day``.

        A day before the first period still gets the first one: the first ``from`` is a
        release or snapshot date, and a skewed clock should not turn a known model unpriced.
        """
        chosen = self.periods[0]
        for period in self.periods:
            if period.start <= day:
                chosen = period
        return chosen

    def known_ids(self) -> Iterator[str]:
        yield self.id
        yield from self.aliases
        yield from self.bedrock_ids
        yield from self.vertex_ids


class ModelRow(Record):
    """A model as a ``ccmeter prices`` table shows it: its ids and the rates in force."""

    id: str
    name: str
    aliases: tuple[str, ...]
    since: date
    rates: Rates
    long_context: LongContext | None
    fast: FastRates | None
    geo_us_multiplier_applies: bool
    note: str | None
