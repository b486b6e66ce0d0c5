"""The fast report fold gives exactly the reports the code before it gave (tests/reports_before.py,
kept verbatim): every row and total, every money field to the picodollar, on varied calls
(plain, fast, US-geo, batch, long-context, unknown models; no project, no session, two
providers; imported transcript calls beside wire ones), in zones with odd offsets, with
since/until at odd moments, every grouping alone and several at once, and what-if repricing.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import pytest
import reports_before
from test_reports import CATALOG, usage_of

from ccmeter import config, reports, store
from ccmeter.store.transcripts import TRANSCRIPT_COLUMNS, save_transcript_batch
from ccmeter.whatif import check_assumption

START = datetime(2026, 2, 20, 5, 17, tzinfo=UTC).timestamp()  # sonnet-4-5's long-context era
SPAN = 40 * 86400
#: (model, speed, inference_geo, service_tier)
VARIANTS = [
    ("claude-opus-4-8", None, None, None),
    ("claude-opus-4-8", "fast", None, None),
    ("claude-sonnet-5", None, "us", None),
    ("claude-sonnet-5", None, None, "batch"),
    ("claude-haiku-4-5-20251001", None, None, None),
    ("claude-sonnet-4-5-20250929", None, None, None),
    ("claude-sonnet-4-5-20250929", None, "us", None),
    ("claude-unknown-7", None, None, None),
]
LATE = datetime(2026, 10, 8, 3, 44, tzinfo=UTC).timestamp()
LATE_VARIANTS = [("claude-haiku-5-5", None, None, None), ("claude-haiku-5-5", None, "us", None),
                 ("claude-opus-4-6", None, None, None)]
PROJECTS = ("api-server", "web", "infra", None)
GROUPINGS = [["project"], ["session"], ["model"], ["provider"], ["hour"], ["day"], ["week"],
             ["month"], ["project", "day"], ["model", "week"], ["session", "day"],
             ["day", "project"], ["provider", "model"], ["project", "session"],
             ["session", "provider"], ["month", "model"]]
#: what the dashboard's pages ask for at once (overview, project page)
PAGE_GROUPINGS = [[["day"], ["project", "day"], ["project"], ["model"], ["session"]],
                  [["week"], ["model", "week"], ["model"], ["session"]],
                  [["hour"], ["project", "hour"], ["project"], ["model"], ["session"]],
                  [["day"], ["week"], ["project"], ["session", "day"], ["month"]]]


def calls(count: int, seed: int, start: float = START,
          variants: list[tuple[str, str | None, str | None, str | None]] = VARIANTS
          ) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        model, speed, geo, tier = rng.choice(variants)
        ts = start + rng.random() * SPAN
        long_prompt = rng.random() < 0.15
        row = {
            "call_uid": f"call-{seed}-{i:05d}", "request_id": f"req-{seed}-{i:05d}",
            "started_at": datetime.fromtimestamp(ts, UTC).isoformat(), "started_ts": ts,
            "session_id": None if rng.random() < 0.1 else f"sess-{rng.randint(0, 11):02d}",
            "project": rng.choice(PROJECTS), "model": model, "speed": speed,
            "inference_geo": geo, "service_tier": tier, "status": "ok", "call_kind": "main",
            "provider": rng.choice(("anthropic", "anthropic", "bedrock")),
            "input_tokens": rng.randint(1, 5000),
            "cache_write_5m_tokens": rng.choice((0, rng.randint(1, 9000))),
            "cache_write_1h_tokens": rng.choice((0, 0, rng.randint(1, 4000))),
            "cache_read_tokens": rng.choice((rng.randint(100_001, 160_000),
                                             rng.randint(200_001, 260_000))) if long_prompt
            else rng.randint(0, 90_000),
            "output_tokens": rng.randint(1, 3000), "updated_ts": ts,
        }
        row["cost_picousd"] = CATALOG.price(model, usage_of(row), datetime.fromtimestamp(
            ts, UTC)).cost_picousd
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def zones():
    """Restores the machine's zone after the module's tests change TZ."""
    yield
    time.tzset()


@pytest.fixture
def db(home):
    db = store.connect(config.paths().db_file)
    # and later calls of a model whose long-context tier starts at 100,000 prompt tokens
    wire = calls(700, seed=3) + calls(160, seed=5, start=LATE, variants=LATE_VARIANTS)
    store.upsert_calls(db, wire)
    # imported transcript calls: a third are the wire's own calls (counted once, from the
    # wire), the rest only in transcripts
    imported = []
    for i, row in enumerate(calls(240, seed=4)):
        if i % 3 == 0:
            row = wire[i]
        imported.append({**dict.fromkeys(TRANSCRIPT_COLUMNS), **{
            k: v for k, v in row.items() if k in TRANSCRIPT_COLUMNS},
            "call_key": f"t-{i}", "call_kind": "main", "thinking_tokens": 0,
            "web_search_requests": 0, "web_fetch_requests": 0})
    save_transcript_batch(db, imported, [])
    return db


def same(new: reports.Report, old: reports.Report) -> None:
    assert new.dimensions == old.dimensions
    assert new.totals == old.totals
    assert len(new.rows) == len(old.rows)
    for got, want in zip(new.rows, old.rows, strict=True):
        assert got == want


def filter_cases(rng: random.Random) -> list[reports.Filters]:
    odd = START + 3.7 * 86400 + 1234.5
    return [
        reports.Filters(),
        reports.Filters(since=odd, until=odd + 17.3 * 86400 + 77.7),
        reports.Filters(since=START + 86400 * 9 + 1799.9, source="wire"),
        reports.Filters(until=START + 86400 * 21 + 901.25, source="transcript"),
        reports.Filters(project="web", model="opus"),
        reports.Filters(session="sess-03", since=odd),
        reports.Filters(model="sonnet-4-5", since=rng.uniform(START, START + SPAN)),
    ]


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu"])
def test_every_grouping_matches_the_code_before(db, monkeypatch, zones, zone):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    rng = random.Random(zone)
    for flt in filter_cases(rng):
        news = reports.build_reports(db, GROUPINGS, flt, CATALOG)
        for dims, new in zip(GROUPINGS, news, strict=True):
            old = reports_before.build_reports(db, [dims], flt, CATALOG)[0]
            same(new, old)
            same(reports.build_report(db, dims, flt, CATALOG), old)  # alone: its own slot
            assert new.rows or not old.rows
        for groupings in PAGE_GROUPINGS:
            for dims, new in zip(groupings, reports.build_reports(db, groupings, flt, CATALOG),
                                 strict=True):
                same(new, reports_before.build_reports(db, [dims], flt, CATALOG)[0])
    # the data reaches every case the fold has: long prompts, unpriced calls, transcripts
    totals = reports.build_report(db, ["model"], reports.Filters(), CATALOG).totals
    assert totals["unpriced_calls"] and totals["transcript_calls"] and totals["cache_savings"]


@pytest.mark.parametrize(("as_model", "ttl"), [("claude-haiku-4-5", None), (None, "1h"),
                                              ("claude-opus-4-8", "5m")])
def test_what_if_reports_match_the_code_before(db, monkeypatch, zones, as_model, ttl):
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    assumption = check_assumption(CATALOG, as_model, ttl)
    flt = reports.Filters(since=START + 2.5 * 86400 + 333.3)
    groupings = [["day"], ["project"], ["session"], ["model", "week"]]
    news = reports.build_reports(db, groupings, flt, CATALOG, assumption=assumption)
    for dims, new in zip(groupings, news, strict=True):
        old = reports_before.build_reports(db, [dims], flt, CATALOG, assumption=assumption)[0]
        same(new, old)
    plain = reports.build_report(db, ["project"], flt, CATALOG)
    assert plain.totals["cost"] != news[1].totals["cost"]  # the assumption did reprice


def test_one_read_serves_different_time_units(db, monkeypatch, zones):
    """Days and weeks (and hours) asked for at once each get their own labels: the code
    before shared one label cache between them, right only when they were the same unit."""
    monkeypatch.setenv("TZ", "America/St_Johns")
    time.tzset()
    groupings = [["day"], ["week"], ["hour"], ["project", "month"]]
    for dims, new in zip(groupings, reports.build_reports(db, groupings, reports.Filters(),
                                                          CATALOG), strict=True):
        same(new, reports_before.build_reports(db, [dims], reports.Filters(), CATALOG)[0])


def test_the_long_prompt_query_reads_the_partial_index(db):
    """Migration 11's index serves the long-prompt query only while the query's floor term is
    its WHERE text exactly; a drift would silently bring back the full scan."""
    from ccmeter.savings import long_context_thresholds

    thresholds = long_context_thresholds(CATALOG)
    for dims in (["project"], ["session"], ["provider"]):
        sql, params = reports.long_context_sql(dims, reports.Filters(since=START), thresholds,
                                               3600)
        plan = " ".join(str(step) for step in db.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "api_calls_long_prompts" in plan, plan


def test_a_half_hour_zone_reads_the_index_in_order(db, monkeypatch, zones):
    """India's days start at :30 UTC: a report by day reads each half of the hour apart on
    the index's hourly slot, streamed in index order (no sort of every call)."""
    from ccmeter import periods
    from ccmeter.store import reportsql

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    assert periods.hour_parts(periods.slot_seconds()) == [(0, 1800), (1800, 3600)]
    for part in periods.hour_parts(periods.slot_seconds()):
        sql, params = reportsql.report_sql(["day"], {"since": START}, reportsql.INDEX_SLOT,
                                           "api_calls", part)
        plan = " ".join(str(step) for step in db.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert "api_calls_rollup" in plan and "TEMP B-TREE" not in plan, plan


@pytest.mark.parametrize("dims", [["session"], ["provider"], ["project"], ["model", "day"],
                                  ["session", "provider"]])
def test_what_caching_saved_is_the_sum_of_each_calls_own(db, dims):
    """An oracle of its own, beside the code before: each call's saving computed alone (its
    own long-prompt row), summed per report row. Long prompts over one and over both
    thresholds meet in the same session and provider."""
    from ccmeter.savings import SavingsCalculator, long_context_thresholds

    thresholds = long_context_thresholds(CATALOG)
    savings = SavingsCalculator(CATALOG, thresholds)
    want: dict[tuple, object] = {}
    for row in db.execute("SELECT * FROM api_calls").fetchall():
        call = dict(zip([c[0] for c in db.execute("SELECT * FROM api_calls").description],
                        row, strict=True))
        prompt = (call["input_tokens"] + call["cache_write_5m_tokens"]
                  + call["cache_write_1h_tokens"] + call["cache_read_tokens"])
        bucket = sum(prompt > t for t in thresholds)
        long_rows = [{**call, "lc_bucket": bucket}] if bucket else []
        saved = savings.saved_tokens(
            call["model"], datetime.fromtimestamp(call["started_ts"], UTC).date(),
            call["speed"], call["service_tier"], call["inference_geo"],
            call["cache_read_tokens"], call["cache_write_5m_tokens"],
            call["cache_write_1h_tokens"], long_rows)
        key = tuple({"session": call["session_id"], "provider": call["provider"],
                     "project": call["project"], "model": call["model"],
                     "day": datetime.fromtimestamp(call["started_ts"]).strftime("%Y-%m-%d")
                     }[d] for d in dims)
        if saved is not None:
            want[key] = want.get(key, 0) + saved
    from ccmeter.savings import to_pico

    report = reports.build_report(db, dims, reports.Filters(source="wire"), CATALOG)
    got = {tuple(r[d] for d in dims): r["cache_savings"] for r in report.rows
           if r["calls"] and r["cache_savings"]}
    assert got == {key: to_pico(value) for key, value in want.items() if to_pico(value)}
