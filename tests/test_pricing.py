"""Pricing: hand-computed costs for every family and every price dimension.

Rates are USD per million tokens, so each expectation is written as
sum(tokens x rate) / 1,000,000 with the arithmetic beside it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccmeter.pricing import PICO_PER_USD, RATE_NAMES, Catalog, Price
from ccmeter.usage import Hop, TokenCounts, Usage

CAT = Catalog.bundled()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
D = Decimal


def usd(model: str | None, at: datetime = NOW, catalog: Catalog = CAT, **usage) -> Decimal | None:
    return catalog.price(model, Usage(**usage), at).cost_usd


def utc(y: int, m: int, d: int, hh: int = 12, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=UTC)


def raw_catalog() -> dict:
    text = (resources.files("ccmeter") / "data" / "prices.json").read_text(encoding="utf-8")
    return json.loads(text, parse_float=_no_float)


def _no_float(text: str):
    raise AssertionError(f"float {text} in prices.json: rates must be strings")


# The same mixed request priced on every model:
#   1,000 input + 2,000 5m writes + 3,000 1h writes + 40,000 reads + 500 output
# (prompt 46,000: below every long-context threshold).
MIX = dict(
    input_tokens=1_000,
    cache_write_5m_tokens=2_000,
    cache_write_1h_tokens=3_000,
    cache_read_tokens=40_000,
    output_tokens=500,
)

FAMILY_COSTS = [
    # Fable/Mythos 5.2 (8/10/16/0.2/40): 8000+20000+48000+8000+20000 = 104000
    ("claude-fable-5-2", "0.104"),
    ("claude-mythos-5-2", "0.104"),
    # Fable/Mythos 5.1 (10/12.5/20/0.25/50): 10000+25000+60000+10000+25000 = 130000
    ("claude-fable-5-1", "0.13"),
    ("claude-mythos-5-1", "0.13"),
    # Fable/Mythos 5 (10/12.5/20/1/50): 10000+25000+60000+40000+25000 = 160000
    ("claude-fable-5", "0.16"),
    ("claude-mythos-5", "0.16"),
    # Opus 5.5 (4/5/8/0.2/20): 4000+10000+24000+8000+10000 = 56000
    ("claude-opus-5-5", "0.056"),
    # Opus 5 .. 4.5 (5/6.25/10/0.5/25): 5000+12500+30000+20000+12500 = 80000
    ("claude-opus-5", "0.08"),
    ("claude-opus-4-8", "0.08"),
    ("claude-opus-4-7", "0.08"),
    ("claude-opus-4-6", "0.08"),
    ("claude-opus-4-5-20251101", "0.08"),
    # Opus 4.1 / 4 / 3 (15/18.75/30/1.5/75): 15000+37500+90000+60000+37500 = 240000
    ("claude-opus-4-1-20250805", "0.24"),
    ("claude-opus-4-20250514", "0.24"),
    ("claude-3-opus-20240229", "0.24"),
    # Sonnet 5.5 today (2/2.5/4/0.1/10): 2000+5000+12000+4000+5000 = 28000
    ("claude-sonnet-5-5", "0.028"),
    # Sonnet 5 (2/2.5/4/0.2/10): 2000+5000+12000+8000+5000 = 32000
    ("claude-sonnet-5", "0.032"),
    # Sonnet 4.6 / 4.5 / 4 / 3.7 (3/3.75/6/0.3/15): 3000+7500+18000+12000+7500 = 48000
    ("claude-sonnet-4-6", "0.048"),
    ("claude-sonnet-4-5-20250929", "0.048"),
    ("claude-sonnet-4-20250514", "0.048"),
    ("claude-3-7-sonnet-20250219", "0.048"),
    # Haiku 5.5 (0.1/0.125/0.2/0.01/0.5): 100+250+600+400+250 = 1600
    ("claude-haiku-5-5", "0.0016"),
    # Haiku 4.5 (1/1.25/2/0.1/5): 1000+2500+6000+4000+2500 = 16000
    ("claude-haiku-4-5-20251001", "0.016"),
    # Haiku 3.5 (0.8/1/1.6/0.08/4): 800+2000+4800+3200+2000 = 12800
    ("claude-3-5-haiku-20241022", "0.0128"),
    # Haiku 3 (0.25/0.3/0.5/0.03/1.25): 250+600+1500+1200+625 = 4175
    ("claude-3-haiku-20240307", "0.004175"),
]


@pytest.mark.parametrize(("model", "expected"), FAMILY_COSTS)
def test_every_family(model, expected):
    price = CAT.price(model, Usage(**MIX), NOW)
    assert price.cost_usd == D(expected)
    assert price.model_key == model
    assert price.catalog_version == "2026.11.27"
    assert price.note is None


def test_family_table_covers_the_whole_catalog():
    assert {row.id for row in CAT.models()} == {model for model, _ in FAMILY_COSTS}


# --- each price dimension --------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("input_tokens", "5"),  # 1M x $5
        ("cache_write_5m_tokens", "6.25"),  # 1M x $6.25 (1.25x)
        ("cache_write_1h_tokens", "10"),  # 1M x $10 (2x, not 1.25x)
        ("cache_read_tokens", "0.5"),  # 1M x $0.50 (0.1x)
        ("output_tokens", "25"),  # 1M x $25
    ],
)
def test_each_category_at_its_own_rate(field, expected):
    assert usd("claude-opus-4-8", **{field: 1_000_000}) == D(expected)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        # 100,000 cache-read tokens (a prompt at, not over, Haiku 5.5's threshold) = rate / 10
        ("claude-fable-5-2", "0.02"),  # $0.20 = 0.025x of $8
        ("claude-mythos-5-2", "0.02"),
        ("claude-fable-5-1", "0.025"),  # $0.25 = 0.025x of $10
        ("claude-mythos-5-1", "0.025"),
        ("claude-fable-5", "0.1"),  # $1 = plain 0.1x: the 5.1 discount is not carried back
        ("claude-mythos-5", "0.1"),
        ("claude-opus-5-5", "0.02"),  # $0.20 = 0.05x of $4
        ("claude-sonnet-5-5", "0.01"),  # $0.10 = 0.05x of $2 (since 2026-10-07)
        ("claude-sonnet-5", "0.02"),  # $0.20 = 0.1x of $2
        ("claude-opus-4-8", "0.05"),  # $0.50 = 0.1x of $5
        ("claude-haiku-5-5", "0.001"),  # $0.01 = 0.1x of $0.10
        ("claude-3-haiku-20240307", "0.003"),  # $0.03 = historical row: 0.12x
    ],
)
def test_cache_read_per_model_exceptions(model, expected):
    assert usd(model, cache_read_tokens=100_000) == D(expected)


def test_haiku_3_five_minute_write_is_its_own_rate():
    # $0.30 (1.2x of $0.25), not 1.25x = $0.3125: 1M x 0.30
    assert usd("claude-3-haiku-20240307", cache_write_5m_tokens=1_000_000) == D("0.3")


def test_thinking_tokens_are_never_added():
    # output 1,000 x $25 = 0.025; the 800 thinking tokens are inside those 1,000
    assert usd("claude-opus-4-8", output_tokens=1_000, thinking_tokens=800) == D("0.025")


# --- long context ------------------------------------------------------------------------


def test_haiku_5_5_exactly_100k_prompt_is_base_rate():
    # prompt 10,000 + 20,000 + 70,000 = 100,000 (not over): base row
    # 10000x0.1=1000 + 20000x0.125=2500 + 70000x0.01=700 + 1000x0.5=500 = 4700
    price = CAT.price(
        "claude-haiku-5-5",
        Usage(input_tokens=10_000, cache_write_5m_tokens=20_000, cache_read_tokens=70_000,
              output_tokens=1_000),
        NOW,
    )
    assert price.cost_usd == D("0.0047")
    assert price.note is None


def test_haiku_5_5_100001_prompt_moves_everything_to_the_higher_row():
    # prompt 10,000 + 20,000 + 70,001 = 100,001: every category at the >100K row, output too
    # 10000x0.5=5000 + 20000x0.625=12500 + 70001x0.05=3500.05 + 1000x2.5=2500 = 23500.05
    price = CAT.price(
        "claude-haiku-5-5",
        Usage(input_tokens=10_000, cache_write_5m_tokens=20_000, cache_read_tokens=70_001,
              output_tokens=1_000),
        NOW,
    )
    assert price.cost_usd == D("0.02350005")
    assert price.note == "long-context tier"


def test_haiku_5_5_mostly_cached_prompt_is_still_long():
    # input 3 + reads 300,000: long. 3x0.5=1.5 + 300000x0.05=15000 + 100x2.5=250 = 15251.5
    assert usd("claude-haiku-5-5", input_tokens=3, cache_read_tokens=300_000,
               output_tokens=100) == D("0.0152515")


def test_haiku_5_5_one_hour_writes_count_toward_the_threshold():
    # 100,001 1h writes alone: long row $1.00 -> 100001 x 1 = 100001
    assert usd("claude-haiku-5-5", cache_write_1h_tokens=100_001) == D("0.100001")


def test_haiku_5_5_threshold_is_per_request_not_summed():
    # two 60,000-token prompts are each base: 60000 x 0.1 = 6000 each
    one = usd("claude-haiku-5-5", input_tokens=60_000)
    assert one == D("0.006")
    assert one * 2 == D("0.012")


def test_opus_4_6_long_context_tier_until_1m_ga():
    tokens = dict(input_tokens=150_000, cache_read_tokens=60_000, output_tokens=10_000)
    # 2026-03-12, prompt 210,000 > 200K: 150000x10=1,500,000 + 60000x1=60,000
    #   + 10000x37.5=375,000 = 1,935,000
    assert usd("claude-opus-4-6", at=utc(2026, 3, 12), **tokens) == D("1.935")
    # 2026-03-13, flat: 150000x5=750,000 + 60000x0.5=30,000 + 10000x25=250,000 = 1,030,000
    assert usd("claude-opus-4-6", at=utc(2026, 3, 13), **tokens) == D("1.03")


def test_historical_200k_threshold_is_strict():
    # exactly 200,000 on 2026-03-01 stays base: 200000 x 5 = 1,000,000
    assert usd("claude-opus-4-6", at=utc(2026, 3, 1), input_tokens=200_000) == D("1")


def test_sonnet_4_6_long_context_tier_until_1m_ga():
    # 201,000 input: before 03-13 201000x6 = 1,206,000; from 03-13 201000x3 = 603,000
    assert usd("claude-sonnet-4-6", at=utc(2026, 3, 12), input_tokens=201_000) == D("1.206")
    assert usd("claude-sonnet-4-6", at=utc(2026, 3, 13), input_tokens=201_000) == D("0.603")


@pytest.mark.parametrize("model", ["claude-sonnet-4-5-20250929", "claude-sonnet-4-20250514"])
def test_sonnet_4_and_4_5_long_context_tier_until_beta_retired(model):
    tokens = dict(input_tokens=250_000, cache_write_5m_tokens=10_000, output_tokens=1_000)
    # 2026-04-30 (last day of the 1M beta): 250000x6=1,500,000 + 10000x7.5=75,000
    #   + 1000x22.5=22,500 = 1,597,500
    assert usd(model, at=utc(2026, 4, 30), **tokens) == D("1.5975")
    # 2026-05-01: 250000x3=750,000 + 10000x3.75=37,500 + 1000x15=15,000 = 802,500
    assert usd(model, at=utc(2026, 5, 1), **tokens) == D("0.8025")


# --- fast mode ---------------------------------------------------------------------------


def test_opus_5_5_fast_with_cache_on_top():
    # fast rows: 8 / 5m 10 / 1h 16 / read 0.4 / 40 (cache ratios of $4 applied to $8)
    # 1000x8=8000 + 2000x10=20000 + 3000x16=48000 + 40000x0.4=16000 + 500x40=20000 = 112000
    price = CAT.price("claude-opus-5-5", Usage(**MIX, speed="fast"), NOW)
    assert price.cost_usd == D("0.112")
    assert price.note == "fast"


def test_fast_cache_rates_keep_each_models_own_ratio():
    # Fable 5.2 fast read = 0.2 x 16/8 = 0.4 (0.025x of $16), not 0.1x = 1.6
    # 1000x16=16000 + 100000x0.4=40000 + 1000x80=80000 = 136000
    assert usd("claude-fable-5-2", input_tokens=1_000, cache_read_tokens=100_000,
               output_tokens=1_000, speed="fast") == D("0.136")


def test_opus_5_5_fast_rates_match_the_documented_derived_cache_rates():
    period = CAT.model("claude-opus-5-5").period_at(NOW.date())
    assert period.fast is not None
    fast = period.rates.at_fast(period.fast)
    assert (fast.cache_write_5m, fast.cache_write_1h, fast.cache_read) == (
        D(10), D(16), D("0.4"))


def test_opus_4_8_fast_ends_after_2026_11_30():
    tokens = dict(input_tokens=1_000, output_tokens=1_000, speed="fast")
    # 2026-11-30: fast 1000x10 + 1000x50 = 60000
    on_last_day = CAT.price("claude-opus-4-8", Usage(**tokens), utc(2026, 11, 30, 23, 59))
    assert on_last_day.cost_usd == D("0.06")
    assert on_last_day.note == "fast"
    # 2026-12-01: no fast rate any more: standard 1000x5 + 1000x25 = 30000, and said so
    after = CAT.price("claude-opus-4-8", Usage(**tokens), utc(2026, 12, 1, 0, 0))
    assert after.cost_usd == D("0.03")
    assert after.note is not None and "fast not priced" in after.note


def test_period_is_chosen_on_the_utc_date():
    # 2026-11-30 20:00 at UTC-5 is 2026-12-01 01:00 UTC: standard price (see above)
    est = timezone(timedelta(hours=-5))
    at = datetime(2026, 11, 30, 20, 0, tzinfo=est)
    assert usd("claude-opus-4-8", at=at, input_tokens=1_000, output_tokens=1_000,
               speed="fast") == D("0.03")


def test_opus_4_7_historical_six_times_fast():
    tokens = dict(input_tokens=1_000, cache_read_tokens=10_000, output_tokens=1_000,
                  speed="fast")
    # 2026-07-24: $30/$150, read 0.5 x 30/5 = 3: 30000 + 30000 + 150000 = 210000
    assert usd("claude-opus-4-7", at=utc(2026, 7, 24), **tokens) == D("0.21")
    # 2026-07-25: standard 5000 + 10000x0.5=5000 + 25000 = 35000
    assert usd("claude-opus-4-7", at=utc(2026, 7, 25), **tokens) == D("0.035")


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-4-6", "claude-haiku-5-5"])
def test_fast_on_a_model_without_fast_rates_is_standard_and_noted(model):
    standard = CAT.price(model, Usage(input_tokens=1_000, output_tokens=1_000), NOW)
    fast = CAT.price(model, Usage(input_tokens=1_000, output_tokens=1_000, speed="fast"), NOW)
    assert fast.cost_usd == standard.cost_usd
    assert fast.note is not None and "fast not priced" in fast.note


def test_fast_never_takes_a_long_context_tier():
    catalog = Catalog.from_dict({
        "version": "t",
        "models": [{
            "id": "m",
            "periods": [{
                "from": "2026-01-01", "input": "1", "cache_write_5m": "1.25",
                "cache_write_1h": "2", "cache_read": "0.1", "output": "5",
                "long_context": {"threshold_tokens": 10, "input": "9", "cache_write_5m": "9",
                                 "cache_write_1h": "9", "cache_read": "9", "output": "9"},
                "fast": {"input": "2", "output": "10"},
            }],
        }],
    })
    # standard, prompt 1,000,000 > 10: long row 1M x 9 = 9
    assert usd("m", catalog=catalog, input_tokens=1_000_000) == D(9)
    # fast: fast input 1M x 2 = 2, no tier
    assert usd("m", catalog=catalog, input_tokens=1_000_000, speed="fast") == D(2)


# --- data residency, batch, server tools ------------------------------------------------------


def test_us_geo_on_an_eligible_model():
    # Opus 4.8: (1000x5 + 1000x25) x 1.1 = 30000 x 1.1 = 33000
    price = CAT.price("claude-opus-4-8", Usage(input_tokens=1_000, output_tokens=1_000,
                                               inference_geo="us"), NOW)
    assert price.cost_usd == D("0.033")
    assert price.note == "us geo x1.1"


@pytest.mark.parametrize("model", ["claude-opus-4-5-20251101", "claude-sonnet-4-5-20250929"])
def test_us_geo_on_an_ineligible_model(model):
    # pre-4.6 models: no multiplier. Opus 4.5: 5000+25000 = 30000; Sonnet 4.5: 3000+15000
    expected = {"claude-opus-4-5-20251101": "0.03", "claude-sonnet-4-5-20250929": "0.018"}
    assert usd(model, input_tokens=1_000, output_tokens=1_000, inference_geo="us") == D(
        expected[model])


@pytest.mark.parametrize("geo", ["global", "not_available", "", None])
def test_other_geo_values_are_list_price(geo):
    # 1000x5 + 1000x25 = 30000
    assert usd("claude-opus-4-8", input_tokens=1_000, output_tokens=1_000,
               inference_geo=geo) == D("0.03")


def test_geo_stacks_on_fast():
    # Opus 5.5 fast: (1000x8 + 1000x40) x 1.1 = 48000 x 1.1 = 52800
    assert usd("claude-opus-5-5", input_tokens=1_000, output_tokens=1_000, speed="fast",
               inference_geo="us") == D("0.0528")


def test_batch_halves_tokens_including_cache():
    # (1000x5 + 2000x6.25 + 4000x0.5 + 1000x25) x 0.5 = (5000+12500+2000+25000) x 0.5 = 22250
    price = CAT.price("claude-opus-4-8", Usage(input_tokens=1_000, cache_write_5m_tokens=2_000,
                                               cache_read_tokens=4_000, output_tokens=1_000,
                                               service_tier="batch"), NOW)
    assert price.cost_usd == D("0.02225")
    assert price.note == "batch x0.5"


def test_batch_and_geo_multiply():
    # Sonnet 5.5: (1M x 2 + 1M x 10) x 1.1 x 0.5 = 12 x 0.55 = 6.6
    assert usd("claude-sonnet-5-5", input_tokens=1_000_000, output_tokens=1_000_000,
               inference_geo="us", service_tier="batch") == D("6.6")


@pytest.mark.parametrize("tier", ["standard", "priority", None])
def test_non_batch_tiers_are_list_price(tier):
    # 1000x2 + 100x10 = 3000
    assert usd("claude-sonnet-5-5", input_tokens=1_000, output_tokens=100,
               service_tier=tier) == D("0.003")


def test_web_search_is_added_per_search():
    # 1000x2 + 100x10 = 3000 -> 0.003, + 3 x 0.01 = 0.033
    price = CAT.price("claude-sonnet-5-5", Usage(input_tokens=1_000, output_tokens=100,
                                                 web_search_requests=3), NOW)
    assert price.cost_usd == D("0.033")
    assert price.note == "3 web searches"


def test_web_search_fee_is_not_halved_by_batch():
    # 0.003 x 0.5 = 0.0015, + 3 x 0.01 = 0.0315
    assert usd("claude-sonnet-5-5", input_tokens=1_000, output_tokens=100,
               web_search_requests=3, service_tier="batch") == D("0.0315")


def test_web_fetch_is_free():
    # 1000x2 + 100x10 = 3000; fetches add nothing
    assert usd("claude-sonnet-5-5", input_tokens=1_000, output_tokens=100,
               web_fetch_requests=5) == D("0.003")


# --- hops --------------------------------------------------------------------------------


def test_advisor_hop_is_priced_at_its_own_model():
    # executor Sonnet 5.5: 1000x2 + 1000x10 = 12000 -> 0.012
    # advisor Opus 5.5: 2000x4=8000 + 10000x0.2=2000 + 500x20=10000 = 20000 -> 0.02
    hop = Hop("advisor_message", "claude-opus-5-5",
              TokenCounts(input_tokens=2_000, cache_read_tokens=10_000, output_tokens=500))
    price = CAT.price("claude-sonnet-5-5", Usage(input_tokens=1_000, output_tokens=1_000,
                                                 hops=(hop,)), NOW)
    assert price.cost_usd == D("0.032")
    assert price.model_key == "claude-sonnet-5-5"
    assert price.note == "advisor_message at claude-opus-5-5"


def test_hop_gets_its_own_long_context_tier_and_no_request_multipliers():
    # executor Opus 4.8 in US: (1000x5) x 1.1 = 5500 -> 0.0055
    # fallback hop Haiku 5.5, prompt 150,000 > 100K: 150000x0.05=7500 + 100x2.5=250 = 7750
    hop = Hop("fallback_message", "claude-haiku-5-5",
              TokenCounts(cache_read_tokens=150_000, output_tokens=100))
    price = CAT.price("claude-opus-4-8", Usage(input_tokens=1_000, inference_geo="us",
                                               hops=(hop,)), NOW)
    assert price.cost_usd == D("0.01325")  # 0.0055 + 0.00775


def test_hop_with_unknown_model_leaves_the_whole_call_unpriced():
    hop = Hop("advisor_message", "claude-opus-9", TokenCounts(input_tokens=10))
    price = CAT.price("claude-sonnet-5-5", Usage(input_tokens=1_000, hops=(hop,)), NOW)
    assert price.cost_usd is None
    assert price.cost_picousd is None
    assert price.model_key == "claude-sonnet-5-5"
    assert price.note == "unknown model 'claude-opus-9' in advisor_message hop"


# --- effective dates ---------------------------------------------------------------------------


def test_sonnet_5_5_cache_read_switch():
    # 1M reads: $0.20 through 2026-10-06, $0.10 from 2026-10-07 (UTC)
    assert usd("claude-sonnet-5-5", at=utc(2026, 10, 6, 23, 59, 59),
               cache_read_tokens=1_000_000) == D("0.2")
    assert usd("claude-sonnet-5-5", at=utc(2026, 10, 7, 0, 0, 0),
               cache_read_tokens=1_000_000) == D("0.1")
    # 2026-10-06 20:00 at UTC-5 is already 2026-10-07 in UTC
    local = datetime(2026, 10, 6, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert usd("claude-sonnet-5-5", at=local, cache_read_tokens=1_000_000) == D("0.1")


def test_naive_datetime_is_taken_as_utc():
    assert usd("claude-sonnet-5-5", at=datetime(2026, 10, 6, 23, 0),
               cache_read_tokens=1_000_000) == D("0.2")


def test_a_date_before_the_first_period_uses_the_first_period():
    # Sonnet 5.5 launched 2026-09-28; a skewed clock still prices it (read $0.20)
    assert usd("claude-sonnet-5-5", at=utc(2026, 1, 1), cache_read_tokens=1_000_000) == D("0.2")


def test_models_shows_the_rates_in_force():
    rows = {row.id: row for row in CAT.models(at=utc(2026, 12, 1))}
    assert rows["claude-opus-4-8"].fast is None
    assert rows["claude-opus-4-8"].since == date(2026, 12, 1)
    assert rows["claude-sonnet-5-5"].rates.cache_read == D("0.1")
    assert rows["claude-haiku-4-5-20251001"].aliases == ("claude-haiku-4-5",)
    assert rows["claude-haiku-5-5"].long_context is not None
    assert rows["claude-haiku-5-5"].long_context.threshold_tokens == 100_000
    early = {row.id: row for row in CAT.models(at=utc(2026, 10, 1))}
    assert early["claude-sonnet-5-5"].rates.cache_read == D("0.2")


# --- id normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("claude-opus-4-8", "claude-opus-4-8"),
        ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
        ("claude-opus-4-0", "claude-opus-4-20250514"),
        ("claude-sonnet-4-0", "claude-sonnet-4-20250514"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"),
        ("claude-opus-4-8[1m]", "claude-opus-4-8"),
        ("Claude-Opus-4-8[1M]", "claude-opus-4-8"),
        ("  claude-sonnet-5-5[1m] ", "claude-sonnet-5-5"),
        # Bedrock
        ("anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("us.anthropic.claude-opus-4-8", "claude-opus-4-8"),
        ("apac.anthropic.claude-opus-5-5", "claude-opus-5-5"),
        ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
        ("jp.anthropic.claude-haiku-5-5", "claude-haiku-5-5"),
        ("au.anthropic.claude-opus-4-8", "claude-opus-4-8"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001"),
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku-20240307"),
        # Vertex
        ("claude-haiku-4-5@20251001", "claude-haiku-4-5-20251001"),
        ("claude-opus-4@20250514", "claude-opus-4-20250514"),
        ("claude-3-5-haiku@20241022", "claude-3-5-haiku-20241022"),
        ("claude-3-7-sonnet@20250219", "claude-3-7-sonnet-20250219"),
        # ARNs (and a percent-encoded one, as in a Bedrock URL path)
        ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-6",
         "claude-sonnet-4-6"),
        ("arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-opus-4-1-20250805-v1:0",
         "claude-opus-4-1-20250805"),
        ("arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.claude-opus-4-8",
         "claude-opus-4-8"),
        # exact versions win over near neighbours
        ("claude-opus-5", "claude-opus-5"),
        ("claude-opus-5-5", "claude-opus-5-5"),
        ("claude-fable-5", "claude-fable-5"),
        ("claude-fable-5-1", "claude-fable-5-1"),
        ("claude-sonnet-5", "claude-sonnet-5"),
    ],
)
def test_resolve(name, key):
    assert CAT.resolve(name) == key


@pytest.mark.parametrize(
    "name",
    [
        "claude-opus-4",  # no such id: not Opus 4.0, 4.1 or 4.5
        "claude-opus-5-6",
        "claude-fable-5-3",
        "claude-opus-5-55",
        "claude-opus-4-8-20260528",  # dated form of a dateless model is undocumented
        "claude-opus-4-8@20260528",
        "claude-haiku",  # Claude Code's own alias never reaches the API
        "claude-sonnet-5-5-fast",
        "xx.anthropic.claude-opus-4-8",  # not a documented Bedrock geo prefix
        "claude-opus-4-8-v1:0",  # version suffix only on Bedrock ids
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4",
        "gpt-4o",
        "",
    ],
)
def test_resolve_unknown(name):
    assert CAT.resolve(name) is None


def test_bedrock_id_is_priced_at_first_party_rates():
    # 1M input x $5 (Bedrock's regional +10% is Bedrock's own bill, not modelled here)
    assert usd("us.anthropic.claude-opus-4-8", input_tokens=1_000_000) == D("5")


def test_every_catalog_id_resolves_to_its_own_model():
    for raw in raw_catalog()["models"]:
        for name in [raw["id"], *raw["aliases"], *raw["bedrock_ids"], *raw["vertex_ids"]]:
            assert CAT.resolve(name) == raw["id"], name


# --- unknown models ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-opus-9", "claude-opus-5-6", None, ""])
def test_unknown_model_is_unpriced_not_free(model):
    price = CAT.price(model, Usage(input_tokens=1_000, output_tokens=1_000), NOW)
    assert price == Price(None, "2026.11.27", None, f"unknown model {model!r}")
    assert price.cost_picousd is None


# --- overrides ---------------------------------------------------------------------------


def test_discount_applies_to_the_final_cost():
    catalog = CAT.with_overrides({"discount_percent": "10"})
    assert catalog.version == "2026.11.27+overrides"
    price = catalog.price("claude-opus-4-8", Usage(input_tokens=1_000_000,
                                                   output_tokens=1_000_000), NOW)
    assert price.cost_usd == D("27")  # (5 + 25) x 0.9
    assert price.catalog_version == "2026.11.27+overrides"
    assert price.note == "discount 10%"


def test_discount_covers_fees_and_hops():
    # (1M x 5 + 10 x 0.01 + hop Haiku 4.5 1M x 1) x 0.5 = (5 + 0.1 + 1) x 0.5 = 3.05
    catalog = CAT.with_overrides({"discount_percent": 50})
    hop = Hop("advisor_message", "claude-haiku-4-5", TokenCounts(input_tokens=1_000_000))
    assert usd("claude-opus-4-8", catalog=catalog, input_tokens=1_000_000,
               web_search_requests=10, hops=(hop,)) == D("3.05")


def test_model_override_replaces_rates_in_every_period():
    catalog = CAT.with_overrides(
        {"models": {"claude-opus-4-8": {"input": "4", "output": "20"}}})
    tokens = dict(input_tokens=1_000_000, cache_write_5m_tokens=1_000_000,
                  output_tokens=1_000_000)
    # 1M x 4 + 1M x 6.25 (unchanged) + 1M x 20 = 30.25, before and after 2026-12-01
    assert usd("claude-opus-4-8", catalog=catalog, **tokens) == D("30.25")
    assert usd("claude-opus-4-8", at=utc(2026, 12, 5), catalog=catalog, **tokens) == D("30.25")
    # the bundled catalog is untouched: 5 + 6.25 + 25
    assert usd("claude-opus-4-8", **tokens) == D("36.25")
    assert CAT.version == "2026.11.27"


def test_model_override_by_alias_and_toml_float():
    catalog = CAT.with_overrides({"models": {"claude-haiku-4-5": {"input": 0.5}}})
    # 1M x 0.5 (TOML float 0.5 read as Decimal("0.5"))
    assert usd("claude-haiku-4-5-20251001", catalog=catalog, input_tokens=1_000_000) == D("0.5")


def test_override_defines_a_new_model():
    rates = {"input": "1", "output": "2", "cache_write_5m": "1.25", "cache_write_1h": "2",
             "cache_read": "0.1"}
    catalog = CAT.with_overrides({"models": {"My-Gateway-Model": rates}})
    assert catalog.resolve("my-gateway-model") == "my-gateway-model"
    # 1M x 1 + 1M x 0.1 + 1M x 2 = 3.1
    price = catalog.price("My-Gateway-Model[1m]", Usage(
        input_tokens=1_000_000, cache_read_tokens=1_000_000, output_tokens=1_000_000), NOW)
    assert price.cost_usd == D("3.1")
    assert price.model_key == "my-gateway-model"


def test_new_model_needs_all_five_rates():
    with pytest.raises(ValueError, match=r"my-gateway-model.*missing cache_write_5m"):
        CAT.with_overrides({"models": {"my-gateway-model": {"input": "1", "output": "2"}}})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": {"claude-opus-4-8": {"inptu": "4"}}}, "unknown rate"),
        ({"models": {"claude-opus-4-8": {"input": "cheap"}}}, "not a decimal"),
        ({"models": {"claude-opus-4-8": {"input": "-1"}}}, ">= 0"),
        ({"models": {"claude-opus-4-8": {"input": True}}}, "decimal string"),
        ({"discount_percent": "150"}, "between 0 and 100"),
        ({"discount_percent": "nan"}, "finite"),
        ({"discount": "10"}, "unknown key"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        CAT.with_overrides(overrides)


def test_overrides_do_not_stack_suffixes():
    twice = CAT.with_overrides({"discount_percent": "5"}).with_overrides(
        {"discount_percent": "10"})
    assert twice.version == "2026.11.27+overrides"
    assert usd("claude-opus-4-8", catalog=twice, input_tokens=1_000_000) == D("4.5")  # 5 x 0.9
    assert CAT.with_overrides({}) is CAT


# --- the bundled catalog -----------------------------------------------------------------


def test_bundled_catalog_shape():
    data = raw_catalog()
    assert data["version"] == CAT.version == "2026.11.27"
    assert data["currency"] == "USD"
    assert data["unit"] == "USD per million tokens"
    assert data["multipliers"] == {"inference_geo_us": "1.1", "batch": "0.5"}
    assert data["server_tools"] == {"web_search_usd_each": "0.01", "web_fetch_usd_each": "0"}
    assert all(url.startswith("https://") for url in data["sources"])
    assert Catalog.bundled() is CAT


def _assert_rates(rates: dict, where: str) -> None:
    for name in RATE_NAMES:
        value = rates[name]
        assert isinstance(value, str), where
        number = Decimal(value)
        assert number.is_finite() and number >= 0, where
        assert number.as_tuple().exponent >= -3, f"{where}: >3 decimals breaks exactness"


def test_every_model_has_valid_rates_and_sorted_periods():
    for model in raw_catalog()["models"]:
        periods = model["periods"]
        assert periods, model["id"]
        starts = [date.fromisoformat(p["from"]) for p in periods]
        assert starts == sorted(set(starts)), model["id"]
        for period in periods:
            where = f"{model['id']} from {period['from']}"
            _assert_rates(period, where)
            if period["long_context"] is not None:
                _assert_rates(period["long_context"], where + " long_context")
                assert isinstance(period["long_context"]["threshold_tokens"], int)
            if period["fast"] is not None:
                for name in ("input", "output"):
                    assert Decimal(period["fast"][name]) > 0, where


def test_geo_flag_marks_exactly_the_4_6_and_later_models():
    flagged = {row.id for row in CAT.models() if row.geo_us_multiplier_applies}
    assert flagged == {
        "claude-fable-5-2", "claude-mythos-5-2", "claude-fable-5-1", "claude-mythos-5-1",
        "claude-fable-5", "claude-mythos-5", "claude-opus-5-5", "claude-opus-5",
        "claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6", "claude-sonnet-5-5",
        "claude-sonnet-5", "claude-sonnet-4-6", "claude-haiku-5-5",
    }


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["periods"][0].update(input=5.0), "decimal string"),
        (lambda m: m["periods"].append(dict(m["periods"][0])), "strictly increasing"),
        (lambda m: m["periods"][0].pop("cache_read"), "missing rate"),
        (lambda m: m.update(aliases=["claude-opus-5"]), "claimed by both"),
    ],
)
def test_from_dict_rejects_bad_catalogs(mutate, message):
    data = raw_catalog()
    mutate(next(m for m in data["models"] if m["id"] == "claude-opus-4-8"))
    with pytest.raises(ValueError, match=message):
        Catalog.from_dict(data)


# --- properties --------------------------------------------------------------------------

COUNT = st.integers(min_value=0, max_value=10**9)
TOKENS = st.builds(TokenCounts, COUNT, COUNT, COUNT, COUNT, COUNT)
FLAGS = st.fixed_dictionaries({
    "inference_geo": st.sampled_from([None, "us", "global"]),
    "service_tier": st.sampled_from([None, "standard", "batch"]),
})
MODEL_IDS = [model for model, _ in FAMILY_COSTS]


def _usage(tokens: TokenCounts, **extra) -> Usage:
    return Usage(tokens.input_tokens, tokens.cache_write_5m_tokens, tokens.cache_write_1h_tokens,
                 tokens.cache_read_tokens, tokens.output_tokens, **extra)


def _add(a: TokenCounts, b: TokenCounts) -> TokenCounts:
    return TokenCounts(*(getattr(a, f) + getattr(b, f) for f in TokenCounts.__dataclass_fields__))


def _pico(model: str, usage: Usage) -> int:
    price = CAT.price(model, usage, NOW)
    assert price.cost_picousd is not None
    return price.cost_picousd


@settings(max_examples=200)
@given(a=TOKENS, b=TOKENS, flags=FLAGS)
def test_cost_is_linear_in_tokens(a, b, flags):
    # Opus 4.8 has no tier, so cost(a + b) == cost(a) + cost(b) to the picodollar
    model = "claude-opus-4-8"
    assert _pico(model, _usage(_add(a, b), **flags)) == (
        _pico(model, _usage(a, **flags)) + _pico(model, _usage(b, **flags)))


@settings(max_examples=200)
@given(tokens=TOKENS, extra=st.integers(min_value=1, max_value=10**6),
       field=st.sampled_from(list(TokenCounts.__dataclass_fields__)),
       model=st.sampled_from(MODEL_IDS), flags=FLAGS)
def test_cost_is_monotonic_in_each_count(tokens, extra, field, model, flags):
    more = _add(tokens, TokenCounts(**{field: extra}))
    assert _pico(model, _usage(more, **flags)) > _pico(model, _usage(tokens, **flags))


def _oracle(model: str, tokens: TokenCounts, geo: str | None, tier: str | None) -> Fraction:
    """Independent exact arithmetic over the JSON strings, with Fractions."""
    raw = next(m for m in raw_catalog()["models"] if m["id"] == model)
    period = [p for p in raw["periods"] if date.fromisoformat(p["from"]) <= NOW.date()][-1]
    row = period
    if period["long_context"] and tokens.prompt_tokens > period["long_context"][
            "threshold_tokens"]:
        row = period["long_context"]
    counts = (tokens.input_tokens, tokens.cache_write_5m_tokens, tokens.cache_write_1h_tokens,
              tokens.cache_read_tokens, tokens.output_tokens)
    cost = sum(n * Fraction(row[r]) for n, r in zip(counts, RATE_NAMES, strict=True))
    cost /= 10**6
    if geo == "us" and raw["geo_us_multiplier_applies"]:
        cost *= Fraction("1.1")
    if tier == "batch":
        cost *= Fraction("0.5")
    return Fraction(cost)


@settings(max_examples=300)
@given(tokens=TOKENS, model=st.sampled_from(MODEL_IDS), flags=FLAGS,
       searches=st.integers(min_value=0, max_value=50))
def test_cost_is_an_exact_picodollar_decimal(tokens, model, flags, searches):
    price = CAT.price(model, _usage(tokens, web_search_requests=searches, **flags), NOW)
    assert isinstance(price.cost_usd, Decimal)
    assert isinstance(price.cost_picousd, int)
    assert price.cost_usd * PICO_PER_USD == price.cost_picousd
    expected = _oracle(model, tokens, flags["inference_geo"], flags["service_tier"])
    expected += searches * Fraction("0.01")
    # equal as exact rationals: nothing was rounded on the way
    assert Fraction(price.cost_usd) == expected
