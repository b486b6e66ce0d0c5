"""Money as every command reads and writes it: exact integer picodollars <-> dollar text.

Pure (no I/O). ccmeter keeps money in integer picodollars (10**-12 USD) end to end; this
module is the one place that turns text into picodollars and picodollars into text:

- :func:`parse_usd`: what a user types or a config holds (``"20"``, ``"$0.50"``, ``7.5``)
  -> exact picodollars, or a one-line :class:`~ccmeter.config.CCMeterError`.
- :func:`usd_text`: the shortest exact text for a config file (``"20"``, ``"0.005"``).
- :func:`usd_string`: the full-precision machine string of JSON/CSV and the team share
  (``"0.093736500000"``, always 12 decimal places).
- :func:`format_usd` / :func:`usd_places`: dollars for people (cents from $1, four decimals
  below, one precision per table), ``unpriced`` for an unknown cost.
- :func:`floor_usd` / :func:`exact_places`: a cap or a spend beside it, never shown above
  what it is.
- :func:`cap_places`, :func:`cap_usd`, :func:`spend_usd`: the one rule for caps and spend
  against them, in ``caps set``, ``caps``, ``watch``, the status line, the run summary and
  the refusal message alike: a cap at the decimals it was set with (at least 2: ``$0.50``,
  ``$20.00``, ``$0.005``); a spend at the same decimals, floored (so ``$1.29825`` is
  ``$1.29``, never ``$1.30`` beside a cap it has not reached), with more decimals only
  where a spend past the cap would otherwise look equal to it.

People's amounts elsewhere (report tables) are rounded half-even, one precision per table.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from ccmeter.config import CCMeterError

PICO_PER_USD = 10**12
UNPRICED = "unpriced"  # a cost no catalog price gave: never shown as $0
#: SQLite integers hold ~9.2e6 USD in picodollars; no amount a user sets comes near.
MAX_USD = Decimal(1_000_000)


def usd_decimal(picousd: int | None) -> Decimal | None:
    """Picodollars as an exact Decimal number of dollars (12 decimal places)."""
    if picousd is None:
        return None
    return Decimal(int(picousd)).scaleb(-12)


def usd_string(picousd: int | None) -> str | None:
    """Full-precision decimal string of dollars, e.g. ``"0.093736500000"``; None stays None."""
    value = usd_decimal(picousd)
    return None if value is None else f"{value:.12f}"


def format_usd(picousd: int | None, places: int | None = None) -> str:
    """Dollars for people, ``unpriced`` for None. A lone amount: cents from $1 up, four
    decimals below; ``places`` (2 or 4, from :func:`usd_places`) fixes it for a table."""
    value = usd_decimal(picousd)
    if value is None:
        return UNPRICED
    if places is None:
        places = 2 if abs(value) >= 1 or value == 0 else 4
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    if rounded == 0 and value != 0:
        tiny = f"<${Decimal(1).scaleb(-places)}"
        return tiny if value > 0 else "-" + tiny
    sign = "-" if rounded < 0 else ""
    return f"{sign}${abs(rounded):,}"


def usd_places(amounts: Iterable[int | None]) -> int:
    """One precision for every amount a table shows: 2 (cents) when each is zero or at least
    $1, else 4. A table that mixed ``$9.33`` with ``$0.5266`` would misalign its points."""
    small = any(a is not None and 0 < abs(int(a)) < PICO_PER_USD for a in amounts)
    return 4 if small else 2


def usd_text(pico: int) -> str:
    """Exact, shortest decimal text for a config file: 20000000000000 -> ``"20"``."""
    return format(Decimal(pico).scaleb(-12).normalize(), "f")


def parse_usd(value: Any, where: str = "amount", *, what: str = "a cap") -> int:
    """A dollar amount (``"20"``, ``"$0.50"``, ``"1,000"``, ``20``, ``7.5``) as exact
    picodollars. Negative amounts, amounts over :data:`MAX_USD` and amounts finer than a
    picodollar are one-line errors naming ``where``."""
    if isinstance(value, bool):
        raise CCMeterError(f"{where}: expected a dollar amount, got {value!r}")
    text = repr(value) if isinstance(value, float) else str(value)
    text = text.strip().removeprefix("$")
    if "," in text:  # thousands only: "1,000" is a thousand, "2,5" is a typo, not 25
        whole = text.split(".", 1)[0]
        groups = whole.lstrip("-").split(",")
        if not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
            raise CCMeterError(f"{where}: {value!r} is not a dollar amount (a comma only "
                               "separates thousands; decimals take a point: 2.50)")
    text = text.replace(",", "").replace("_", "")
    try:
        if not text.isascii():  # Decimal reads other scripts' digits; a config should not
            raise ValueError(text)
        amount = Decimal(text)
    except (InvalidOperation, ValueError):
        raise CCMeterError(f"{where}: {value!r} is not a dollar amount (try 20 or 7.50)") from None
    if not amount.is_finite():
        raise CCMeterError(f"{where}: {value!r} is not a dollar amount (try 20 or 7.50)")
    if amount < 0:
        raise CCMeterError(f"{where}: {what} cannot be negative ({value!r})")
    if amount > MAX_USD:
        raise CCMeterError(f"{where}: {value!r} is above the largest amount, ${MAX_USD:,}")
    pico = amount * PICO_PER_USD
    if pico != pico.to_integral_value():
        raise CCMeterError(f"{where}: {value!r} has more decimals than a picodollar (1e-12)")
    return int(pico)


def floor_usd(pico: int, decimals: int = 2) -> str:
    """``$20.00``; floored (a spend is never shown above what was spent), thousands split."""
    q = Decimal(1).scaleb(-decimals)
    amount = Decimal(pico).scaleb(-12).quantize(q, rounding=ROUND_FLOOR)
    return f"${amount:,.{decimals}f}"


def exact_places(pico: int) -> int:
    """Decimals needed to show an amount exactly, at least 2 ($0.005 stays $0.005)."""
    exponent = Decimal(pico).scaleb(-12).normalize().as_tuple().exponent
    return max(2, -int(exponent)) if isinstance(exponent, int) else 2


def cap_places(limits: Iterable[int]) -> int:
    """Decimals for caps shown together: the most any was set with, at least 2."""
    return max((exact_places(int(limit)) for limit in limits), default=2)


def cap_usd(limit: int, places: int | None = None) -> str:
    """A cap as set: ``$0.50``, ``$20.00``, ``$0.005`` (``places``: a table's precision)."""
    return floor_usd(limit, exact_places(limit) if places is None else places)


def spend_usd(spent: int, limit: int | None = None, places: int | None = None) -> str:
    """A spend, floored: beside a cap at the cap's precision (or ``places``), with more
    decimals only where flooring would show a spend past the cap as equal to it or below
    (``$0.0026`` past a ``$0.002`` cap, ``$20.004`` past ``$20.00``). Without a cap: cents
    from $1, four decimals below (``<$0.0001`` for less), as the tables show a lone amount."""
    if places is None:
        if limit is not None:
            places = exact_places(limit)
        else:
            places = 2 if abs(spent) >= PICO_PER_USD or spent == 0 else 4
            if 0 < spent < PICO_PER_USD // 10**4:
                return "<$0.0001"
    if limit is not None:
        while spent > limit and places < 12:
            shown = Decimal(spent).scaleb(-12).quantize(Decimal(1).scaleb(-places),
                                                        rounding=ROUND_FLOOR)
            if shown > Decimal(limit).scaleb(-12):
                break
            places += 1
    return floor_usd(spent, places)
