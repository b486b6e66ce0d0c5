"""Money thrown away on the prompt cache: every re-write and every write never read. Pure.

A *chain* is the calls one conversation makes in order: one session's calls of one agent
(a subagent's calls are their own chain) and one kind (Claude Code's auxiliary title and quota
calls, which cache nothing of the conversation, are their own chain too). Within a chain, for
each call ``cur`` and the call before it, ``prev`` (docs/waste.md has worked examples):

- **re-write**: the tokens ``prev`` had in the cache (its read + its write) that ``cur`` had
  to write again: ``min(prev.read + prev.write - cur.read, cur.write)`` when positive, taken
  from ``cur``'s 1-hour write first. Waste = those tokens x (write rate - read rate) at
  ``cur``'s rates: reading them would have been the price. Its cause: what changed in the
  prefix (``model``, ``tools``, ``system``, ``message`` with its index) as the proxy saw it
  against ``prev``, else ``ttl`` when ``cur`` came after ``prev``'s shortest cache lifetime
  (with the minutes idle), else ``unknown``.
- **never read**: the part of a call's *fresh* write (its write less what it re-wrote) that
  the next call neither read nor re-wrote, once its TTL has run out (before that it is
  pending). Waste = tokens x (write rate - plain input rate): not caching was the
  alternative. Cause ``never_read``.

Each lost token is counted once: a write the next call re-wrote is part of that re-write, and
a write that was itself a re-write is not also "never read". The money is the difference of
two prices of the same call with :meth:`ccmeter.pricing.Catalog.price` — as it was, and with
those tokens read (or sent as plain input) instead — so every rate, tier and multiplier of
the call applies exactly, and waste is always part of the call's own cost. A model without a
price gives ``None`` (unpriced), never $0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ccmeter.record import Record

if TYPE_CHECKING:
    from ccmeter.pricing import Catalog

TTL_5M_S = 300
TTL_1H_S = 3600

CAUSES = ("tools", "system", "message", "model", "ttl", "unknown", "never_read")
REWRITE = "rewrite"
NEVER_READ = "never_read"
#: Calls whose rows say nothing of the cache are left out of a chain.
_NO_USAGE_STATUSES = ("blocked",)


class CacheCall(Record):
    """What waste needs of one call's row."""

    call_uid: str
    started_ts: float
    session_id: str | None
    agent_id: str | None
    call_kind: str | None
    project: str | None
    model: str | None
    input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    cache_change: str | None = None
    shortest_ttl_s: int | None = None
    tools_fp: str | None = None
    system_fp: str | None = None
    provider: str = "anthropic"
    speed: str | None = None
    service_tier: str | None = None
    inference_geo: str | None = None
    cost_picousd: int | None = None
    #: the row's ``cache_key_json``, read only when a cause needs it
    key_json: str | None = None

    @property
    def write(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def cached(self) -> int:
        """What this call left in the cache: what it read and what it wrote."""
        return self.cache_read_tokens + self.write

    @property
    def chain(self) -> tuple[str | None, str | None, str | None]:
        return self.session_id, self.agent_id, self.call_kind

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> CacheCall:
        get = row.get
        return cls._make((
            row["call_uid"], row["started_ts"], get("session_id"), get("agent_id"),
            get("call_kind"), get("project"), get("model"), get("input_tokens") or 0,
            get("cache_write_5m_tokens") or 0, get("cache_write_1h_tokens") or 0,
            get("cache_read_tokens") or 0, get("cache_change"), None, None, None,
            get("provider") or "anthropic", get("speed"), get("service_tier"),
            get("inference_geo"), get("cost_picousd"), get("cache_key_json") or None))


@lru_cache(maxsize=4096)
def _read_key(key: str) -> tuple[str | None, str | None, int | None]:
    """(tools, system, shortest TTL) of a ``cache_key_json``; what cannot be read is None."""
    tools = system = None
    ttl = None
    try:
        doc = json.loads(key)
        tools, system = doc.get("tools"), doc.get("system")
        ttls = [TTL_1H_S if b.get("ttl") == "1h" else TTL_5M_S
                for b in doc.get("breakpoints") or []]
        ttl = min(ttls) if ttls else None
    except (ValueError, AttributeError, TypeError):
        pass
    return tools, system, ttl


class Loss(Record):
    """One call's lost money: ``kind`` ``rewrite`` or ``never_read``."""

    call: CacheCall
    kind: str
    cause: str
    tokens_5m: int
    tokens_1h: int
    waste_picousd: int | None
    message_index: int | None = None
    idle_minutes: int | None = None

    @property
    def tokens(self) -> int:
        return self.tokens_5m + self.tokens_1h

    @property
    def detail(self) -> str:
        if self.cause == "message" and self.message_index is not None:
            return f"message {self.message_index}"
        if self.cause == "ttl" and self.idle_minutes is not None:
            return f"{self.idle_minutes} min idle"
        return ""


class Pending(Record):
    """A write whose lifetime has not run out and that no later call has read yet."""

    call: CacheCall
    tokens: int


class Accounting(Record):
    losses: tuple[Loss, ...]
    pending: tuple[Pending, ...]

    @property
    def waste_picousd(self) -> int:
        return sum(loss.waste_picousd or 0 for loss in self.losses)

    @property
    def unpriced(self) -> int:
        return sum(1 for loss in self.losses if loss.waste_picousd is None)


class Pricer:
    """What the same call would have cost with some of its cache writes read, or sent as
    plain input, instead: the difference is the waste, exact in picodollars."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._rates: dict[tuple[Any, ...], Any] = {}

    def _cost(self, call: CacheCall, w5: int, w1: int, read: int, plain: int) -> int | None:
        from ccmeter.usage import Usage

        usage = Usage(input_tokens=plain, cache_write_5m_tokens=w5, cache_write_1h_tokens=w1,
                      cache_read_tokens=read, speed=call.speed,
                      service_tier=call.service_tier, inference_geo=call.inference_geo)
        at = datetime.fromtimestamp(call.started_ts, UTC)
        price = self.catalog.price(call.model, usage, at, provider=call.provider)
        return price.cost_picousd

    def saving(self, call: CacheCall, *, t5: int, t1: int, instead: str) -> int | None:
        """Picodollars saved had ``t5``/``t1`` written tokens been read (``instead="read"``)
        or plain input (``"input"``)."""
        w5, w1 = call.cache_write_5m_tokens, call.cache_write_1h_tokens
        read, plain = call.cache_read_tokens, call.input_tokens
        # the catalog's whole-picodollar rates per token, when it has them: the same price
        # as Catalog.price gives, without building a Usage and two Prices per loss
        at = datetime.fromtimestamp(call.started_ts, UTC)
        key = (call.model, call.provider, call.speed, call.service_tier, call.inference_geo,
               at.date())
        rates = self._rates.get(key, self)
        if rates is self:
            rates = self._rates[key] = self.catalog.prompt_rates(
                call.model, at, provider=call.provider, speed=call.speed,
                service_tier=call.service_tier, inference_geo=call.inference_geo)
        if rates is None:
            return None  # a model without a price
        if type(w5) is int and type(w1) is int and type(read) is int and type(plain) is int:
            threshold, below, above = rates
            row = above if threshold is not None and plain + w5 + w1 + read > threshold \
                else below
            if row is not None:
                rate_in, rate_5m, rate_1h, rate_read = row
                instead_rate = rate_read if instead == "read" else rate_in
                return max(0, t5 * rate_5m + t1 * rate_1h - (t5 + t1) * instead_rate)
        actual = self._cost(call, w5, w1, read, plain)
        if instead == "read":
            other = self._cost(call, w5 - t5, w1 - t1, read + t5 + t1, plain)
        else:
            other = self._cost(call, w5 - t5, w1 - t1, read, plain + t5 + t1)
        if actual is None or other is None:
            return None
        return max(0, actual - other)


# a call as a tuple in CacheCall's field order (CacheCall._values(), or a row read so)
_UID, _TS, _SESSION, _AGENT, _KIND, _PROJECT, _MODEL, _INPUT, _W5, _W1, _READ, _CHANGE, \
    _TTL, _TOOLS, _SYSTEM = range(15)
_KEY = 20


def chains(calls: Iterable[CacheCall]) -> dict[tuple[Any, ...], list[CacheCall]]:
    """Calls with cache usage by chain, each in order. Calls without a session are left out
    (nothing says which conversation they continue)."""
    out: dict[tuple[Any, ...], list[CacheCall]] = {}
    for call in calls:
        if call.session_id is None or (call.cache_read_tokens + call.cache_write_5m_tokens
                                       + call.cache_write_1h_tokens + call.input_tokens) == 0:
            continue
        out.setdefault(call.chain, []).append(call)
    for chain in out.values():
        chain.sort(key=lambda c: (c.started_ts, c.call_uid))
    return out


def _chains(rows: Iterable[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """:func:`chains` of calls as tuples."""
    out: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for row in rows:
        if row[_SESSION] is None or (row[_READ] + row[_W5] + row[_W1] + row[_INPUT]) == 0:
            continue
        key = (row[_SESSION], row[_AGENT], row[_KIND])
        chain = out.get(key)
        if chain is None:
            out[key] = [row]
        else:
            chain.append(row)
    for chain in out.values():
        chain.sort(key=lambda r: (r[_TS], r[_UID]))
    return list(out.values())


def _keys(row: tuple[Any, ...]) -> tuple[str | None, str | None, int | None]:
    if row[_KEY]:
        return _read_key(row[_KEY])
    return row[_TOOLS], row[_SYSTEM], row[_TTL]


def _cause(prev: tuple[Any, ...], cur: tuple[Any, ...]) -> tuple[str, int | None, int | None]:
    """(cause, message index, minutes idle) of a re-write of ``prev``'s cache by ``cur``."""
    change = cur[_CHANGE]
    if change:
        kind, _, index = change.partition(":")
        if kind in ("model", "tools", "system"):
            return kind, None, None
        if kind == "message":
            return "message", int(index) if index.isdigit() else None, None
    if prev[_MODEL] != cur[_MODEL]:
        return "model", None, None
    prev_tools, prev_system, prev_ttl = _keys(prev)
    cur_tools, cur_system, _ = _keys(cur)
    if prev_tools and cur_tools and prev_tools != cur_tools:
        return "tools", None, None
    if prev_system and cur_system and prev_system != cur_system:
        return "system", None, None
    idle = cur[_TS] - prev[_TS]
    lifetime = prev_ttl or (TTL_5M_S if prev[_W5] or not prev[_W1] else TTL_1H_S)
    if idle >= lifetime:
        return "ttl", None, int(idle // 60)
    return "unknown", None, None


def account(calls: Iterable[CacheCall], pricer: Pricer, now: float) -> Accounting:
    """Every loss of these calls (see the module docstring); ``now`` decides which writes
    are still pending."""
    rows = [(*call._values(), call) for call in calls]
    return account_rows(rows, pricer, now, lambda row: row[-1])


def account_rows(rows: Iterable[tuple[Any, ...]], pricer: Pricer, now: float,
                 make: Callable[[tuple[Any, ...]], CacheCall] | None = None) -> Accounting:
    """:func:`account` of calls as tuples in :class:`CacheCall`'s field order (as
    ``store.wastememo`` reads them); ``make(row)`` is the call a loss names (by default
    ``CacheCall._make(row)``): only the calls with a loss or a pending write become
    objects."""
    made: dict[int, CacheCall] = {}

    def call_of(row: tuple[Any, ...]) -> CacheCall:
        call = made.get(id(row))
        if call is None:
            call = made[id(row)] = make(row) if make is not None else CacheCall._make(row)
        return call

    losses: list[Loss] = []
    pending: list[Pending] = []
    make_loss, make_pending, saving = Loss._make, Pending._make, pricer.saving
    for chain in _chains(rows):
        rewrote: dict[str, tuple[int, int]] = {}
        prev = None
        prev_cached = 0
        for cur in chain:
            r5 = r1 = 0
            read, w1 = cur[_READ], cur[_W1]
            write = cur[_W5] + w1
            if prev is not None and write:
                lost = min(prev_cached - read, write)
                if lost > 0:
                    r1 = min(lost, w1)
                    r5 = lost - r1
                    cause, message, idle = _cause(prev, cur)
                    call = call_of(cur)
                    losses.append(make_loss((call, REWRITE, cause, r5, r1,
                                             saving(call, t5=r5, t1=r1, instead="read"),
                                             message, idle)))
            rewrote[cur[_UID]] = (r5, r1)
            prev, prev_cached = cur, read + write
        last = len(chain) - 1
        for index, cur in enumerate(chain):
            r5, r1 = rewrote[cur[_UID]]
            w5, w1 = cur[_W5], cur[_W1]
            fresh5, fresh1 = w5 - r5, w1 - r1
            if fresh5 + fresh1 <= 0:
                continue
            if index == last:
                unread5, unread1 = fresh5, fresh1
            else:
                nxt = chain[index + 1]
                read = cur[_READ]
                read_of_write = max(0, min(nxt[_READ], read + w5 + w1) - read)
                unread = w5 + w1 - read_of_write
                taken = sum(rewrote[nxt[_UID]])  # re-written by the next call: its loss
                left = max(0, min(fresh5 + fresh1, unread - taken))
                unread5 = min(left, fresh5)  # the tail of a prefix: 5-minute part first
                unread1 = left - unread5
            expired5 = unread5 if now >= cur[_TS] + TTL_5M_S else 0
            expired1 = unread1 if now >= cur[_TS] + TTL_1H_S else 0
            if unread5 + unread1 - expired5 - expired1 > 0:
                pending.append(make_pending((call_of(cur),
                                             unread5 + unread1 - expired5 - expired1)))
            if expired5 + expired1 > 0:
                call = call_of(cur)
                losses.append(make_loss((call, NEVER_READ, NEVER_READ, expired5, expired1,
                                         saving(call, t5=expired5, t1=expired1,
                                                instead="input"), None, None)))
    losses.sort(key=lambda loss: (loss.call.started_ts, loss.call.call_uid, loss.kind != REWRITE))
    return Accounting(tuple(losses), tuple(pending))


def in_range(accounting: Accounting, since: float | None, until: float | None) -> Accounting:
    """The losses (and pending writes) of calls started in [since, until)."""

    def inside(call: CacheCall) -> bool:
        return ((since is None or call.started_ts >= since)
                and (until is None or call.started_ts < until))

    return accounting._replace(
        losses=tuple(x for x in accounting.losses if inside(x.call)),
        pending=tuple(x for x in accounting.pending if inside(x.call)))


def group(losses: Sequence[Loss], key: str) -> dict[Any, list[Loss]]:
    """Losses by ``cause``, ``project`` or ``session``."""
    out: dict[Any, list[Loss]] = {}
    for loss in losses:
        value = loss.cause if key == "cause" else getattr(loss.call, f"{key}_id"
                                                          if key == "session" else key)
        out.setdefault(value, []).append(loss)
    return out
