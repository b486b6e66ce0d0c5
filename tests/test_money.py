"""One home for money text: parsing what users type, exact strings for machines and configs,
floored cap amounts, and the same people's rule in every summary."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccmeter import money
from ccmeter.config import CCMeterError


@pytest.mark.parametrize(("text", "pico"), [
    ("20", 20 * 10**12), ("$0.50", 5 * 10**11), (7.5, 75 * 10**11), (20, 20 * 10**12),
    ("1,000", 10**15), ("0.000000000001", 1), (" $3 ", 3 * 10**12), ("1_000", 10**15),
])
def test_parse_usd(text, pico):
    assert money.parse_usd(text) == pico


@pytest.mark.parametrize("bad", ["abc", "", "-5", "nan", "inf", "1e400", "0.0000000000001",
                                 "2000000", True, None, "1" * 5000, "٣"])
def test_parse_usd_refuses_in_one_line(bad):
    with pytest.raises(CCMeterError) as caught:
        money.parse_usd(bad, "--daily")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--daily: ")


@given(st.integers(0, 10**18))
def test_every_amount_round_trips_through_its_texts(pico):
    assert money.parse_usd(money.usd_text(pico)) == pico
    assert money.parse_usd(money.usd_string(pico)) == pico
    assert Decimal(money.usd_string(pico)) * 10**12 == pico
    assert len(money.usd_string(pico).split(".")[1]) == 12
    floored = Decimal(money.floor_usd(pico, 2).removeprefix("$").replace(",", ""))
    assert floored * 10**12 <= pico < (floored + Decimal("0.01")) * 10**12


def test_usd_string_is_the_share_and_report_string():
    from ccmeter import render, share

    cost = [render.Column("cost", "Cost", "usd")]
    for pico in (0, 1, 93_736_500_000, 12 * 10**12 + 5, -1):
        assert money.usd_string(pico) == render.machine_row({"cost": pico}, cost)["cost_usd"]
    assert money.usd_string(None) is None
    assert share.usd_string is money.usd_string  # the share writes what reports write
    assert money.usd_string(-1) == "-0.000000000001"


def test_the_run_summary_uses_the_spend_rule():
    """`ccmeter run`'s closing line had its own float formatter: a tiny cost read $0.0000.
    It shows spend as caps do (money.spend_usd: floored, cents from $1, 4 decimals below)."""
    from ccmeter.runsummary import RunSummary

    for pico in (0, 10, 4_850_000_000, 1_234_567_890_123_456):
        line = RunSummary(1, 1, pico, 0, pico).line()
        assert f"this run {money.spend_usd(pico)} (1 call" in line
    assert "this run $1,234.56 " in RunSummary(1, 1, 1_234_567_890_123_456, 0, 0).line()
    assert "$0.0000" not in RunSummary(1, 1, 10, 0, 10).line()



@pytest.mark.parametrize("text", ["2,5", "1,5,0", "12,50", "1,0000", ",5"])
def test_a_comma_that_is_not_a_thousands_separator_is_refused(text):
    """A decimal comma must not turn $2.5 into $25."""
    with pytest.raises(CCMeterError, match="a comma only separates thousands"):
        money.parse_usd(text, "--daily")


@pytest.mark.parametrize(("text", "usd"), [("1,000", 1000), ("$12,345.50", 12345.5),
                                          ("1,000,000", 1_000_000)])
def test_thousands_separators_still_read(text, usd):
    assert money.parse_usd(text) == int(usd * 10**12)
