"""What recorded calls would have cost under another assumption: another model, or every
cache write at one lifetime. Pure: no SQLite, no CLI.

Tokens are facts, prices are assumptions. Each stored call is priced again, one call at a
time, by :meth:`ccmeter.pricing.Catalog.price` with the same counts (changed only as the
assumption says), the same time (so the same price period), speed, service tier, inference
geo, server-tool fees and advisor hops; so the long-context tier, fast rates and the US-geo
multiplier apply exactly as they would to a real call on the assumed model. Stored costs
never change.

- ``as_model``: the call priced as that model (advisor and fallback hops keep their own
  model: another model served them). Fast mode on a model without fast rates is priced at
  its standard rates (as the API bills a request that asks for fast on such a model).
- ``cache_ttl``: every cache write (the call's and its hops') moved to the 5-minute or the
  1-hour write rate; reads and plain input stay as they were.
- Bedrock and Vertex: the endpoint's kind is not stored, but the stored call's pricing note
  says whether the regional premium was applied; a call whose model never takes it is
  priced as regional on a model that does (the proxy's own rule for an unknown endpoint).

A call the meter could not price for any reason other than an unknown model (counts that
are not counts, an answer whose usage was never read) stays unpriced under every
assumption; an unknown model's call is priced under ``as_model``, since its tokens are known.
What caching saved is recomputed for the same call under the same assumption: its cost with
every cached token as plain input, minus its cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ccmeter.record import Record

if TYPE_CHECKING:
    from ccmeter.pricing import Catalog

#: What ``--cache-ttl`` takes: the write lifetimes the API offers.
CACHE_TTLS = ("5m", "1h")
_UNKNOWN_MODEL = "unknown model "


class Assumption(Record):
    """What a report re-prices its calls as; both None is the calls as they were billed."""

    as_model: str | None = None
    cache_ttl: str | None = None

    @property
    def active(self) -> bool:
        return self.as_model is not None or self.cache_ttl is not None

    def describe(self) -> str:
        """``as claude-sonnet-4-5, every cache write 5-minute`` (for titles and captions)."""
        parts = []
        if self.as_model is not None:
            parts.append(f"as {self.as_model}")
        if self.cache_ttl is not None:
            lifetime = {"5m": "5-minute", "1h": "1-hour"}[self.cache_ttl]
            parts.append(f"every cache write {lifetime}")
        return ", ".join(parts)

    def as_meta(self) -> dict[str, Any]:
        return {"as_model": self.as_model, "cache_ttl": self.cache_ttl}


def check_assumption(catalog: Catalog, as_model: str | None,
                     cache_ttl: str | None) -> Assumption:
    """The assumption for these options; ValueError names a model or lifetime not known.

    ``as_model`` comes back as the catalog's own id (``claude-sonnet-4-5`` for an alias).
    """
    if cache_ttl is not None and cache_ttl.strip().lower() not in CACHE_TTLS:
        raise ValueError(f"--cache-ttl takes {' or '.join(CACHE_TTLS)}, not {cache_ttl!r}")
    model = None
    if as_model is not None:
        model = catalog.resolve(as_model)
        if model is None:
            raise ValueError(f"--as-model {as_model!r} is not in the price catalog "
                             f"{catalog.version}; `ccmeter prices` lists the models")
    ttl = cache_ttl.strip().lower() if cache_ttl is not None else None
    return Assumption(as_model=model, cache_ttl=ttl)


# --- usage without dataclasses (the report's imports stay light) -----------------------------


class Tokens(Record):
    """The five billed token categories (what ``Rates.cost`` reads)."""

    input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    def with_ttl(self, ttl: str) -> Tokens:
        """Every cache write at lifetime ``ttl``."""
        writes = self.cache_write_tokens
        return self._replace(cache_write_5m_tokens=writes if ttl == "5m" else 0,
                             cache_write_1h_tokens=writes if ttl == "1h" else 0)

    def uncached(self) -> Tokens:
        """Every cached token (written or read) as plain input instead."""
        return self._replace(input_tokens=self.prompt_tokens, cache_write_5m_tokens=0,
                             cache_write_1h_tokens=0, cache_read_tokens=0)


class Hop(Record):
    kind: str
    model: str
    tokens: Tokens


class CallUsage(Record):
    """A stored call's usage, with the attributes :meth:`Catalog.price` reads."""

    tokens: Tokens
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    hops: tuple[Hop, ...] = ()
    problems: tuple[str, ...] = ()


