"""What-if repricing (``report --as-model`` / ``--cache-ttl``): each assumption checked by hand,
the identity checked on random calls, and the command end to end."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from ccmeter import config, store
from ccmeter.cli import app
from ccmeter.pricing import Catalog
from ccmeter.whatif import Assumption, check_assumption, reprice, usage_of
from tests.test_reports import independent_savings, make_rows

CATALOG = Catalog.bundled()
USD = 10**12  # picodollars
DAY = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()


def call(model: str | None = "claude-opus-4-8", **fields) -> dict:
    """A stored call as the what-if query reads it, its stored cost priced by the catalog."""
    row = {"started_ts": DAY, "model_name": model, "provider": "anthropic", "input_tokens": 0,
           "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0, "cache_read_tokens": 0,
           "output_tokens": 0, "web_search_requests": 0, "web_fetch_requests": 0,
           "service_tier": None, "inference_geo": None, "speed": None, "hops_json": None,
           "pricing_note": None, **fields}
    if "cost_picousd" not in fields:  # as the proxy priced it
        row["cost_picousd"] = CATALOG.price(model, usage_of(row),  # type: ignore[arg-type]
                                            datetime.fromtimestamp(DAY, UTC)).cost_picousd
    return row


A = {"input_tokens": 1000, "cache_write_5m_tokens": 2000, "cache_write_1h_tokens": 4000,
     "cache_read_tokens": 10_000, "output_tokens": 500}


def usd(text: str) -> int:
    from decimal import Decimal

    return int(Decimal(text) * USD)


def test_each_assumption_by_hand():
    row = call(**A)
    # Opus 4.8 ($5 / 6.25 / 10 / 0.5 / 25): 5000 + 12500 + 40000 + 5000 + 12500 per MTok
    assert row["cost_picousd"] == usd("0.075")
    sonnet = check_assumption(CATALOG, "claude-sonnet-4-5", None)
    assert sonnet.as_model == "claude-sonnet-4-5-20250929"  # the alias, resolved
    # Sonnet 4.5 ($3 / 3.75 / 6 / 0.3 / 15): 3000 + 7500 + 24000 + 3000 + 7500
    got = reprice(CATALOG, row, sonnet)
    assert got.cost == usd("0.045")
    # caching saved, as Sonnet: 17000 prompt tokens x $3 + output, minus the cost
    assert got.saved == usd("0.0585") - usd("0.045")
    # every write 5-minute: 6000 x 6.25 + 5000 + 5000 + 12500
    assert reprice(CATALOG, row, Assumption(cache_ttl="5m")).cost == usd("0.060")
    # every write 1-hour: 6000 x 10 + 5000 + 5000 + 12500
    assert reprice(CATALOG, row, Assumption(cache_ttl="1h")).cost == usd("0.0825")
    # both: Sonnet 4.5 with 6000 5-minute writes: 3000 + 22500 + 3000 + 7500
    both = check_assumption(CATALOG, "claude-sonnet-4-5", "5m")
    assert reprice(CATALOG, row, both).cost == usd("0.036")
    # nothing assumed but the model it was: the stored cost, exactly
    same = Assumption(as_model="claude-opus-4-8")
    assert reprice(CATALOG, row, same).cost == row["cost_picousd"]


def test_long_context_fast_and_geo_follow_the_assumed_model():
    long_call = call(input_tokens=3, cache_read_tokens=150_000, output_tokens=1000)
    haiku = Assumption(as_model="claude-haiku-5-5")
    # over 100K prompt tokens: Haiku 5.5's >100K row for everything, output included
    assert reprice(CATALOG, long_call, haiku).cost == usd("0.0100015")
    short_call = call(input_tokens=3, cache_read_tokens=100_000 - 3, output_tokens=1000)
    # exactly 100K: the base row (3 x 0.1 + 99997 x 0.01 + 1000 x 0.5)
    assert reprice(CATALOG, short_call, haiku).cost == usd("0.00150027")
    fast = call(input_tokens=1000, output_tokens=100, speed="fast")
    assert fast["cost_picousd"] == usd("0.015")  # Opus 4.8 fast: $10 / $50
    # Sonnet 5 has no fast rates: its standard ones ($2 / $10)
    assert reprice(CATALOG, fast, Assumption(as_model="claude-sonnet-5")).cost == usd("0.003")
    geo = call(input_tokens=1000, output_tokens=100, inference_geo="us")
    assert geo["cost_picousd"] == usd("0.0082500")  # (5000 + 2500) x 1.1
    assert reprice(CATALOG, geo, Assumption(as_model="claude-sonnet-5")).cost == usd("0.0033")
    # Sonnet 4.5 predates US-only inference pricing: no multiplier
    sonnet45 = Assumption(as_model="claude-sonnet-4-5-20250929")
    assert reprice(CATALOG, geo, sonnet45).cost == usd("0.0045")


def test_hops_keep_their_model_and_fees_stay():
    hops = json.dumps([{"kind": "advisor_message", "model": "claude-opus-4-8",
                        "tokens": {"input_tokens": 1000, "cache_write_5m_tokens": 0,
                                   "cache_write_1h_tokens": 400, "cache_read_tokens": 0,
                                   "output_tokens": 0}}])
    row = call("claude-sonnet-5", input_tokens=1000, web_search_requests=2, hops_json=hops)
    # Sonnet 5: 2000; advisor at Opus 4.8: 5000 + 400 x 10; two searches at $0.01
    assert row["cost_picousd"] == usd("0.031")
    # as Haiku 5.5, 5-minute writes: 100 + (5000 + 400 x 6.25) + 0.02
    got = reprice(CATALOG, row, check_assumption(CATALOG, "claude-haiku-5-5", "5m"))
    assert got.cost == usd("0.0001") + usd("0.0075") + usd("0.02")


def test_unpriced_calls_stay_unpriced_unless_only_the_model_was_unknown():
    unknown = call("claude-unknown-7", input_tokens=1000, cost_picousd=None,
                   pricing_note="unknown model 'claude-unknown-7'")
    assert reprice(CATALOG, unknown, Assumption(cache_ttl="5m")).cost is None
    assert reprice(CATALOG, unknown, Assumption(as_model="claude-sonnet-5")).cost == usd("0.002")
    unread = call(input_tokens=0, cost_picousd=None, pricing_note="usage not metered: x=-1")
    for assumption in (Assumption(cache_ttl="1h"), Assumption(as_model="claude-sonnet-5")):
        assert reprice(CATALOG, unread, assumption).cost is None  # never $0


def test_cloud_calls_keep_their_endpoint_premium():
    region = {"input_tokens": 1_000_000}
    premium = call("claude-sonnet-5", provider="bedrock", cost_picousd=usd("2.2"),
                   pricing_note="bedrock regional endpoint x1.1", **region)
    plain = call("claude-sonnet-5", provider="bedrock", cost_picousd=usd("2"), **region)
    opus55 = Assumption(as_model="claude-opus-5-5")
    assert reprice(CATALOG, premium, opus55).cost == usd("4.4")
    assert reprice(CATALOG, plain, opus55).cost == usd("4")


def test_as_its_own_model_every_call_costs_what_was_stored_and_saves_what_the_report_says():
    rng = random.Random(5)
    for row in make_rows(300, DAY - 40 * 86400, 40 * 86400, seed=rng.randint(0, 99)):
        if row["cost_picousd"] is None:
            continue
        stored = {**row, "model_name": row["model"], "provider": "anthropic",
                  "pricing_note": None}
        got = reprice(CATALOG, stored, Assumption(as_model=CATALOG.resolve(row["model"])))
        assert got.cost == row["cost_picousd"]
        assert got.saved == int(independent_savings(row))
        ttl = "1h" if rng.random() < 0.5 else "5m"
        moved = reprice(CATALOG, stored, Assumption(cache_ttl=ttl))
        writes = row["cache_write_5m_tokens"] + row["cache_write_1h_tokens"]
        if not writes:
            assert moved.cost == row["cost_picousd"]


def test_bad_assumptions_are_named():
    with pytest.raises(ValueError, match="not in the price catalog"):
        check_assumption(CATALOG, "claude-opus-5-9", None)  # no near-miss match
    with pytest.raises(ValueError, match="5m or 1h"):
        check_assumption(CATALOG, None, "10m")


def _fill(rows: list[dict]) -> None:
    db = store.connect(config.paths().db_file)
    try:
        store.upsert_calls(db, rows)
    finally:
        db.conn.close()


def test_report_as_model_and_cache_ttl_end_to_end(user_dirs):
    import time

    now = time.time()
    rows = make_rows(120, now - 6 * 86400, 6 * 86400 - 60, seed=17)
    for row in rows:  # as the proxy notes them
        if row["cost_picousd"] is None:
            row["pricing_note"] = f"unknown model {row['model']!r}"
    _fill(rows)
    runner = CliRunner()
    before = runner.invoke(app, ["report", "--by", "model", "--since", "30d", "-f", "json"])
    doc = json.loads(before.output)
    assert "what_if" not in doc["meta"]

    result = runner.invoke(app, ["report", "--by", "project", "--since", "30d",
                                 "--as-model", "claude-sonnet-4-5", "-f", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["meta"]["what_if"] == {"as_model": "claude-sonnet-4-5-20250929",
                                      "cache_ttl": None}
    assert doc["title"] == "Spend by project, as claude-sonnet-4-5-20250929"
    assumption = Assumption(as_model="claude-sonnet-4-5-20250929")
    expected = [reprice(CATALOG, {**r, "model_name": r["model"], "provider": "anthropic"},
                        assumption) for r in rows]
    assert doc["totals"]["cost_picousd"] == sum(e.cost for e in expected)
    assert doc["totals"]["unpriced_calls"] == 0  # the unknown model's tokens are priced too
    assert doc["totals"]["cache_savings_picousd"] == sum(e.saved for e in expected)
    assert doc["totals"]["calls"] == len(rows)
    assert sum(r["cost_picousd"] for r in doc["rows"]) == doc["totals"]["cost_picousd"]

    result = runner.invoke(app, ["report", "--by", "day", "--since", "30d",
                                 "--cache-ttl", "5m", "-f", "csv"])
    assert result.exit_code == 0, result.output
    ttl = Assumption(cache_ttl="5m")
    lines = result.output.splitlines()
    header = lines[0].split(",")
    costs = [line.split(",")[header.index("cost_picousd")] for line in lines[1:]]
    assert sum(int(c) for c in costs if c) == sum(
        reprice(CATALOG, {**r, "model_name": r["model"], "provider": "anthropic"}, ttl).cost
        or 0 for r in rows)

    table = runner.invoke(app, ["report", "--since", "30d", "--as-model", "claude-haiku-5-5",
                                "--cache-ttl", "1h"])
    assert table.exit_code == 0, table.output
    assert "as claude-haiku-5-5, every cache write 1-hour" in table.output
    assert "stored costs unchanged" in table.output
    default = runner.invoke(app, ["report", "--cache-ttl", "5m"])
    assert default.exit_code == 0 and "every cache write 5-minute" in default.output

    # the stored costs never change
    after = json.loads(runner.invoke(app, ["report", "--by", "model", "--since", "30d",
                                           "-f", "json"]).output)
    assert after["totals"] == json.loads(before.output)["totals"]

    # a user's mistake: our one error type (the command line prints it as one line, see
    # test_cli_errors)
    bad = runner.invoke(app, ["report", "--since", "30d", "--as-model", "gpt-5"])
    assert isinstance(bad.exception, config.CCMeterError)
    assert "not in the price catalog" in str(bad.exception)
    bad = runner.invoke(app, ["report", "--cache-ttl", "2h"])
    assert isinstance(bad.exception, config.CCMeterError) and "5m or 1h" in str(bad.exception)


def test_every_call_is_read_once_across_pages_and_imported_calls_are_repriced(user_dirs):
    import time

    now = time.time()
    rows = make_rows(40, now - 86400, 3600, seed=23)
    for row in rows[:10]:
        row["started_ts"] = rows[0]["started_ts"]  # ties on the time: paged by the key
    _fill(rows)
    db = store.connect(config.paths().db_file)
    try:
        seen = [r["row_key"] for r in store.whatif_calls(db, "api_calls", "", {}, 3600, page=7)]
        assert sorted(seen) == sorted(r["call_uid"] for r in rows)
        imported = {name: None for name in store.TRANSCRIPT_COLUMNS}
        imported.update(call_key="t-1", started_at="x", started_ts=now - 60, provider="anthropic",
                        session_id="s-t", project="web", model="claude-opus-4-8",
                        message_id="msg-t", request_id="req-t", input_tokens=1000,
                        cache_write_5m_tokens=0, cache_write_1h_tokens=0, cache_read_tokens=0,
                        output_tokens=100, web_search_requests=0, web_fetch_requests=0,
                        cost_picousd=usd("0.0075"), updated_ts=now)
        store.save_transcript_batch(db, [imported], [])
    finally:
        db.conn.close()
    result = CliRunner().invoke(app, ["report", "--since", "1h", "--source", "transcript",
                                      "--as-model", "claude-sonnet-5", "-f", "json"])
    assert result.exit_code == 0, result.output
    totals = json.loads(result.output)["totals"]
    # Sonnet 5 ($2 / $10): 1000 x 2 + 100 x 10 per MTok
    assert (totals["calls"], totals["cost_picousd"]) == (1, usd("0.003"))
