"""What a call will cost on its input side, before it is sent. Pure.

The API bills a prompt in three parts: the prefix it reads from the prompt cache, what it
writes there (up to the request's last ``cache_control`` breakpoint, at the breakpoint's 5m
or 1h rate), and the rest as plain input. :class:`Forecaster` predicts the three from the
request's cache shape (:func:`ccmeter.cachekeys.shape`: fingerprints and sizes in bytes,
no text) and what earlier calls' answers said:

- **which prefix is cached and alive**: each answered call leaves its breakpoints in a
  model of the cache (the prefix fingerprint, when it expires: the call's start plus the
  breakpoint's TTL; a read makes the entry live its TTL again). A request reads the longest
  prefix of its own, up to its last breakpoint, that is in the model and alive;
- **how many tokens a prefix holds**: every answer tells the exact count of the whole
  prompt and of the prefix up to its last breakpoint (read + written); the points between
  are interpolated by bytes. A new request is sized from the longest prefix of it whose
  count is known, plus its new bytes at the bytes-per-token rate its conversation showed
  last (else the proxy's running rate, else :data:`DEFAULT_BYTES_PER_TOKEN`);
- **too short to cache**: a model that wrote nothing for a prefix of N tokens is taken not
  to cache prefixes of N tokens or fewer (the API has a minimum cacheable length per model).

A starting proxy seeds its model from the last hour's rows (:meth:`Forecaster.seed`): the
breakpoints earlier proxies saw written, and the exact size of each call's cached prefix.

:func:`price` prices a forecast with the catalog (long-context and fast rules as for a real
call, output left out); :func:`reason` says in one line what drives the figure.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from datetime import UTC, datetime
from typing import Any

from ccmeter.cachekeys import TTL_1H_S, Breakpoint, Shape
from ccmeter.record import Record
from ccmeter.usage import TokenCounts, Usage

#: Bytes of canonical request JSON per token before any answer has said better. JSON-quoted
#: English text and code run about 3–4 bytes a token on Claude's tokenizers.
DEFAULT_BYTES_PER_TOKEN = 3.6
#: How far one answer moves the proxy's running bytes-per-token rate.
RATE_WEIGHT = 0.3
#: A rate is learned only from a new part of at least this many tokens.
MIN_RATE_TOKENS = 50
#: Prefix sizes and cache entries remembered (the least recently used are forgotten first).
MAX_KNOWN = 20_000
MAX_CHAINS = 2_000


class Estimate(Record):
    """A forecast's tokens, and why (``reason``: see :func:`reason`)."""

    input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    #: seconds since the longest prefix in the model of the cache expired, when it did
    expired_ago_s: float | None = None
    first_of_chain: bool = False
    no_breakpoint: bool = False

    @property
    def uncached_tokens(self) -> int:
        return self.input_tokens + self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        return self.uncached_tokens + self.cache_read_tokens