def _tokens(raw: Mapping[str, Any]) -> Tokens:
    return Tokens(*(int(raw.get(name) or 0) for name in Tokens._fields))


def usage_of(row: Mapping[str, Any]) -> CallUsage:
    """The usage a stored call (a row of ``api_calls`` or ``transcript_calls``) was priced
    from; ValueError when its hops cannot be read."""
    hops: tuple[Hop, ...] = ()
    if row.get("hops_json"):
        import json

        try:
            hops = tuple(Hop(str(h["kind"]), str(h["model"]), _tokens(h.get("tokens") or {}))
                         for h in json.loads(row["hops_json"]))
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"unreadable hops: {exc}") from None
    return CallUsage(
        tokens=_tokens(row),
        web_search_requests=int(row.get("web_search_requests") or 0),
        web_fetch_requests=int(row.get("web_fetch_requests") or 0),
        service_tier=row.get("service_tier"),
        inference_geo=row.get("inference_geo"),
        speed=row.get("speed"),
        hops=hops,
    )


def assume(usage: CallUsage, assumption: Assumption) -> CallUsage:
    """``usage`` with the assumption's cache lifetime applied (to the call and its hops)."""
    ttl = assumption.cache_ttl
    if ttl is None:
        return usage
    return usage._replace(tokens=usage.tokens.with_ttl(ttl),
                          hops=tuple(h._replace(tokens=h.tokens.with_ttl(ttl))
                                     for h in usage.hops))


# --- repricing ------------------------------------------------------------------------------


class Repriced(Record):
    """One call's cost and caching saving under an assumption (picodollars; None: unpriced)."""

    cost: int | None
    saved: int | None


_UNPRICED = Repriced(None, None)


def region_kind_of(row: Mapping[str, Any], catalog: Catalog) -> str | None:
    """The Bedrock/Vertex endpoint kind a stored call was priced for, from its pricing note:
    ``regional``/``multi-region`` when the premium was applied, ``global`` when its model
    takes the premium and none was applied; None (priced as regional) when it cannot be told."""
    note = row.get("pricing_note") or ""
    provider = row.get("provider") or ""
    marker = f"{provider} "
    for part in note.split("; "):
        if part.startswith(marker) and " endpoint x" in part:
            kind = part[len(marker):].split(" endpoint x", 1)[0]
            return kind if kind in ("regional", "multi-region") else None
    key = catalog.resolve(row.get("model_name") or "")
    if key is not None and catalog.model(key).cloud_regional_premium_applies:
        return "global"
    return None


def reprice(catalog: Catalog, row: Mapping[str, Any], assumption: Assumption) -> Repriced:
    """What one stored call would have cost under ``assumption``, and what caching saved.

    ``row`` holds the call's stored columns, its model as ``model_name``.
    """
    from ccmeter.pricing import FIRST_PARTY

    model = row.get("model_name")
    if row.get("cost_picousd") is None:
        note = row.get("pricing_note") or ""
        if assumption.as_model is None or not note.startswith(_UNKNOWN_MODEL):
            return _UNPRICED
    if assumption.as_model is not None:
        model = assumption.as_model
    try:
        usage = assume(usage_of(row), assumption)
    except ValueError:
        return _UNPRICED
    provider = row.get("provider") or FIRST_PARTY
    region = None if provider == FIRST_PARTY else region_kind_of(row, catalog)
    at = datetime.fromtimestamp(float(row["started_ts"]), UTC)
    price = catalog.price(model, usage, at, provider=provider, region_kind=region)  # type: ignore[arg-type]
    cost = price.cost_picousd
    if cost is None:
        return _UNPRICED
    plain = catalog.price(model, usage._replace(tokens=usage.tokens.uncached()), at,  # type: ignore[arg-type]
                          provider=provider, region_kind=region).cost_picousd
    return Repriced(cost, None if plain is None else plain - cost)
