"""The waste accounting (ccmeter.waste) on hand-made calls, priced by hand.

Opus 4.8 per MTok: input $5, 5-minute write $6.25, 1-hour write $10, read $0.50.
Haiku 5.5 above 100K prompt tokens: every rate 5x (the long-context row).
"""

from __future__ import annotations

from ccmeter import waste
from ccmeter.pricing import Catalog

T0 = 1_790_000_000.0  # 2026-09-21, in the catalog's current prices
PRICER = waste.Pricer(Catalog.bundled())


def call(uid: str, ts: float, *, read: int = 0, w5: int = 0, w1: int = 0, inp: int = 0,
         model: str = "claude-opus-4-8", session: str = "s", change: str | None = None,
         ttl: int | None = 300, **more) -> waste.CacheCall:
    return waste.CacheCall(uid, T0 + ts, session, None, "main", "proj", model, inp, w5, w1,
                           read, cache_change=change, shortest_ttl_s=ttl, **more)


def account(*calls: waste.CacheCall, now: float = T0 + 10 * 3600) -> waste.Accounting:
    return waste.account(calls, PRICER, now)


def test_a_conversation_that_reads_its_cache_loses_nothing():
    found = account(call("a", 0, w5=10_000), call("b", 30, read=10_000, w5=500),
                    call("c", 60, read=10_500, w5=300), now=T0 + 61)
    assert found.losses == ()
    assert [(p.call.call_uid, p.tokens) for p in found.pending] == [("c", 300)]


def test_rewrite_is_previous_read_plus_write_less_this_read_capped_at_this_write():
    found = account(call("a", 0, read=8_000, w5=2_000), call("b", 30, read=3_000, w5=4_000,
                                                            change="message:4"),
                    call("c", 60, read=7_000, w5=100))
    rewrite = found.losses[0]
    # 8,000 + 2,000 - 3,000 = 7,000, capped at b's write of 4,000
    assert (rewrite.kind, rewrite.cause, rewrite.message_index, rewrite.tokens) == (
        "rewrite", "message", 4, 4_000)
    assert rewrite.waste_picousd == 4_000 * 5_750_000  # x ($6.25 - $0.50)
    assert rewrite.detail == "message 4"


def test_one_hour_part_first_and_its_rate():
    [loss] = account(call("a", 0, w1=5_000, w5=1_000),
                     call("b", 10, w1=4_000, w5=3_000, change="tools"),
                     call("c", 20, read=7_000)).losses
    assert (loss.tokens_1h, loss.tokens_5m) == (4_000, 2_000)
    assert loss.waste_picousd == 4_000 * 9_500_000 + 2_000 * 5_750_000


def test_ttl_needs_the_previous_calls_lifetime_to_have_run_out():
    late = account(call("a", 0, w5=6_000), call("b", 301, w5=6_100),
                   call("c", 320, read=6_100)).losses
    assert [(x.cause, x.idle_minutes, x.tokens) for x in late] == [("ttl", 5, 6_000)]
    early = account(call("a", 0, w5=6_000), call("b", 120, w5=6_100),
                    call("c", 130, read=6_100)).losses
    assert [(x.cause, x.detail) for x in early] == [("unknown", "")]
    hour = account(call("a", 0, w1=6_000, ttl=3600), call("b", 1800, w1=6_100, ttl=3600),
                   call("c", 1810, read=6_100)).losses
    assert [x.cause for x in hour] == ["unknown"]  # 30 minutes is inside a 1-hour lifetime


def test_model_and_fingerprints_without_the_proxys_comparison():
    losses = account(call("a", 0, w5=5_000, tools_fp="t1", system_fp="s1"),
                     call("b", 10, w5=5_000, tools_fp="t2", system_fp="s1"),
                     call("c", 20, w5=5_000, tools_fp="t2", system_fp="s2"),
                     call("d", 30, w5=5_000, tools_fp="t2", system_fp="s2",
                          model="claude-sonnet-4-6"),
                     call("e", 40, read=5_000, model="claude-sonnet-4-6")).losses
    assert [x.cause for x in losses] == ["tools", "system", "model"]
    assert losses[2].waste_picousd == 5_000 * (3_750_000 - 300_000)  # at Sonnet 4.6's rates


def test_never_read_waits_for_the_lifetime_then_costs_write_less_input():
    a = call("a", 0, w5=2_000, w1=1_000)
    pending = account(a, now=T0 + 100)
    assert pending.losses == () and pending.pending[0].tokens == 3_000
    half = account(a, now=T0 + 600)  # the 5-minute part is gone, the 1-hour part may be read
    [loss] = half.losses
    assert (loss.kind, loss.cause, loss.tokens_5m, loss.tokens_1h) == (
        "never_read", "never_read", 2_000, 0)
    assert loss.waste_picousd == 2_000 * 1_250_000  # x ($6.25 - $5)
    assert half.pending[0].tokens == 1_000
    [both] = account(a, now=T0 + 3_700).losses
    assert both.waste_picousd == 2_000 * 1_250_000 + 1_000 * 5_000_000  # 1h: ($10 - $5)


def test_each_token_is_lost_once():
    found = account(call("a", 0, w5=10_000),
                    call("b", 600, w5=10_500),  # re-writes a's 10,000 (ttl) + 500 fresh
                    call("c", 610, read=10_200, w5=0))  # reads all but 300 of b's cache
    kinds = [(x.call.call_uid, x.kind, x.tokens) for x in found.losses]
    # a's write is in b's re-write, not also never read; of b's 500 fresh tokens 300 were
    # never read (c read 10,200 of 10,500)
    assert kinds == [("b", "rewrite", 10_000), ("b", "never_read", 300)]
    total_cost = 10_500 * 6_250_000
    assert found.waste_picousd <= total_cost


def test_chains_are_per_session_agent_and_kind():
    main = call("a", 0, w5=8_000)
    aux = waste.CacheCall("x", T0 + 5, "s", None, "auxiliary", "proj", "claude-opus-4-8",
                          20, 0, 0, 0)
    sub = waste.CacheCall("y", T0 + 6, "s", "agent-1", "subagent", "proj", "claude-opus-4-8",
                          0, 3_000, 0, 0)
    follow = call("b", 10, read=8_000, w5=200)
    found = account(main, aux, sub, follow, call("z", 0, w5=50, session="other"),
                    now=T0 + 20)
    assert found.losses == ()


def test_long_context_and_unpriced_models():
    # Haiku 5.5 over 100K prompt tokens prices every category 5x: the same call with the
    # tokens read instead stays over the threshold, so the rewrite is at the 5x rates
    [loss] = account(call("a", 0, w5=150_000, model="claude-haiku-5-5"),
                     call("b", 10, w5=150_000, model="claude-haiku-5-5", change="system"),
                     call("c", 20, read=150_000, model="claude-haiku-5-5")).losses
    assert loss.waste_picousd == 150_000 * (625_000 - 50_000)
    [unknown] = account(call("a", 0, w5=1_000, model="no-such-model"),
                        call("b", 10, w5=1_000, model="no-such-model", change="tools"),
                        call("c", 20, read=1_000, model="no-such-model")).losses
    assert unknown.waste_picousd is None  # unpriced, never $0
