"""``ccmeter waste`` as rows: the losses of :mod:`ccmeter.waste` over a period, grouped by
cause, project, session or day, or one session turn by turn; and a session's waste so far
for the status line and ``watch``. Reads the store; renders nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ccmeter import store, waste
from ccmeter.record import Record

if TYPE_CHECKING:
    from ccmeter.pricing import Catalog

GROUPS = ("cause", "project", "session", "day")
#: Calls this far either side of the period are read too: a call's previous call (what it
#: may have re-written) and next call (what may have read its write) can lie outside it.
MARGIN_S = 2 * waste.TTL_1H_S


class WasteFilters(Record):
    since: float | None = None
    until: float | None = None
    project: str | None = None
    session_id: str | None = None


class WasteReport(Record):
    group_by: str | None
    filters: WasteFilters
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    spend: dict[str, Any]
    pending_tokens: int
    catalog_version: str
    losses: list[waste.Loss]


def _accounting(db: Any, flt: WasteFilters, catalog: Catalog, now: float) -> waste.Accounting:
    if flt.session_id is not None:
        rows = store.session_cache_calls(db, flt.session_id)
    else:
        start = (flt.since if flt.since is not None else 0.0) - MARGIN_S
        end = (flt.until if flt.until is not None else now) + MARGIN_S
        rows = store.cache_calls(db, start, end)
    calls = [waste.CacheCall.from_row(row) for row in rows]
    found = waste.account(calls, waste.Pricer(catalog), now)
    found = waste.in_range(found, flt.since, flt.until)
    if flt.project is not None:
        found = waste.Accounting(
            tuple(x for x in found.losses if x.call.project == flt.project),
            tuple(x for x in found.pending if x.call.project == flt.project))
    return found


def _sum(losses: Sequence[waste.Loss]) -> dict[str, Any]:
    priced = [x.waste_picousd for x in losses if x.waste_picousd is not None]
    rewrites = [x for x in losses if x.kind == waste.REWRITE]
    return {
        "calls": len({x.call.call_uid for x in losses}),
        "rewrite_tokens": sum(x.tokens for x in rewrites),
        "never_read_tokens": sum(x.tokens for x in losses if x.kind == waste.NEVER_READ),
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
    for group_by in group_bys:
        if group_by is not None and group_by not in GROUPS:
            raise ValueError(f"--by {group_by}: one of {', '.join(GROUPS)}")
    start = flt.since if flt.since is not None else 0.0
    end = flt.until if flt.until is not None else now + 1
    summed = None
    if flt.session_id is None and None not in group_bys:
        from ccmeter import wastememo

        summed = wastememo.account(db, [g for g in group_bys if g is not None], flt.since,
                                   flt.until, flt.project, catalog, now, MARGIN_S)
    spend = store.spend(db, start, end, flt.project, flt.session_id)
    if summed is not None:
        return [_from_sums(summed, group_by, flt, catalog, spend) for group_by in group_bys]
    found = _accounting(db, flt, catalog, now)
    return [_grouped(found, group_by, flt, catalog, spend) for group_by in group_bys]


def warm(db: Any, catalog: Catalog, now: float) -> None:
    """Fill the waste memo with every finished session (what the dashboard does at start:
    the waste page over any range then reads sums instead of a year of calls)."""
    from ccmeter import wastememo

    wastememo.account(db, ["cause"], None, None, None, catalog, now, MARGIN_S)


def _from_sums(summed: Any, group_by: str | None, flt: WasteFilters, catalog: Catalog,
               spend: dict[str, Any]) -> WasteReport:
    """A grouped report from :func:`ccmeter.wastememo.account`'s sums (``losses`` is left
    empty: the memo keeps sums, not each loss)."""
    from ccmeter.wastememo import as_row

    assert group_by is not None
    rows = [{group_by: key, **as_row(sums)} for key, sums in summed.sums[group_by].items()]
    if group_by == "day":
        rows.sort(key=lambda r: r["day"])
    else:
        rows.sort(key=lambda r: (-(r["waste"] or 0), str(r[group_by])))
    total = summed.sums["total"].get(None)
    totals = as_row(total) if total is not None else _sum([])
    return WasteReport(group_by, flt, rows, totals, spend, summed.pending, catalog.version,
                       [])


def _grouped(found: waste.Accounting, group_by: str | None, flt: WasteFilters,
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
        groups: dict[Any, list[waste.Loss]] = {}
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


def session_waste(db: Any, session_id: str, catalog: Catalog, now: float) -> int | None:
    """A session's waste so far in picodollars (None: none of it priced, 0: nothing lost)."""
    rows = store.session_cache_calls(db, session_id)
    found = waste.account([waste.CacheCall.from_row(r) for r in rows],
                          waste.Pricer(catalog), now)
    if not found.losses:
        return 0
    priced = [x.waste_picousd for x in found.losses if x.waste_picousd is not None]
    return sum(priced) if priced else None


