"""``ccmeter waste``'s accounting as it was before the waste memo (main at c5452e5), kept
verbatim where it computes (the SQL, CacheCall.from_row, the pricer, the chains, account,
in_range, the grouping): tests/test_waste_equal.py checks that today's reports are identical
to what this gives, field for field. Only WasteFilters, WasteReport and MARGIN_S come from
ccmeter.wastereport (plain names)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ccmeter.record import Record

if TYPE_CHECKING:
    from ccmeter.pricing import Catalog

from ccmeter.store.db import query
from ccmeter.wastereport import GROUPS, MARGIN_S, WasteFilters, WasteReport

_CACHE_COLUMNS = """call_uid, started_ts, session_id, agent_id, call_kind, project, model,
    provider, input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
    speed, service_tier, inference_geo, cost_picousd, cache_key_json, cache_change"""

#: Every call that may hold or use a cache in [:start, :end) (the caller widens the range by
#: the longest cache lifetime on both sides, so each call's neighbours are there too).
CACHE_CALLS_SQL = f"""
SELECT {_CACHE_COLUMNS} FROM api_calls
WHERE started_ts >= :start AND started_ts < :end AND session_id IS NOT NULL
  AND status != 'blocked'
ORDER BY started_ts
"""

#: One session's calls (``ccmeter waste --session``, the status line, ``watch``).
SESSION_CACHE_CALLS_SQL = f"""
SELECT {_CACHE_COLUMNS} FROM api_calls
WHERE session_id = :session AND status != 'blocked'
ORDER BY started_ts
"""

#: What the same filter spends, as ``ccmeter report`` sums it (waste is a part of it).
SPEND_SQL = """
SELECT COUNT(*) AS calls, COALESCE(SUM(cost_picousd), 0) AS cost_picousd,
       SUM(cost_picousd IS NULL) AS unpriced_calls
FROM api_calls
WHERE started_ts >= :start AND started_ts < :end
  AND (:project IS NULL OR project = :project)
  AND (:session IS NULL OR session_id = :session)
