"""The forecast of a call's input-side cost (ccmeter.forecast) and the caps that need no
spend sums (ccmeter.caps.callcaps): pure, checked against the stand-in's prompt cache
(tests/standin_cache.py, the API's semantics with a word per token) and by hand."""

from __future__ import annotations

import random
import statistics

import pytest
from standin_cache import Clock, PromptCache

from ccmeter import cachekeys, forecast, pricing
from ccmeter.caps.callcaps import PlanSeen, per_call_refusal
from ccmeter.caps.policy import Policy, parse_policy
from ccmeter.config import CCMeterError
from ccmeter.usage import TokenCounts

EPHEMERAL = {"type": "ephemeral"}
T0 = 1_900_000_000.0


def words(n: int, word: str = "w") -> str:
    return " ".join([word] * n)


def request(turns: list[str], *, model: str = "claude-opus-4-8", system_words: int = 2000,
            ttl: str | None = None) -> dict:
    """Claude Code's shape: tools, a cached system block, the breakpoint on the last turn."""
    marker = dict(EPHEMERAL, ttl=ttl) if ttl else EPHEMERAL
    messages = [{"role": "user" if i % 2 == 0 else "assistant",
                 "content": [{"type": "text", "text": text}]} for i, text in enumerate(turns)]
    messages[-1]["content"][-1]["cache_control"] = marker
    return {"model": model, "tools": [{"name": "Read", "description": words(1000)}],
            "system": [{"type": "text", "text": words(system_words), "cache_control": marker}],
            "messages": messages}


class Conversation:
    """One chain of calls: forecast, answer from the stand-in's cache, learn."""

    def __init__(self, cache: PromptCache, forecaster: forecast.Forecaster,
                 chain: tuple = ("s1", None, "main")) -> None:
        self.cache, self.forecaster, self.chain = cache, forecaster, chain

    def call(self, body: dict) -> tuple[forecast.Estimate, TokenCounts]:
        shape = cachekeys.shape(body)
        now = self.cache.clock.now()
        estimate = self.forecaster.estimate(shape, self.chain, now)
        used = self.cache.usage(body)
        actual = TokenCounts(used.input_tokens, used.cache_write_5m, used.cache_write_1h,
                                 used.cache_read)
        self.forecaster.learn(shape, self.chain, now, actual)
        return estimate, actual


def split(e) -> tuple[int, int, int, int]:
    return (e.input_tokens, e.cache_write_5m_tokens, e.cache_write_1h_tokens,
            e.cache_read_tokens)


@pytest.fixture
def talk():
    clock = Clock(start=T0)
    return Conversation(PromptCache(clock), forecast.Forecaster())


def test_a_second_turn_reads_what_the_first_wrote_exactly(talk):
    first, actual = talk.call(request([words(3000)]))
    assert first.first_of_chain and first.cache_read_tokens == 0
    assert split(actual) == (0, 6001, 0, 0)
    talk.cache.clock.advance(30)
    second, actual = talk.call(request([words(3000), words(10), words(500)]))
    assert split(actual) == (0, 510, 0, 6001)
    # the read is the first answer's exact count; only the new 510 words are estimated
    assert second.cache_read_tokens == 6001
    assert second.cache_write_5m_tokens == pytest.approx(510, rel=0.25)
    assert forecast.reason(second) == (
        f"{second.uncached_tokens:,} uncached tokens, 6,001 read from the cache")


def test_an_expired_cache_is_forecast_as_a_rewrite_and_says_when_it_expired(talk):
    talk.call(request([words(3000)]))
    talk.cache.clock.advance(300 + 42 * 60)  # five minutes, then 42 more
    turns = [words(3000), words(10), words(500)]
    estimate, actual = talk.call(request(turns))
    assert split(actual) == (0, 6511, 0, 0)  # the API wrote it all again
    assert estimate.cache_read_tokens == 0
    assert estimate.cache_write_5m_tokens == pytest.approx(6511, rel=0.03)
    assert estimate.expired_ago_s == pytest.approx(42 * 60)
    assert forecast.reason(estimate).endswith(
        "uncached tokens: the cache expired 42 minutes ago")


def test_a_one_hour_breakpoint_outlives_five_minutes(talk):
    talk.call(request([words(3000)], ttl="1h"))
    talk.cache.clock.advance(20 * 60)
    estimate, actual = talk.call(request([words(3000), words(10), words(500)], ttl="1h"))
    assert split(actual) == (0, 0, 510, 6001)
    assert estimate.cache_read_tokens == 6001 and estimate.cache_write_1h_tokens > 0


