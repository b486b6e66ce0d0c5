"""What one Claude API answer cost, from its ``Usage``, the model id and the time of the call.

Pure: the only input besides the arguments is the bundled catalog, ``data/prices.json``,
read from beside this module. The rules follow Anthropic's pricing page (see
``anthropic-pricing.md`` in the shared references); the ones that are easy to get wrong:

- Cache rates are stored per model, never derived from one global multiplier: cache reads are
  0.025x input on Fable/Mythos 5.1+, 0.05x on Opus/Sonnet 5.5 and 0.1x elsewhere.
- Rates change over a model's life, so every model carries effective-dated periods and the
  call's date (in UTC) picks the one in force.
- A long-context tier moves *every* category of the request, output included, to the higher
  row once the whole prompt (input + cache writes + cache reads) is strictly over the threshold.
- Fast mode replaces input/output with the fast rates and scales the cache rates with them;
  it never takes a long-context tier.
- On Amazon Bedrock and Google Vertex AI (``provider=``), regional and multi-region endpoints
  cost 10 % more than global ones for Sonnet 4.5, Haiku 4.5, Opus 4.5 and later models; the
  first-party ``inference_geo`` multiplier does not apply there.

Money is ``Decimal`` from the JSON strings to the result; a float never enters. Catalog rates
have at most three decimals, so a cost is exact at 1e-12 USD (one picodollar) and is stored as
an integer number of picodollars.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccmeter.catalogparse import index_ids, parse_decimal, parse_model, user_decimal
from ccmeter.modelids import candidates
from ccmeter.money import PICO_PER_USD  # noqa: F401  (re-exported)
from ccmeter.planfees import PlanFee, catalog_fees
from ccmeter.planfees import with_overrides as plan_overrides

# the records a price is made of, where importers of this module have always found them
from ccmeter.rates import (  # noqa: F401
    MILLION,
    RATE_NAMES,
    FastRates,
    LongContext,
    Model,
    ModelRow,
    Period,
    Price,
    Rates,
)
from ccmeter.record import Record

if TYPE_CHECKING:  # the reading commands price nothing: no need for usage's dataclasses
    from ccmeter.usage import TokenCounts, Usage

OVERRIDES_SUFFIX = "+overrides"

_PICO = Decimal(1).scaleb(-12)
_PRECISION = 60  # far beyond any real token count x rate; keeps every step exact
FIRST_PARTY = "anthropic"
#: Cloud endpoint kinds that pay the regional premium. ``None`` (a Bedrock application
#: inference profile, say) is priced as regional: a cap should over- rather than under-count.
PREMIUM_REGION_KINDS = frozenset({"regional", "multi-region", None})
#: Picodollars per input, 5-minute write, 1-hour write and read token (Catalog.prompt_rates).
PromptRates = tuple[int, int, int, int]


# --- the catalog ------------------------------------------------------------------------


def _utc_day(at: datetime | date) -> date:
    """The UTC calendar date of a call; a naive datetime is taken to be UTC already."""
    if isinstance(at, datetime):
        return (at.astimezone(UTC) if at.tzinfo else at).date()
    return at


def _count(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


class Catalog:
    """Model rates with effective dates, plus the multipliers and fees around them."""

    def __init__(
        self,
        *,
        version: str,
        models: Mapping[str, Model],
        geo_us_multiplier: Decimal,
        batch_multiplier: Decimal,
        web_search_usd_each: Decimal,
        web_fetch_usd_each: Decimal,
        discount_percent: Decimal = Decimal(0),
        cloud_regional_multiplier: Decimal = Decimal(1),
        plan_fees: Mapping[str, tuple[PlanFee, ...]] | None = None,
    ) -> None:
        self.version = version
        self.geo_us_multiplier = geo_us_multiplier
        self.batch_multiplier = batch_multiplier
        self.web_search_usd_each = web_search_usd_each
        self.web_fetch_usd_each = web_fetch_usd_each
        self.discount_percent = discount_percent
        self.cloud_regional_multiplier = cloud_regional_multiplier
        #: subscription plans' monthly fees with effective dates (:mod:`ccmeter.planfees`)
        self.plan_fees = dict(plan_fees or {})
        self._models = dict(models)
        self._index = index_ids(self._models)

    def __repr__(self) -> str:
        return f"<Catalog {self.version} ({len(self._models)} models)>"

    def fingerprint(self) -> str:
        """16 hex digits that change with any rate, date, multiplier or the discount: what
        a result kept beside the database (the waste memo) was priced by."""
        from hashlib import blake2b

        parts = (self.version, self.geo_us_multiplier, self.batch_multiplier,
                 self.web_search_usd_each, self.web_fetch_usd_each, self.discount_percent,
                 self.cloud_regional_multiplier, sorted(self._models.items()))
        return blake2b(repr(parts).encode(), digest_size=8).hexdigest()

    # construction

    @classmethod
    def bundled(cls) -> Catalog:
        """The catalog shipped in ``ccmeter/data/prices.json`` (parsed once per process)."""
        return _bundled()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalog:
        """Build a catalog from the ``prices.json`` shape; ValueError names what is wrong."""
        version = data.get("version")
        if not isinstance(version, str) or not version:
            raise ValueError("prices: a string 'version' is required")
        raw_models = data.get("models")
        if not isinstance(raw_models, list) or not raw_models:
            raise ValueError("prices: 'models' must be a non-empty list")
        models: dict[str, Model] = {}
        for raw in raw_models:
            model = parse_model(raw)
            if model.id in models:
                raise ValueError(f"prices: model {model.id!r} is listed twice")
            models[model.id] = model
        multipliers = data.get("multipliers") or {}
        tools = data.get("server_tools") or {}
        cloud = data.get("cloud") or {}
        return cls(
            version=version,
            models=models,
            geo_us_multiplier=parse_decimal(
                multipliers.get("inference_geo_us", "1"), "multipliers.inference_geo_us"
            ),
            batch_multiplier=parse_decimal(multipliers.get("batch", "1"), "multipliers.batch"),
            web_search_usd_each=parse_decimal(
                tools.get("web_search_usd_each", "0"), "server_tools.web_search_usd_each"
            ),
            web_fetch_usd_each=parse_decimal(
                tools.get("web_fetch_usd_each", "0"), "server_tools.web_fetch_usd_each"
            ),
            cloud_regional_multiplier=parse_decimal(
                cloud.get("regional_multiplier", "1"), "cloud.regional_multiplier"
            ),
            plan_fees=catalog_fees(data.get("plans")),
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> Catalog:
        """A copy with the user's negotiated rates and discount from the TOML config.

        ``{"discount_percent": "10", "models": {"<id>": {"input": "4", ...}}}``. For a known
        model the given rates replace the base row in every period (long-context and fast rows
        stay the catalog's); an id the catalog does not know becomes a new model and needs all
        five rates. The discount comes off the final cost. Rates may be strings or ints, and
        floats are accepted here (TOML writes ``4.5`` as one) through their shortest repr.
        """
        if not overrides:
            return self
        unknown = set(overrides) - {"discount_percent", "models", "plans"}
        if unknown:
            raise ValueError(f"pricing overrides: unknown key(s) {', '.join(sorted(unknown))}")
        discount = self.discount_percent
        if "discount_percent" in overrides:
            discount = user_decimal(
                overrides["discount_percent"], "pricing overrides: discount_percent"
            )
            if discount > 100:
                raise ValueError("pricing overrides: discount_percent must be between 0 and 100")
        models = dict(self._models)
        model_overrides = overrides.get("models") or {}
        if not isinstance(model_overrides, Mapping):
            raise ValueError("pricing overrides: 'models' must be a table of model ids")
        for name, rates in model_overrides.items():
            model = self._override_model(str(name), rates)
            models[model.id] = model
        base = self.version.removesuffix(OVERRIDES_SUFFIX)
        # plan fees change no price: a catalog with only those keeps its version
        prices_changed = bool(set(overrides) - {"plans"}) or self.version.endswith(
            OVERRIDES_SUFFIX)
        return Catalog(
            version=base + OVERRIDES_SUFFIX if prices_changed else self.version,
            models=models,
            geo_us_multiplier=self.geo_us_multiplier,
            batch_multiplier=self.batch_multiplier,
            web_search_usd_each=self.web_search_usd_each,
            web_fetch_usd_each=self.web_fetch_usd_each,
            discount_percent=discount,
            cloud_regional_multiplier=self.cloud_regional_multiplier,
            plan_fees=plan_overrides(self.plan_fees, overrides.get("plans")),
        )

    def _override_model(self, name: str, raw: Any) -> Model:
        where = f"pricing overrides: models.{name}"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a table of rates")
        unknown = set(raw) - set(RATE_NAMES)
        if unknown:
            raise ValueError(
                f"{where}: unknown rate(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(RATE_NAMES)}"
            )
        given = {key: user_decimal(value, f"{where}.{key}") for key, value in raw.items()}
        key = self.resolve(name)
        if key is not None:
            model = self._models[key]
            periods = tuple(p._replace(rates=p.rates._replace(**given)) for p in model.periods)
            return model._replace(periods=periods)
        missing = [rate for rate in RATE_NAMES if rate not in given]
        if missing:
            raise ValueError(
                f"{where}: {name!r} is not in the catalog, so all five rates are needed; "
                f"missing {', '.join(missing)}"
            )
        model_id = name.strip().lower()
        period = Period(date.min, Rates(**given), long_context=None, fast=None)
        return Model(model_id, name, (), (), (), False, (period,), note="user override")

    # lookup

    def resolve(self, model: str) -> str | None:
        """The catalog id that ``model`` names, or None.

        Accepts ids in any case, aliases, Claude Code's ``[1m]`` suffix, Vertex ``@date``
        ids, Bedrock ids (geo prefix, ``anthropic.``, ``-v1:0``) and ARNs ending in one.
        Only exact matches count: a near miss is unknown rather than priced as a sibling.
        """
        if not model:
            return None
        for candidate in candidates(model):
            key = self._index.get(candidate)
            if key is not None:
                return key
        return None

    def models(self, at: datetime | date | None = None) -> list[ModelRow]:
        """Every model with the rates in force at ``at`` (default: now), in catalog order."""
        day = _utc_day(at if at is not None else datetime.now(UTC))
        rows = []
        for model in self._models.values():
            period = model.period_at(day)
            rows.append(
                ModelRow(
                    id=model.id,
                    name=model.name,
                    aliases=model.aliases,
                    since=period.start,
                    rates=period.rates,
                    long_context=period.long_context,
                    fast=period.fast,
                    geo_us_multiplier_applies=model.geo_us_multiplier_applies,
                    note=model.note,
                )
            )
        return rows

    def model(self, key: str) -> Model:
        """The full catalog entry (all periods) for a resolved id."""
        return self._models[key]

    # pricing

    def price(
        self,
        model: str | None,
        usage: Usage,
        at: datetime | date,
        *,
        provider: str = FIRST_PARTY,
        region_kind: str | None = None,
    ) -> Price:
        """The cost of one answer served by ``model`` at ``at``.

        Order, as on the pricing page: tokens at the (fast / long-context) row, x1.1 for US
        inference on eligible models (first party) or for a regional/multi-region endpoint of
        Bedrock or Vertex (``provider``, ``region_kind``: ``global`` / ``multi-region`` /
        ``regional``), x0.5 for batch, then per-request server-tool fees, then each
        advisor/fallback hop at its own model's rates, then the user's discount.
        """
        key = self.resolve(model) if model else None
        if usage.problems:  # counts that are not counts: unknown, never negative or zero
            return Price(None, self.version, key,
                         "usage not metered: " + "; ".join(usage.problems)[:300])
        if key is None:
            return Price(None, self.version, None, f"unknown model {model!r}")
        day = _utc_day(at)
        notes: list[str] = []
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            cost = self._tokens_cost(key, usage.tokens, day, usage.speed == "fast", notes)
            if provider == FIRST_PARTY:
                cost = self._apply_geo(key, usage, cost, notes)
            else:
                cost = self._apply_cloud_region(key, provider, region_kind, cost, notes)
            cost = self._apply_modifiers(key, usage, cost, notes)
            for hop in usage.hops:
                hop_key = self.resolve(hop.model)
                if hop_key is None:
                    note = f"unknown model {hop.model!r} in {hop.kind} hop"
                    return Price(None, self.version, key, note)
                notes.append(f"{hop.kind} at {hop_key}")
                cost += self._tokens_cost(hop_key, hop.tokens, day, False, notes)
            if self.discount_percent:
                cost *= 1 - self.discount_percent / 100
                notes.append(f"discount {self.discount_percent}%")
            cost = cost.quantize(_PICO, rounding=ROUND_HALF_EVEN)
        return Price(cost, self.version, key, "; ".join(notes) or None)

    def prompt_rates(
        self,
        model: str | None,
        at: datetime | date,
        *,
        provider: str = FIRST_PARTY,
        speed: str | None = None,
        service_tier: str | None = None,
        inference_geo: str | None = None,
    ) -> tuple[int | None, PromptRates | None, PromptRates | None] | None:
        """What :meth:`price` charges per prompt token (input, 5-minute write, 1-hour write,
        read) of a call with these traits and no output, server tools or hops, in whole
        picodollars, multipliers and discount included: (long-context threshold or None,
        the rates at or below it, above it), so that ``price(...).cost_picousd`` is exactly
        ``sum(tokens x rate)``. A side is None when one of its rates is not a whole number
        of picodollars (only :meth:`price`, which rounds, is exact there); the whole answer
        is None for an unknown model."""
        key = self.resolve(model) if model else None
        if key is None:
            return None
        day = _utc_day(at)
        entry = self._models[key]
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            period = entry.period_at(day)
            multiplier = Decimal(1)
            if provider == FIRST_PARTY:
                if inference_geo == "us" and entry.geo_us_multiplier_applies:
                    multiplier *= self.geo_us_multiplier
            elif entry.cloud_regional_premium_applies:  # region_kind None: priced as regional
                multiplier *= self.cloud_regional_multiplier
            if service_tier == "batch":
                multiplier *= self.batch_multiplier
            if self.discount_percent:
                multiplier *= 1 - self.discount_percent / 100

            def whole(rates: Rates) -> PromptRates | None:
                out = []
                for rate in (rates.input, rates.cache_write_5m, rates.cache_write_1h,
                             rates.cache_read):
                    pico = rate * MILLION * multiplier
                    if pico != pico.to_integral_value():
                        return None
                    out.append(int(pico))
                return (out[0], out[1], out[2], out[3])

            if speed == "fast" and period.fast is not None:
                return None, whole(period.rates.at_fast(period.fast)), None
            if period.long_context is None:
                return None, whole(period.rates), None
            return (period.long_context.threshold_tokens, whole(period.rates),
                    whole(period.long_context.rates))

    def _tokens_cost(
        self, key: str, tokens: TokenCounts, day: date, fast: bool, notes: list[str]
    ) -> Decimal:
        """Token cost of one sampling hop at the row in force; appends what tier applied."""
        period = self._models[key].period_at(day)
        if fast and period.fast is not None:
            notes.append("fast")
            return period.rates.at_fast(period.fast).cost(tokens)
        if fast:
            notes.append(f"fast not priced for {key} on {day}: standard rates")
        if period.long_context is not None and period.long_context.applies(tokens):
            notes.append("long-context tier")
            return period.long_context.rates.cost(tokens)
        return period.rates.cost(tokens)

    def _apply_geo(self, key: str, usage: Usage, cost: Decimal, notes: list[str]) -> Decimal:
        """First-party data residency: x1.1 for US-only inference on eligible models."""
        if usage.inference_geo == "us" and self._models[key].geo_us_multiplier_applies:
            cost *= self.geo_us_multiplier
            notes.append(f"us geo x{self.geo_us_multiplier}")
        return cost

    def _apply_cloud_region(
        self, key: str, provider: str, region_kind: str | None, cost: Decimal, notes: list[str]
    ) -> Decimal:
        """Bedrock/Vertex: regional and multi-region endpoints cost more on eligible models."""
        if region_kind not in PREMIUM_REGION_KINDS:
            return cost
        if not self._models[key].cloud_regional_premium_applies:
            return cost
        if self.cloud_regional_multiplier == 1:
            return cost
        cost *= self.cloud_regional_multiplier
        where = region_kind or "unknown (priced as regional)"
        notes.append(f"{provider} {where} endpoint x{self.cloud_regional_multiplier}")
        return cost

    def for_endpoint(self, provider: str = FIRST_PARTY, region_kind: str | None = None) -> Any:
        """This catalog with ``provider`` and ``region_kind`` fixed, for code that calls
        ``price(model, usage, at)`` (a hard cap's running cost)."""
        if provider == FIRST_PARTY:
            return self
        return _EndpointPrices(self, provider, region_kind)

    def _apply_modifiers(self, key: str, usage: Usage, cost: Decimal, notes: list[str]) -> Decimal:
        """The batch multiplier, then the flat server-tool fees."""
        if usage.service_tier == "batch":
            cost *= self.batch_multiplier
            notes.append(f"batch x{self.batch_multiplier}")
        if usage.web_search_requests:
            cost += usage.web_search_requests * self.web_search_usd_each
            notes.append(_count(usage.web_search_requests, "web search", "web searches"))
        if usage.web_fetch_requests and self.web_fetch_usd_each:
            cost += usage.web_fetch_requests * self.web_fetch_usd_each
            notes.append(_count(usage.web_fetch_requests, "web fetch", "web fetches"))
        return cost


class _EndpointPrices(Record):
    catalog: Catalog
    provider: str
    region_kind: str | None

    def price(self, model: str | None, usage: Usage, at: datetime | date) -> Price:
        return self.catalog.price(model, usage, at, provider=self.provider,
                                  region_kind=self.region_kind)


@cache
def _bundled() -> Catalog:
    # beside this module (package data); plain file reading, as importlib.resources costs a
    # few milliseconds of imports on every short-lived command
    text = (Path(__file__).parent / "data" / "prices.json").read_text(encoding="utf-8")
    return Catalog.from_dict(json.loads(text))