def session_findings(db: Any, session_id: str, cfg: Any, now: float
                     ) -> tuple[int | None, list[str]]:
    """For the status line and ``watch``: (the session's cache waste so far in picodollars,
    None when none of it is priced; the loop guard's notes: ``⚠ loop: Read ×6`` when it
    repeats a tool call at the warning count or more, ``⚠ spend 8× its norm`` when its last
    minutes cost far more than its average, :func:`ccmeter.loops.rate_alarm`)."""
    from ccmeter import loops

    lost = session_waste(db, session_id, _catalog(cfg), now)
    notes = []
    latest = store.latest_repeat(db, session_id)
    limit = _loop_limit(cfg)
    warn_at = min(loops.DEFAULT_WARN_AT, limit) if limit else loops.DEFAULT_WARN_AT
    if latest and latest["tool_repeats"] >= warn_at:
        name = str(latest["tool_call_fp"]).rpartition(":")[0]
        cap = f"/{limit}" if limit else ""
        notes.append(f"{'⛔' if limit and latest['tool_repeats'] >= limit else '⚠'} loop: "
                     f"{name} ×{latest['tool_repeats']}{cap}")
    rate = store.session_rate(db, session_id, now - loops.RATE_WINDOW_S)
    factor = loops.rate_alarm(rate["first_ts"], rate["recent"], rate["before"], now)
    if factor is not None:
        notes.append("⚠ spend " + (f"{factor:.0f}× its norm" if factor != float("inf")
                                   else "jumped"))
    return lost, notes


def waste_note(lost: int | None, places: int | None = None) -> str | None:
    """``cache waste $0.03`` (at ``places`` decimals), ``cache waste unpriced``, or None
    when nothing was lost."""
    from ccmeter import money

    if lost is None:
        return "cache waste unpriced"
    return f"cache waste {money.format_usd(lost, places)}" if lost else None


def session_notes(db: Any, session_id: str, cfg: Any, now: float) -> list[str]:
    """:func:`session_findings` as the status line shows them: the waste first."""
    lost, notes = session_findings(db, session_id, cfg, now)
    note = waste_note(lost)
    return [note, *notes] if note else notes


def _catalog(cfg: Any) -> Catalog:
    from ccmeter.pricing import Catalog

    catalog = Catalog.bundled()
    overrides = cfg.get("prices") if hasattr(cfg, "get") else None
    if overrides:
        # report says what is wrong with [prices]; here the bundled prices do
        with contextlib.suppress(ValueError):
            catalog = catalog.with_overrides(overrides)
    return catalog


def _loop_limit(cfg: Any) -> int | None:
    from ccmeter.caps.policy import parse_loop
    from ccmeter.config import CCMeterError

    table = cfg.get("caps") if hasattr(cfg, "get") else None
    try:
        return parse_loop(table.get("loop")) if isinstance(table, dict) else None
    except CCMeterError:
        return None