def test_a_changed_system_prompt_is_named(talk):
    talk.call(request([words(3000)]))
    body = request([words(3000), words(10), words(500)])
    body["system"][0]["text"] = words(2000, "v")
    shape = cachekeys.shape(body)
    previous = cachekeys.shape(request([words(3000)]))
    estimate = talk.forecaster.estimate(shape, talk.chain, talk.cache.clock.now())
    # the tool list is a prefix of both, but no breakpoint wrote it alone: nothing to read
    assert estimate.cache_read_tokens == 0 == talk.cache.usage(body).cache_read
    estimate = forecast.Estimate(6000, 0, 0, 0)
    assert forecast.reason(estimate, shape.change_from(previous)) == (
        "6,000 uncached tokens: the system prompt changed, so nothing cached is reused")


def test_a_prefix_too_short_to_cache_is_learned():
    forecaster = forecast.Forecaster()
    body = request([words(20)], system_words=30)
    shape = cachekeys.shape(body)
    # the API wrote nothing: below its minimum cacheable length for this model
    forecaster.learn(shape, "c", T0, TokenCounts(1051, 0, 0, 0))
    again = forecaster.estimate(cachekeys.shape(request([words(15)], system_words=30)),
                                "c", T0 + 5)
    assert (again.cache_write_5m_tokens, again.cache_read_tokens) == (0, 0)
    assert again.input_tokens == pytest.approx(1046, abs=10)
    longer = forecaster.estimate(cachekeys.shape(request([words(900)], system_words=30)),
                                 "c", T0 + 5)
    assert longer.cache_write_5m_tokens > 0  # longer than any seen uncached: it may be cached


def test_no_breakpoint_means_no_caching():
    body = {"model": "m", "messages": [{"role": "user", "content": words(100)}]}
    estimate = forecast.Forecaster().estimate(cachekeys.shape(body), "c", T0)
    assert estimate.no_breakpoint and estimate.cache_write_5m_tokens == 0
    assert forecast.reason(estimate).endswith("the request asks for no caching")


def test_a_long_claude_code_like_session_forecasts_within_a_few_percent():
    """Tool loops with pauses (some past the 5-minute TTL), three sessions sharing the tool
    list and system prompt: the median error of the forecast cost is small."""
    rnd = random.Random(7)
    vocabulary = ["def", "return", "self", "import", "value", "the", "a", "of", "to", "{", "}",
                  "(", ")", "==", "!=", "0", "1", "42"]

    def text(n: int) -> str:
        return " ".join(rnd.choice(vocabulary) for _ in range(n))

    clock = Clock(start=T0)
    cache, forecaster = PromptCache(clock), forecast.Forecaster()
    tools = [{"name": f"T{i}", "description": text(300)} for i in range(12)]
    system = [{"type": "text", "text": text(3000), "cache_control": EPHEMERAL}]
    prices = pricing.Catalog.bundled().for_endpoint()
    errors = []
    for session in range(3):
        talk = Conversation(cache, forecaster, (f"s{session}", None, "main"))
        messages: list[dict] = []
        for _turn in range(12):
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": text(rnd.randint(20,
                                                                                      3000))}]})
            sent = [dict(m) for m in messages]
            sent[-1] = {"role": "user", "content": [dict(sent[-1]["content"][0],
                                                         cache_control=EPHEMERAL)]}
            body = {"model": "claude-sonnet-4-6", "tools": tools, "system": system,
                    "messages": sent}
            estimate, actual = talk.call(body)
            at = clock.now()
            want = forecast.price(prices, "claude-sonnet-4-6", forecast.Estimate(
                actual.input_tokens, actual.cache_write_5m_tokens, 0, actual.cache_read_tokens),
                at)
            got = forecast.price(prices, "claude-sonnet-4-6", estimate, at)
            errors.append(abs(got - want) / want)
            messages.append({"role": "assistant", "content": [
                {"type": "text", "text": text(rnd.randint(10, 300))},
                {"type": "tool_use", "id": "t", "name": "Bash", "input": {"c": text(5)}}]})
            clock.advance(rnd.choice([3, 20, 60, 400]))
    errors.sort()
    assert statistics.median(errors) < 0.02
    assert errors[int(0.9 * len(errors))] < 0.10


def test_the_forecast_is_priced_with_the_catalogs_rules():
    prices = pricing.Catalog.bundled().for_endpoint()
    # Opus 4.8 per MTok: input $5, 5-minute write $6.25, 1-hour write $10, read $0.50
    estimate = forecast.Estimate(1000, 2000, 3000, 4000)
    assert forecast.price(prices, "claude-opus-4-8", estimate, T0) == (
        1000 * 5 + 2000 * 6.25 + 3000 * 10 + 4000 * 0.5) * 10**6
    assert forecast.price(prices, "no-such-model", estimate, T0) is None


# --- the per-call cap and the plan caps ---------------------------------------------------


