"""The catalog read from its JSON (``data/prices.json``) and the config's ``[prices]``:
strings to exact ``Decimal`` rates, effective-dated periods and models, each mistake one
clear line naming where it is. Floats are refused in the catalog (inexact); a TOML float in
the config is read through its shortest repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from ccmeter.rates import RATE_NAMES, FastRates, LongContext, Model, Period, Rates


def parse_decimal(value: Any, where: str) -> Decimal:
    """A non-negative finite Decimal from a string or int; floats are refused (inexact)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{where}: expected a decimal string such as \"6.25\", got {value!r}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a decimal number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{where}: {value!r} must be a finite number >= 0")
    return number


def parse_rates(raw: Mapping[str, Any], where: str) -> Rates:
    missing = [name for name in RATE_NAMES if name not in raw]
    if missing:
        raise ValueError(f"{where}: missing rate(s) {', '.join(missing)}")
    return Rates(*(parse_decimal(raw[name], f"{where}.{name}") for name in RATE_NAMES))


def parse_long_context(raw: Any, where: str) -> LongContext | None:
    if raw is None:
        return None
    threshold = raw.get("threshold_tokens")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
        raise ValueError(f"{where}.threshold_tokens: expected a positive integer")
    return LongContext(threshold, parse_rates(raw, where))


def parse_fast(raw: Any, where: str) -> FastRates | None:
    if raw is None:
        return None
    return FastRates(
        parse_decimal(raw.get("input"), f"{where}.input"),
        parse_decimal(raw.get("output"), f"{where}.output"),
    )


def parse_period(raw: Mapping[str, Any], where: str) -> Period:
    try:
        start = date.fromisoformat(raw["from"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}.from: expected a YYYY-MM-DD date") from None
    return Period(
        start=start,
        rates=parse_rates(raw, where),
        long_context=parse_long_context(raw.get("long_context"), f"{where}.long_context"),
        fast=parse_fast(raw.get("fast"), f"{where}.fast"),
    )


def parse_ids(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValueError(f"{where}: expected a list of strings")
    return tuple(raw)


def parse_model(raw: Mapping[str, Any]) -> Model:
    model_id = raw.get("id")
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"models: every model needs a string id, got {model_id!r}")
    where = f"models[{model_id}]"
    raw_periods = raw.get("periods")
    if not isinstance(raw_periods, list) or not raw_periods:
        raise ValueError(f"{where}.periods: expected a non-empty list")
    periods = tuple(parse_period(p, f"{where}.periods[{i}]") for i, p in enumerate(raw_periods))
    starts = [p.start for p in periods]
    if starts != sorted(set(starts)):
        raise ValueError(f"{where}.periods: dates must be strictly increasing")
    return Model(
        id=model_id,
        name=str(raw.get("name") or model_id),
        aliases=parse_ids(raw.get("aliases"), f"{where}.aliases"),
        bedrock_ids=parse_ids(raw.get("bedrock_ids"), f"{where}.bedrock_ids"),
        vertex_ids=parse_ids(raw.get("vertex_ids"), f"{where}.vertex_ids"),
        geo_us_multiplier_applies=raw.get("geo_us_multiplier_applies") is True,
        periods=periods,
        note=raw.get("note") if isinstance(raw.get("note"), str) else None,
        cloud_regional_premium_applies=raw.get("cloud_regional_premium_applies") is True,
    )


def index_ids(models: Mapping[str, Model]) -> dict[str, str]:
    """Every known id, lower-cased, to its model key; a clash is a catalog bug."""
    index: dict[str, str] = {}
    for key, model in models.items():
        for known in model.known_ids():
            owner = index.setdefault(known.lower(), key)
            if owner != key:
                raise ValueError(f"model id {known!r} is claimed by both {owner} and {key}")
    return index


def user_decimal(value: Any, where: str) -> Decimal:
    """Like :func:`parse_decimal` but lets a TOML float through via its shortest repr ("4.5")."""
    if isinstance(value, float):
        value = repr(value)
    return parse_decimal(value, where)