"""


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
        key = row.get("cache_key_json")
        tools = system = None
        ttl = None
        if key:
            try:
                doc = json.loads(key)
                tools, system = doc.get("tools"), doc.get("system")
                ttls = [TTL_1H_S if b.get("ttl") == "1h" else TTL_5M_S
                        for b in doc.get("breakpoints") or []]
                ttl = min(ttls) if ttls else None
            except (ValueError, AttributeError, TypeError):
                pass
        return cls(
            call_uid=row["call_uid"], started_ts=row["started_ts"],
            session_id=row.get("session_id"), agent_id=row.get("agent_id"),
            call_kind=row.get("call_kind"), project=row.get("project"), model=row.get("model"),
            input_tokens=row.get("input_tokens") or 0,
            cache_write_5m_tokens=row.get("cache_write_5m_tokens") or 0,
            cache_write_1h_tokens=row.get("cache_write_1h_tokens") or 0,
            cache_read_tokens=row.get("cache_read_tokens") or 0,
            cache_change=row.get("cache_change"), shortest_ttl_s=ttl, tools_fp=tools,
            system_fp=system, provider=row.get("provider") or "anthropic",
            speed=row.get("speed"), service_tier=row.get("service_tier"),
            inference_geo=row.get("inference_geo"), cost_picousd=row.get("cost_picousd"),
        )


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
        actual = self._cost(call, w5, w1, read, plain)
        if instead == "read":
            other = self._cost(call, w5 - t5, w1 - t1, read + t5 + t1, plain)
        else:
            other = self._cost(call, w5 - t5, w1 - t1, read, plain + t5 + t1)
        if actual is None or other is None:
            return None
        return max(0, actual - other)


def chains(calls: Iterable[CacheCall]) -> dict[tuple[Any, ...], list[CacheCall]]:
    """Calls with cache usage by chain, each in order. Calls without a session are left out
    (nothing says which conversation they continue)."""
    out: dict[tuple[Any, ...], list[CacheCall]] = {}
    for call in calls:
        if call.session_id is None or (call.cached + call.input_tokens) == 0:
            continue
        out.setdefault(call.chain, []).append(call)
    for chain in out.values():
        chain.sort(key=lambda c: (c.started_ts, c.call_uid))
    return out


def _cause(prev: CacheCall, cur: CacheCall) -> tuple[str, int | None, int | None]:
    """(cause, message index, minutes idle) of a re-write of ``prev``'s cache by ``cur``."""
    change = cur.cache_change
    if change:
        kind, _, index = change.partition(":")
        if kind in ("model", "tools", "system"):
            return kind, None, None
        if kind == "message":
            return "message", int(index) if index.isdigit() else None, None
    if prev.model != cur.model:
        return "model", None, None
    if prev.tools_fp and cur.tools_fp and prev.tools_fp != cur.tools_fp:
        return "tools", None, None
    if prev.system_fp and cur.system_fp and prev.system_fp != cur.system_fp:
        return "system", None, None
    idle = cur.started_ts - prev.started_ts
    lifetime = prev.shortest_ttl_s or (TTL_5M_S if prev.cache_write_5m_tokens or not
                                       prev.cache_write_1h_tokens else TTL_1H_S)
    if idle >= lifetime:
        return "ttl", None, int(idle // 60)
    return "unknown", None, None


def account(calls: Iterable[CacheCall], pricer: Pricer, now: float) -> Accounting:
    """Every loss of these calls (see the module docstring); ``now`` decides which writes
    are still pending."""
    losses: list[Loss] = []
    pending: list[Pending] = []
    for chain in chains(calls).values():
        rewrote: dict[str, tuple[int, int]] = {}
        for index, cur in enumerate(chain):
            prev = chain[index - 1] if index else None
            r5 = r1 = 0
            if prev is not None and cur.write:
                lost = min(prev.cached - cur.cache_read_tokens, cur.write)
                if lost > 0:
                    r1 = min(lost, cur.cache_write_1h_tokens)
                    r5 = lost - r1
                    cause, message, idle = _cause(prev, cur)
                    losses.append(Loss(cur, REWRITE, cause, r5, r1,
                                       pricer.saving(cur, t5=r5, t1=r1, instead="read"),
                                       message, idle))
            rewrote[cur.call_uid] = (r5, r1)
        for index, cur in enumerate(chain):
            r5, r1 = rewrote[cur.call_uid]
            fresh5, fresh1 = cur.cache_write_5m_tokens - r5, cur.cache_write_1h_tokens - r1
            if fresh5 + fresh1 <= 0:
                continue
            nxt = chain[index + 1] if index + 1 < len(chain) else None
            if nxt is None:
                unread5, unread1 = fresh5, fresh1
            else:
                read_of_write = max(0, min(nxt.cache_read_tokens, cur.cached)
                                    - cur.cache_read_tokens)
                unread = cur.write - read_of_write
                taken = sum(rewrote[nxt.call_uid])  # re-written by the next call: its loss
                left = max(0, min(fresh5 + fresh1, unread - taken))
                unread5 = min(left, fresh5)  # the tail of a prefix: 5-minute part first
                unread1 = left - unread5
            expired5 = unread5 if now >= cur.started_ts + TTL_5M_S else 0
            expired1 = unread1 if now >= cur.started_ts + TTL_1H_S else 0
            if unread5 + unread1 - expired5 - expired1 > 0:
                pending.append(Pending(cur, unread5 + unread1 - expired5 - expired1))
            if expired5 + expired1 > 0:
                losses.append(Loss(cur, NEVER_READ, NEVER_READ, expired5, expired1,
                                   pricer.saving(cur, t5=expired5, t1=expired1,
                                                 instead="input")))
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


def _accounting(db: Any, flt: WasteFilters, catalog: Catalog, now: float) -> Accounting:
    if flt.session_id is not None:
        rows = query(db, SESSION_CACHE_CALLS_SQL, {"session": flt.session_id})
    else:
        start = (flt.since if flt.since is not None else 0.0) - MARGIN_S
        end = (flt.until if flt.until is not None else now) + MARGIN_S
        rows = query(db, CACHE_CALLS_SQL, {"start": start, "end": end})
    calls = [CacheCall.from_row(row) for row in rows]
    found = account(calls, Pricer(catalog), now)
    found = in_range(found, flt.since, flt.until)
    if flt.project is not None:
        found = Accounting(
            tuple(x for x in found.losses if x.call.project == flt.project),
            tuple(x for x in found.pending if x.call.project == flt.project))
    return found


def _sum(losses: Sequence[Loss]) -> dict[str, Any]:
    priced = [x.waste_picousd for x in losses if x.waste_picousd is not None]
    rewrites = [x for x in losses if x.kind == REWRITE]
    return {
        "calls": len({x.call.call_uid for x in losses}),
        "rewrite_tokens": sum(x.tokens for x in rewrites),
        "never_read_tokens": sum(x.tokens for x in losses if x.kind == NEVER_READ),
        # unpriced losses (a model without a price) make the sum unknown only when
        # nothing in it is priced; they are counted beside it
        "waste": sum(priced) if priced or not losses else None,
        "unpriced": len(losses) - len(priced),
    }


def _day(ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d")


def build(db: Any, group_by: str | None, flt: WasteFilters, catalog: Catalog,
          now: float) -> WasteReport:
    """The report: grouped rows (``group_by`` in :data:`GROUPS`), or with ``group_by`` None
    one row per loss (a session turn by turn)."""
    return build_many(db, [group_by], flt, catalog, now)[0]


def build_many(db: Any, group_bys: Sequence[str | None], flt: WasteFilters, catalog: Catalog,
               now: float) -> list[WasteReport]:
    """The report grouped several ways, from one accounting of the calls (the dashboard's
    waste page shows it by cause and by session)."""
    found = _accounting(db, flt, catalog, now)
    start = flt.since if flt.since is not None else 0.0
    end = flt.until if flt.until is not None else now + 1
    spend = query(db, SPEND_SQL, {"start": start, "end": end, "project": flt.project,
                                   "session": flt.session_id})[0]
    return [_grouped(found, group_by, flt, catalog, spend) for group_by in group_bys]


def _grouped(found: Accounting, group_by: str | None, flt: WasteFilters,
             catalog: Catalog, spend: dict[str, Any]) -> WasteReport:
    losses = list(found.losses)
    rows: list[dict[str, Any]] = []
    if group_by is None:
        for loss in losses:
            rows.append({
                "started_at": loss.call.started_ts, "call_uid": loss.call.call_uid,
                "session": loss.call.session_id, "project": loss.call.project,
                "model": loss.call.model, "agent_id": loss.call.agent_id,
                "kind": loss.kind, "cause": loss.cause, "detail": loss.detail,
                "message_index": loss.message_index, "idle_minutes": loss.idle_minutes,
                "tokens": loss.tokens, "tokens_5m": loss.tokens_5m,
                "tokens_1h": loss.tokens_1h, "waste": loss.waste_picousd,
            })
    else:
        if group_by not in GROUPS:
            raise ValueError(f"--by {group_by}: one of {', '.join(GROUPS)}")
        groups: dict[Any, list[Loss]] = {}
        for loss in losses:
            if group_by == "cause":
                key: Any = loss.cause
            elif group_by == "project":
                key = loss.call.project
            elif group_by == "session":
                key = loss.call.session_id
            else:
                key = _day(loss.call.started_ts)
            groups.setdefault(key, []).append(loss)
        for key, items in groups.items():
            rows.append({group_by: key, **_sum(items)})
        if group_by == "day":
            rows.sort(key=lambda r: r["day"])
        else:
            rows.sort(key=lambda r: (-(r["waste"] or 0), str(r[group_by])))
    return WasteReport(group_by, flt, rows, _sum(losses), spend,
                       sum(p.tokens for p in found.pending), catalog.version, losses)