def test_the_per_call_cap_refuses_above_its_limit_with_the_reason_and_the_way_through():
    policy = parse_policy({"caps": {"per_call": "2", "projects": {"big": {"per_call": 5}}}})
    assert policy.forecasts_first and policy.needs_request_details
    assert per_call_refusal(policy, project=None, session_id="s1",
                            forecast_picousd=2 * 10**12, note=None) is None  # at it: goes
    text = per_call_refusal(policy, project="web", session_id="abc123",
                            forecast_picousd=2_310_000_000_000,
                            note="184k uncached tokens: the cache expired 42 minutes ago")
    assert text == ("ccmeter: per-call cap $2.00: this call would cost about $2.31 before any "
                    "output: 184k uncached tokens: the cache expired 42 minutes ago. To let it "
                    "through: ccmeter caps pause --session abc123 --for 1h and resume it "
                    "(claude --resume abc123), or raise the cap: ccmeter caps set --per-call N")
    assert per_call_refusal(policy, project="big", session_id=None,
                            forecast_picousd=4 * 10**12, note=None) is None
    big = per_call_refusal(policy, project="big", session_id=None,
                           forecast_picousd=6 * 10**12, note=None)
    assert big is not None and "per-call cap for project big $5.00" in big
    assert big.endswith("ccmeter caps pause --for 10m, or raise the cap: "
                        "ccmeter caps set --project big --per-call N")
    # an unpriced model has no forecast: it is let through, never refused on a guess
    assert per_call_refusal(policy, project=None, session_id="s", forecast_picousd=None,
                            note=None) is None


@pytest.mark.parametrize("bad", [0, "-1", "abc"])
def test_a_bad_per_call_cap_is_one_line(bad):
    with pytest.raises(CCMeterError, match="per_call"):
        parse_policy({"caps": {"per_call": bad}})


def test_plan_caps_refuse_until_the_window_resets_and_warn_once():
    policy = parse_policy({"caps": {"plan_5h": 90, "plan_warn_at": "75%"}})
    assert policy.plan_caps() == (("5h", 0.9),) and policy.plan_warn_at == 0.75
    assert not policy.needs_request_details  # needs nothing from the request body
    seen = PlanSeen()
    reset = T0 + 3600
    seen.saw({"started_ts": T0, "plan_5h_utilization": 0.5, "plan_5h_reset": reset})
    assert seen.refusal(policy, T0) is None and seen.warning(policy, T0) is None
    seen.saw({"started_ts": T0 + 10, "plan_5h_utilization": 0.8, "plan_5h_reset": reset})
    assert seen.warning(policy, T0 + 10) == (
        "plan 5-hour window at 80% (warning at 75%); it resets in 1h0m (see: ccmeter plan)")
    assert seen.warning(policy, T0 + 11) is None  # once per window
    seen.saw({"started_ts": T0 + 5, "plan_5h_utilization": 0.95, "plan_5h_reset": reset})
    assert seen.refusal(policy, T0 + 20) is None  # an older answer arriving late is not news
    seen.saw({"started_ts": T0 + 20, "plan_5h_utilization": 0.91, "plan_5h_reset": reset})
    assert seen.refusal(policy, T0 + 20) == (
        "ccmeter: plan 5-hour window at 91%, cap 90%; it resets in 1h0m. To go on: "
        "ccmeter caps pause --for 1h, or ccmeter caps unset plan_5h")
    assert seen.refusal(policy, reset + 1) is None  # reset: calls go again
    assert seen.refusal(Policy(), T0 + 20) is None


@pytest.mark.parametrize("bad", [0, 101, "lots", True])
def test_a_bad_plan_cap_is_one_line(bad):
    with pytest.raises(CCMeterError, match="plan_5h must be a percent"):
        parse_policy({"caps": {"plan_5h": bad}})


def test_a_plan_cap_written_as_a_fraction_is_not_read_as_one_percent():
    with pytest.raises(CCMeterError, match=r"is a percent: 0.9 reads as 0.9 %; for 90% write 90"):
        parse_policy({"caps": {"plan_5h": 0.9}})
    assert parse_policy({"caps": {"plan_5h": "0.9%"}}).plan_5h == pytest.approx(0.009)
    assert parse_policy({"caps": {"plan_7d": 95}}).plan_7d == pytest.approx(0.95)


def test_a_new_forecaster_seeds_from_the_rows_earlier_proxies_wrote(talk):
    body = request([words(3000)])
    shape = cachekeys.shape(body)
    row = {"started_ts": T0, "cache_key_json": shape.key_json(), "input_tokens": 0,
           "cache_write_5m_tokens": 6001, "cache_write_1h_tokens": 0, "cache_read_tokens": 0}
    fresh = forecast.Forecaster()
    assert fresh.seed([row, {"started_ts": T0, "cache_key_json": "{not json"}], T0 + 60) == 2
    later = cachekeys.shape(request([words(3000), words(10), words(500)]))
    estimate = fresh.estimate(later, ("s1", None, "main"), T0 + 60)
    assert estimate.cache_read_tokens == 6001  # exact: the row's read + written
    assert forecast.Forecaster().seed([row], T0 + 301) == 0  # its 5 minutes ran out
