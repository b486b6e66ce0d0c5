"""``report --vs-plan``: a plan's fee with effective dates, prorated over a report's period,
against the list-price equivalent. Checked by hand in UTC."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime

import pytest
from typer.testing import CliRunner

from ccmeter import config, planfees, store
from ccmeter.cli import app
from ccmeter.pricing import Catalog

USD = 10**12


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_fees_are_prorated_by_month_and_follow_their_dates(utc):
    fees = planfees.with_overrides({}, {"Max-5x": {"monthly_usd": "100"}})
    periods = fees["max-5x"]
    # a whole month is its fee; November has 30 days, so 3 days are 10 %
    assert planfees.fee_for_period(periods, ts(2026, 11, 1), ts(2026, 12, 1)) == 100 * USD
    assert planfees.fee_for_period(periods, ts(2026, 11, 1), ts(2026, 11, 4)) == 10 * USD
    # 31 Oct (1/31 of October) + 1 Nov (1/30): 100/31 + 100/30, rounded to the picodollar
    got = planfees.fee_for_period(periods, ts(2026, 10, 31), ts(2026, 11, 2))
    assert got == round(100 * USD / 31 + 100 * USD / 30)
    # a new fee from 16 November: 15 days at 100 and 15 at 200 (each /30)
    fees = planfees.with_overrides(fees, {"max-5x": {"monthly_usd": "200", "from": "2026-11-16"}})
    periods = fees["max-5x"]
    assert [p.monthly_picousd for p in periods] == [100 * USD, 200 * USD]
    assert planfees.fee_for_period(periods, ts(2026, 11, 1), ts(2026, 12, 1)) == 150 * USD
    assert planfees.monthly_fee(periods, ts(2026, 11, 20)).monthly_picousd == 200 * USD
    # before a plan's first fee it costs nothing
    late = planfees.with_overrides({}, {"pro": {"monthly_usd": "20", "from": "2026-11-16"}})
    assert planfees.fee_for_period(late["pro"], ts(2026, 11, 1), ts(2026, 11, 16)) == 0


def test_the_catalog_carries_dated_fees_and_no_bundled_plan_fee():
    assert Catalog.bundled().plan_fees == {}  # no sourced plan fee: none is guessed
    # a fee changes no price: the catalog keeps its version (stored with every call)
    with_fee = Catalog.bundled().with_overrides({"plans": {"pro": {"monthly_usd": "20"}}})
    assert with_fee.version == Catalog.bundled().version
    data = {"version": "t", "models": [{"id": "m", "periods": [
        {"from": "2026-01-01", "input": "1", "cache_write_5m": "1", "cache_write_1h": "1",
         "cache_read": "1", "output": "1"}]}],
        "plans": [{"id": "max-5x", "periods": [
            {"from": "2026-01-01", "monthly_usd": "100", "source": "https://example.test"}]}]}
    catalog = Catalog.from_dict(data)
    assert catalog.plan_fees["max-5x"][0] == planfees.PlanFee(
        date(2026, 1, 1), 100 * USD, "https://example.test")
    with pytest.raises(ValueError, match="monthly_usd"):
        Catalog.bundled().with_overrides({"plans": {"pro": {"monthy_usd": "20"}}})
    with pytest.raises(ValueError, match="not a dollar amount"):
        Catalog.bundled().with_overrides({"plans": {"pro": {"monthly_usd": "lots"}}})


def _fill(rows: list[dict]) -> None:
    db = store.connect(config.paths().db_file)
    try:
        store.upsert_calls(db, rows)
    finally:
        db.conn.close()


def test_report_vs_plan_end_to_end(user_dirs, utc):
    now = time.time()
    start = now - 10 * 86400
    rows = [{"call_uid": f"c{i}", "started_ts": start + i * 3600, "started_at": "x",
             "status": "ok", "updated_ts": start, "project": "web", "model": "claude-opus-4-8",
             "input_tokens": 1000, "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0,
             "cache_read_tokens": 0, "output_tokens": 0, "cost_picousd": 5 * USD}
            for i in range(3)]  # $15 at list price
    _fill(rows)
    runner = CliRunner()
    bad = runner.invoke(app, ["report", "--since", "2026-11-01", "--vs-plan", "max-5x"])
    assert isinstance(bad.exception, config.CCMeterError)
    assert '[prices.plans."max-5x"] monthly_usd' in str(bad.exception)

    user_dirs.config_dir.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text('[prices.plans."max-5x"]\nmonthly_usd = "100"\n',
                                     encoding="utf-8")
    since = datetime.fromtimestamp(start - 86400, UTC).date().isoformat()
    until = datetime.fromtimestamp(now, UTC).date().isoformat()  # a bare date: its whole day
    result = runner.invoke(app, ["report", "--since", since, "--until", until,
                                 "--vs-plan", "max-5x", "-f", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    vs = doc["meta"]["vs_plan"]
    low = datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp()
    high = datetime.fromisoformat(until).replace(tzinfo=UTC).timestamp() + 86400
    expected_fee = planfees.fee_for_period(planfees.with_overrides(
        {}, {"max-5x": {"monthly_usd": "100"}})["max-5x"], low, high)
    assert vs["plan"] == "max-5x" and vs["monthly_fee_picousd"] == 100 * USD
    assert vs["fee_picousd"] == expected_fee
    assert vs["list_price_picousd"] == 15 * USD == doc["totals"]["cost_picousd"]
    assert vs["difference_picousd"] == 15 * USD - expected_fee
    assert vs["ratio"] == pytest.approx(15 * USD / expected_fee)
    assert doc["title"] == "Spend by project, vs plan max-5x"
    # by hand: 1 to 10 November (a bare --until date includes its day) is 10 of November's
    # 30 days: $100 x 10 / 30 = $33.333333333333 (rounded to the picodollar)
    fixed = runner.invoke(app, ["report", "--since", "2026-11-01", "--until", "2026-11-10",
                                "--vs-plan", "max-5x", "-f", "json"])
    assert json.loads(fixed.output)["meta"]["vs_plan"]["fee_usd"] == "33.333333333333"

    table = runner.invoke(app, ["report", "--since", since, "--vs-plan", "MAX-5X"])
    assert table.exit_code == 0, table.output
    assert "max-5x at $100.00/month costs" in table.output
    assert "list-price equivalent is $15.00" in table.output
    default = runner.invoke(app, ["report", "--vs-plan", "max-5x", "-f", "json"])
    assert default.exit_code == 0, default.output
    periods = json.loads(default.output)["meta"]["periods"]
    assert periods["today"]["vs_plan"]["plan"] == "max-5x"
    assert json.loads(default.output)["meta"]["vs_plan"] == periods["this week"]["vs_plan"]