def _bounded_put(table: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


class Forecaster:
    """One proxy's model of the prompt cache and of prompt sizes (see the module docstring).
    Not thread-safe: the proxy calls it from its event loop."""

    def __init__(self, bytes_per_token: float = DEFAULT_BYTES_PER_TOKEN) -> None:
        #: prefix fingerprint -> (tokens, exact)
        self._tokens: OrderedDict[str, tuple[int, bool]] = OrderedDict()
        #: prefix fingerprint -> (expires at, TTL in seconds)
        self._cache: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._rate = bytes_per_token
        self._chain_rate: OrderedDict[Hashable, float] = OrderedDict()
        #: model -> the longest prefix (tokens) it was seen not to cache
        self._uncacheable: dict[str | None, int] = {}

    # --- at start --------------------------------------------------------------------

    def seed(self, rows: Sequence[Any], now: float) -> int:
        """Start from what earlier proxies recorded (rows of ``store.cache_calls``, oldest
        first): each answered call's breakpoints whose TTL has not run out since it started
        are in the cache, and its last breakpoint's prefix holds exactly what it read and
        wrote. A read refreshing an entry is not on record: such entries are taken to
        expire by their writing call's TTL (an over-estimate of the next call at worst).
        Returns how many entries are alive."""
        import json

        for row in rows:
            try:
                keys = json.loads(row.get("cache_key_json") or "null")
                marks = keys.get("breakpoints") if isinstance(keys, dict) else None
                if not marks or row.get("input_tokens") is None:
                    continue
                started = float(row["started_ts"])
                for mark in marks:
                    ttl = TTL_1H_S if mark.get("ttl") == "1h" else 300
                    if started + ttl > now:
                        _bounded_put(self._cache, str(mark["prefix"]), (started + ttl, ttl),
                                     MAX_KNOWN)
                cached = sum(row.get(k) or 0 for k in (
                    "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens"))
                if cached:
                    _bounded_put(self._tokens, str(marks[-1]["prefix"]), (cached, True),
                                 MAX_KNOWN)
            except (TypeError, ValueError, KeyError, AttributeError):
                continue  # a row this code cannot read is no knowledge
        return sum(1 for expires, _ttl in self._cache.values() if expires > now)

    # --- before the call ---------------------------------------------------------------

    def estimate(self, shape: Shape, chain: Hashable, now: float) -> Estimate:
        """The tokens ``shape``'s request will be billed for, read / written / plain."""
        rate = self._chain_rate.get(chain, self._rate)
        size = self._sizer(shape, rate)
        total = size(shape.size)
        marks = sorted(shape.breakpoints, key=lambda b: b.size)
        if not marks:
            return Estimate(total, 0, 0, 0, first_of_chain=chain not in self._chain_rate,
                            no_breakpoint=True)
        last = marks[-1].size
        hit_size, expired_ago = 0, None
        for key, at in shape.points:
            if at > last:
                break
            entry = self._cache.get(key)
            if entry is None:
                continue
            if entry[0] > now:
                hit_size = at
            else:
                expired_ago = now - entry[0]
        if hit_size:
            expired_ago = None  # something was read: the expiry is not the story
        read = size(hit_size) if hit_size else 0
        done, w5, w1 = read, 0, 0
        floor = self._uncacheable.get(shape.model, 0)
        for mark in marks:
            if mark.size <= hit_size:
                continue
            upto = size(mark.size)
            if upto <= floor:
                continue
            if mark.ttl_s == TTL_1H_S:
                w1 += upto - done
            else:
                w5 += upto - done
            done = upto
        return Estimate(total - done, w5, w1, read, expired_ago_s=expired_ago,
                        first_of_chain=chain not in self._chain_rate)

    def _sizer(self, shape: Shape, rate: float) -> Any:
        """``size(bytes)``: the tokens of the prompt's first ``bytes``, from the longest
        known prefix below it plus the rest at ``rate`` bytes a token."""
        anchors = [(0, 0)]
        for key, at in shape.points:
            known = self._tokens.get(key)
            if known is not None and known[0] >= anchors[-1][1]:
                anchors.append((at, known[0]))

        def size(at: int) -> int:
            base_at, base = 0, 0
            for anchor_at, tokens in anchors:
                if anchor_at > at:
                    break
                base_at, base = anchor_at, tokens
            return base + round((at - base_at) / rate)

        return size

    # --- after the answer --------------------------------------------------------------

    def learn(self, shape: Shape, chain: Hashable, started: float, actual: TokenCounts) -> None:
        """An answered call: what its usage says of its prompt's sizes and the cache."""
        if actual.prompt_tokens <= 0 or not shape.points:
            return
        marks = sorted(shape.breakpoints, key=lambda b: b.size)
        # the exact counts: this answer's (the prompt, and the prefix up to its last
        # breakpoint), and those earlier answers gave for prefixes of this prompt
        facts = {0: 0, shape.size: actual.prompt_tokens}
        if marks and actual.cache_write_tokens + actual.cache_read_tokens > 0:
            facts[marks[-1].size] = actual.cache_write_tokens + actual.cache_read_tokens
        for key, at in shape.points:
            known = self._tokens.get(key)
            if known is not None and known[1]:
                facts.setdefault(at, known[0])
        exact = sorted(facts.items())
        self._learn_rate(shape, chain, actual.prompt_tokens)
        for key, at in shape.points:
            tokens, is_exact = _interpolate(exact, at)
            known = self._tokens.get(key)
            if is_exact or known is None or not known[1]:
                _bounded_put(self._tokens, key, (tokens, is_exact), MAX_KNOWN)
        if not marks:
            return
        if actual.cache_write_tokens + actual.cache_read_tokens == 0:
            upto = _interpolate(exact, marks[-1].size)[0]
            self._uncacheable[shape.model] = max(self._uncacheable.get(shape.model, 0), upto)
            return
        self._remember_cache(shape, marks, started)

    def _learn_rate(self, shape: Shape, chain: Hashable, total: int) -> None:
        """Bytes per token of the part of this prompt no earlier answer had counted."""
        base_at, base = 0, 0
        for key, at in shape.points:
            known = self._tokens.get(key)
            if known is not None and known[1] and at < shape.size:
                base_at, base = at, known[0]
        new_bytes, new_tokens = shape.size - base_at, total - base
        if new_tokens < MIN_RATE_TOKENS or new_bytes <= 0:
            if base_at == 0 or total < MIN_RATE_TOKENS:
                return
            new_bytes, new_tokens = shape.size, total
        rate = new_bytes / new_tokens
        _bounded_put(self._chain_rate, chain, rate, MAX_CHAINS)
        self._rate += RATE_WEIGHT * (rate - self._rate)

    def _remember_cache(self, shape: Shape, marks: Sequence[Breakpoint], started: float) -> None:
        last = marks[-1].size
        hit_key = None
        for key, at in shape.points:
            if at > last:
                break
            entry = self._cache.get(key)
            if entry is not None and entry[0] > started:
                hit_key = key
        if hit_key is not None:  # a read makes the entry live its TTL again
            ttl = self._cache[hit_key][1]
            _bounded_put(self._cache, hit_key, (started + ttl, ttl), MAX_KNOWN)
        for mark in marks:
            entry = self._cache.get(mark.prefix)
            if entry is None or entry[0] <= started:
                _bounded_put(self._cache, mark.prefix, (started + mark.ttl_s, mark.ttl_s),
                             MAX_KNOWN)


def _interpolate(exact: Sequence[tuple[int, int]], at: int) -> tuple[int, bool]:
    """Tokens at byte ``at`` between the exact (bytes, tokens) points around it."""
    below = max((p for p in exact if p[0] <= at), default=(0, 0))
    above = min((p for p in exact if p[0] >= at), default=None)
    if below[0] == at:
        return below[1], True
    if above is None:
        return below[1], False
    share = (at - below[0]) / (above[0] - below[0])
    return below[1] + round(share * (above[1] - below[1])), False


def price(prices: Any, model: str | None, estimate: Estimate, at: float,
          *, speed: str | None = None) -> int | None:
    """The forecast's cost in picodollars at ``prices`` (a catalog's ``for_endpoint``): the
    input side only; None when the model is not priced."""
    usage = Usage(input_tokens=estimate.input_tokens,
                  cache_write_5m_tokens=estimate.cache_write_5m_tokens,
                  cache_write_1h_tokens=estimate.cache_write_1h_tokens,
                  cache_read_tokens=estimate.cache_read_tokens, speed=speed)
    return prices.price(model, usage, datetime.fromtimestamp(at, UTC)).cost_picousd


def _k(tokens: int) -> str:
    return f"{tokens / 1000:.0f}k" if tokens >= 10_000 else f"{tokens:,}"


def _ago(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "moments ago"
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''} ago"
    return f"{round(minutes / 60)} hours ago"


def reason(estimate: Estimate, change: str | None = None) -> str:
    """One line on what drives the forecast: ``184k uncached tokens: the cache expired 42
    minutes ago``. ``change`` is what the prefix changed against the conversation's last
    call (``model``, ``tools``, ``system``, ``message:N``; see ``cachekeys``)."""
    uncached = f"{_k(estimate.uncached_tokens)} uncached tokens"
    if estimate.no_breakpoint:
        return f"{uncached}: the request asks for no caching"
    if estimate.cache_read_tokens:
        return f"{uncached}, {_k(estimate.cache_read_tokens)} read from the cache"
    if estimate.expired_ago_s is not None:
        return f"{uncached}: the cache expired {_ago(estimate.expired_ago_s)}"
    if change in ("model", "tools", "system"):
        what = {"model": "the model", "tools": "the tool list",
                "system": "the system prompt"}[change]
        return f"{uncached}: {what} changed, so nothing cached is reused"
    if estimate.first_of_chain:
        return f"{uncached}: nothing cached for this conversation yet"
    return f"{uncached}: nothing cached matches this prompt"
